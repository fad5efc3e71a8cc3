//! One TLS connection over a kiln `TcpStream`: drives rustls's unbuffered
//! state machine (RFC 8446 and RFC 5246 records and handshakes live there)
//! with the stream's reads and writes.
//!
//! Buffers: received records accumulate in `incoming` (one record, 16 KiB
//! plus overhead, grown for a handshake message that spans records up to
//! [`MAX_INCOMING`]); records to send in `outgoing`; decrypted data in
//! `plain` until the application reads it. A write encrypts at most
//! [`MAX_WRITE`] bytes (one record) per call.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;

use kiln_devices::{StackError, TcpStream};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{ClientConfig, ServerConfig};

use crate::TlsError;

/// A TLS record: header, 16 KiB of plaintext, the largest expansion.
const RECORD: usize = 5 + (1 << 14) + 2048;
/// The receive buffer's bound: a handshake message (a certificate chain)
/// may span several records and must fit whole.
pub const MAX_INCOMING: usize = 4 * RECORD;
/// Plaintext encrypted per write: one full record.
pub const MAX_WRITE: usize = 1 << 14;

/// A client or server connection (sealed: rustls's two unbuffered ones).
pub trait Side: private::Sealed {}
impl Side for UnbufferedServerConnection {}
impl Side for UnbufferedClientConnection {}

mod private {
    use super::*;

    /// rustls implements `process_tls_records` once per side.
    pub trait Sealed {
        type Data;
        fn process<'c, 'i>(
            &'c mut self,
            incoming: &'i mut [u8],
        ) -> UnbufferedStatus<'c, 'i, Self::Data>;
        fn common(&self) -> &rustls::CommonState;
    }

    impl Sealed for UnbufferedServerConnection {
        type Data = ServerConnectionData;
        fn process<'c, 'i>(
            &'c mut self,
            incoming: &'i mut [u8],
        ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
            self.process_tls_records(incoming)
        }
        fn common(&self) -> &rustls::CommonState {
            self
        }
    }

    impl Sealed for UnbufferedClientConnection {
        type Data = ClientConnectionData;
        fn process<'c, 'i>(
            &'c mut self,
            incoming: &'i mut [u8],
        ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
            self.process_tls_records(incoming)
        }
        fn common(&self) -> &rustls::CommonState {
            self
        }
    }
}

/// What the caller of [`TlsStream::drive`] waits for.
#[derive(Clone, Copy)]
enum Goal<'a> {
    Handshake,
    Read,
    Write(&'a [u8]),
    Close,
}

/// What to do after one state of the connection.
enum Step {
    /// Ask rustls again.
    Again,
    /// Read more records from TCP.
    Receive,
    /// rustls handed over records to transmit: they go with the next
    /// write (before any read), then ask again.
    Send,
    /// Send what is in `outgoing`, then return this.
    Finish(usize),
    /// Send the alert rustls queued, then fail.
    Fail(rustls::Error),
}

/// A TLS connection over the TCP stream `S`, server or client side `C`.
pub struct TlsStream<S, C> {
    tcp: S,
    conn: C,
    incoming: Vec<u8>,
    in_used: usize,
    outgoing: Vec<u8>,
    out_used: usize,
    /// How much of `outgoing` has been sent.
    out_sent: usize,
    plain: Vec<u8>,
    plain_pos: usize,
    /// The peer sent close_notify.
    peer_closed: bool,
    /// We queued close_notify.
    closed: bool,
    /// The first failure: every later call returns it.
    failed: Option<TlsError>,
}

/// Accepts a TLS connection on `tcp` (completes the handshake).
pub async fn accept<S: TcpStream>(
    tcp: S,
    config: &Arc<ServerConfig>,
) -> Result<TlsStream<S, UnbufferedServerConnection>, TlsError> {
    let conn = UnbufferedServerConnection::new(config.clone())?;
    let mut stream = TlsStream::new(tcp, conn);
    stream.drive(Goal::Handshake).await?;
    Ok(stream)
}

/// Opens a TLS connection to `server_name` over `tcp` (completes the
/// handshake, which verifies the server's certificate).
pub async fn connect<S: TcpStream>(
    tcp: S,
    config: &Arc<ClientConfig>,
    server_name: &str,
) -> Result<TlsStream<S, UnbufferedClientConnection>, TlsError> {
    let name = crate::config::server_name(server_name)?;
    let conn = UnbufferedClientConnection::new(config.clone(), name)?;
    let mut stream = TlsStream::new(tcp, conn);
    stream.drive(Goal::Handshake).await?;
    Ok(stream)
}

/// Encodes with `f` into `buf[*used..]`, growing `buf` once if rustls says
/// it is too small.
fn encode_into<E>(
    buf: &mut Vec<u8>,
    used: &mut usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
    too_small: impl Fn(&E) -> Option<InsufficientSizeError>,
) -> Result<(), E> {
    let n = match f(&mut buf[*used..]) {
        Ok(n) => n,
        Err(e) => match too_small(&e) {
            Some(InsufficientSizeError { required_size }) => {
                buf.resize(*used + required_size, 0);
                f(&mut buf[*used..])?
            }
            None => return Err(e),
        },
    };
    *used += n;
    Ok(())
}

fn encode_too_small(e: &EncodeError) -> Option<InsufficientSizeError> {
    match e {
        EncodeError::InsufficientSize(s) => Some(*s),
        _ => None,
    }
}

fn encrypt_too_small(e: &EncryptError) -> Option<InsufficientSizeError> {
    match e {
        EncryptError::InsufficientSize(s) => Some(*s),
        _ => None,
    }
}

impl<S: TcpStream, C: Side> TlsStream<S, C> {
    fn new(tcp: S, conn: C) -> Self {
        TlsStream {
            tcp,
            conn,
            incoming: vec![0; RECORD],
            in_used: 0,
            outgoing: Vec::new(),
            out_used: 0,
            out_sent: 0,
            plain: Vec::new(),
            plain_pos: 0,
            peer_closed: false,
            closed: false,
            failed: None,
        }
    }

    /// The ALPN protocol agreed on, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.common().alpn_protocol()
    }

    /// The protocol version agreed on.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.common().protocol_version()
    }

    /// Whether the handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.conn.common().handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The TCP stream under the connection.
    pub fn tcp(&self) -> &S {
        &self.tcp
    }

    fn fail(&mut self, e: TlsError) -> TlsError {
        self.failed.get_or_insert(e).clone()
    }

    /// Runs the connection until `goal` is met.
    async fn drive(&mut self, goal: Goal<'_>) -> Result<usize, TlsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        loop {
            let (discard, step) = self.step(goal);
            if discard > 0 {
                self.incoming.copy_within(discard..self.in_used, 0);
                self.in_used -= discard;
            }
            match step {
                // Records wait in `outgoing` until the connection needs the
                // peer (Receive) or returns (Finish): a flight and the
                // tickets after it leave in one write, one TCP segment
                // rather than one per record (which Nagle's algorithm and
                // delayed ACKs would hold back).
                Step::Again | Step::Send => {}
                Step::Receive => match self.receive().await {
                    Ok(true) => {}
                    Ok(false) => {
                        // TCP end of stream without close_notify.
                        return Err(self.fail(TlsError::UnexpectedEof));
                    }
                    Err(e) => return Err(self.fail(e)),
                },
                Step::Finish(n) => {
                    self.send().await?;
                    return Ok(n);
                }
                Step::Fail(e) => {
                    let e = self.fail(TlsError::Protocol(e));
                    self.send_alert().await;
                    return Err(e);
                }
            }
        }
    }

    /// Hands the received records to rustls once and handles the state it
    /// reaches; returns how much of `incoming` to discard and what next.
    fn step(&mut self, goal: Goal<'_>) -> (usize, Step) {
        let status = self.conn.process(&mut self.incoming[..self.in_used]);
        let mut discard = status.discard;
        let step = match status.state {
            Err(e) => Step::Fail(e),
            Ok(ConnectionState::ReadTraffic(mut records)) => {
                let mut step = Step::Again;
                while let Some(record) = records.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            self.plain.extend_from_slice(record.payload);
                        }
                        Err(e) => {
                            step = Step::Fail(e);
                            break;
                        }
                    }
                }
                step
            }
            // max_early_data_size is 0: rustls refuses early data.
            Ok(ConnectionState::ReadEarlyData(_)) => {
                Step::Fail(rustls::Error::General("early data refused".into()))
            }
            Ok(ConnectionState::EncodeTlsData(mut data)) => {
                match encode_into(
                    &mut self.outgoing,
                    &mut self.out_used,
                    |out| data.encode(out),
                    encode_too_small,
                ) {
                    Ok(()) | Err(EncodeError::AlreadyEncoded) => Step::Again,
                    Err(_) => Step::Fail(rustls::Error::General("cannot encode a record".into())),
                }
            }
            Ok(ConnectionState::TransmitTlsData(data)) => {
                // Sent before the connection waits for the peer or returns.
                data.done();
                Step::Send
            }
            Ok(ConnectionState::BlockedHandshake) => Step::Receive,
            Ok(ConnectionState::PeerClosed) => {
                self.peer_closed = true;
                Step::Again
            }
            Ok(ConnectionState::Closed) => {
                self.peer_closed = true;
                self.closed = true;
                match goal {
                    Goal::Write(_) => Step::Fail(rustls::Error::General("closed".into())),
                    _ => Step::Finish(0),
                }
            }
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match goal {
                Goal::Handshake => Step::Finish(0),
                Goal::Read if self.plain_pos < self.plain.len() || self.peer_closed => {
                    Step::Finish(0)
                }
                Goal::Read => Step::Receive,
                Goal::Write(_) | Goal::Close if self.closed => {
                    Step::Fail(rustls::Error::General("closed".into()))
                }
                Goal::Write(data) => {
                    let n = data.len().min(MAX_WRITE);
                    match encode_into(
                        &mut self.outgoing,
                        &mut self.out_used,
                        |out| traffic.encrypt(&data[..n], out),
                        encrypt_too_small,
                    ) {
                        Ok(()) => Step::Finish(n),
                        Err(_) => Step::Fail(rustls::Error::EncryptError),
                    }
                }
                Goal::Close => {
                    self.closed = true;
                    match encode_into(
                        &mut self.outgoing,
                        &mut self.out_used,
                        |out| traffic.queue_close_notify(out),
                        encrypt_too_small,
                    ) {
                        Ok(()) => Step::Finish(0),
                        Err(_) => Step::Fail(rustls::Error::EncryptError),
                    }
                }
            },
            Ok(_) => Step::Fail(rustls::Error::General("unexpected TLS state".into())),
        };
        (discard, step)
    }

    /// Sends what is queued, then reads more records; `false` at the end
    /// of the TCP stream.
    async fn receive(&mut self) -> Result<bool, TlsError> {
        self.send().await?;
        if self.in_used == self.incoming.len() {
            if self.incoming.len() >= MAX_INCOMING {
                return Err(TlsError::TooLarge(MAX_INCOMING));
            }
            let len = (self.incoming.len() * 2).min(MAX_INCOMING);
            self.incoming.resize(len, 0);
        }
        let n = self.tcp.read(&mut self.incoming[self.in_used..]).await?;
        self.in_used += n;
        Ok(n > 0)
    }

    /// Sends the records in `outgoing`. Cancel-safe: a send cut short (a
    /// caller's timeout drops the future) goes on where it stopped.
    async fn send(&mut self) -> Result<(), TlsError> {
        while self.out_sent < self.out_used {
            match self
                .tcp
                .write(&self.outgoing[self.out_sent..self.out_used])
                .await
            {
                Ok(0) => return Err(self.fail(TlsError::Tcp(StackError::NotConnected))),
                Ok(n) => self.out_sent += n,
                Err(e) => return Err(self.fail(TlsError::Tcp(e))),
            }
        }
        self.out_used = 0;
        self.out_sent = 0;
        if self.outgoing.len() > 2 * RECORD {
            self.outgoing = Vec::new();
        }
        Ok(())
    }

    /// After a protocol failure: sends the alert rustls queued, if any,
    /// ignoring errors (the connection is lost either way).
    async fn send_alert(&mut self) {
        // Only while rustls has records queued: then it hands them out
        // before it looks at the received data again (which would fail
        // again, and queue a second fatal alert).
        for _ in 0..4 {
            if !self.conn.common().wants_write() {
                break;
            }
            // The same buffer as before: rustls keeps offsets into it for a
            // handshake message it is still joining (another one panics).
            let status = self.conn.process(&mut self.incoming[..self.in_used]);
            let Ok(ConnectionState::EncodeTlsData(mut data)) = status.state else {
                break;
            };
            if encode_into(
                &mut self.outgoing,
                &mut self.out_used,
                |out| data.encode(out),
                encode_too_small,
            )
            .is_err()
            {
                break;
            }
        }
        if self.out_used > self.out_sent {
            let _ = self
                .tcp
                .write_all(&self.outgoing[self.out_sent..self.out_used])
                .await;
        }
        self.out_used = 0;
        self.out_sent = 0;
    }

    /// Reads decrypted data into `buf`; `Ok(0)` once the peer sent
    /// close_notify. [`TlsError::UnexpectedEof`] if TCP ended without it.
    pub async fn read_tls(&mut self, buf: &mut [u8]) -> Result<usize, TlsError> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.plain_pos == self.plain.len() {
            self.plain.clear();
            self.plain_pos = 0;
            self.drive(Goal::Read).await?;
        }
        let available = &self.plain[self.plain_pos..];
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.plain_pos += n;
        Ok(n)
    }

    /// Encrypts and sends up to one record of `buf`; returns how much. A
    /// write whose future is dropped before it completes may have queued
    /// its record (it goes out with the next operation): after a cancelled
    /// write, close the connection rather than write the same data again.
    pub async fn write_tls(&mut self, buf: &[u8]) -> Result<usize, TlsError> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.drive(Goal::Write(buf)).await
    }

    /// Sends close_notify and shuts down the TCP write side.
    pub async fn close(&mut self) -> Result<(), TlsError> {
        if !self.closed {
            self.drive(Goal::Close).await?;
        }
        self.tcp.shutdown().await.map_err(TlsError::Tcp)
    }
}

/// The stream as a `TcpStream`, for code written against the trait (an
/// HTTP server). TLS failures become [`StackError::ConnectionReset`], a
/// TCP end without close_notify reads as the end of the stream (`Ok(0)`):
/// HTTP/1.1 frames its messages itself. [`TlsStream::read_tls`] and
/// friends keep the typed errors.
impl<S: TcpStream, C: Side> TcpStream for TlsStream<S, C> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, StackError> {
        match self.read_tls(buf).await {
            Ok(n) => Ok(n),
            Err(TlsError::UnexpectedEof) => Ok(0),
            Err(e) => Err(stack_error(e)),
        }
    }

    async fn write(&mut self, buf: &[u8]) -> Result<usize, StackError> {
        self.write_tls(buf).await.map_err(stack_error)
    }

    async fn shutdown(&mut self) -> Result<(), StackError> {
        self.close().await.map_err(stack_error)
    }

    fn peer_addr(&self) -> SocketAddr {
        self.tcp.peer_addr()
    }

    fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr()
    }
}

fn stack_error(e: TlsError) -> StackError {
    match e {
        TlsError::Tcp(e) => e,
        TlsError::Closed => StackError::NotConnected,
        _ => StackError::ConnectionReset,
    }
}
