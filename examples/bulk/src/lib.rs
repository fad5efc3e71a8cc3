//! A bulk-transfer unikernel: an iperf3 server, so that throughput is
//! measured by a client nobody here wrote (Debian's `iperf3 -c`), and a TCP
//! echo port for integrity checks. [`start`] is the entry function named
//! in `unikernel.toml`.
//!
//! The iperf3 control protocol (iperf 3.x, `src/iperf_api.c`,
//! `iperf_server_api.c`): the client opens a control connection and sends
//! a 37-byte cookie; each step is one state byte from the server
//! (`PARAM_EXCHANGE`, `CREATE_STREAMS`, `TEST_START`, `TEST_RUNNING`,
//! `EXCHANGE_RESULTS`, `DISPLAY_RESULTS`) or the client (`TEST_END`,
//! `IPERF_DONE`); parameters and results are JSON objects behind a 4-byte
//! big-endian length. Data streams are further connections to the same
//! port that start with the same cookie. This server speaks the TCP test,
//! forward (`iperf3 -c`, the client sends) and reverse (`-R`, the server
//! sends), with up to [`MAX_STREAMS`] parallel streams (`-P`), one test at
//! a time; it refuses UDP, SCTP and bidirectional tests by closing the
//! control connection (the client reports the control socket closed), and
//! reports no CPU use or retransmissions (`-1`: unknown).
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

mod iperf;

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use alloc::vec;
use kiln_devices::{Console, ListenOptions, Stack, StackError, TcpListener as _, TcpStream as _};

pub use iperf::{MAX_STREAMS, Params, Report};

/// Why the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    /// A port could not be listened on.
    #[error("cannot listen on TCP port {port}: {source}\nhint: choose another port with --{flag}")]
    Listen {
        /// The port.
        port: u16,
        /// The argument that sets it.
        flag: &'static str,
        /// Why.
        source: StackError,
    },
}

/// Listens on `port` on every address of `stack` (IPv6 and IPv4 where the
/// stack takes `[::]` for both, IPv4 alone otherwise), with `options`.
async fn listen<S: Stack>(
    stack: &S,
    port: u16,
    flag: &'static str,
    options: ListenOptions,
) -> Result<S::TcpListener, BulkError> {
    let error = |source| BulkError::Listen { port, flag, source };
    match stack
        .listen_tcp_with(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port), options)
        .await
    {
        Ok(l) => Ok(l),
        Err(StackError::AddressInUse) => Err(error(StackError::AddressInUse)),
        Err(_) => stack
            .listen_tcp_with(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port), options)
            .await
            .map_err(error),
    }
}

/// Serves iperf3 tests on `port` and echoes TCP connections on
/// `echo_port` until the unikernel is stopped. The iperf3 port asks the
/// stack for `recv_buffer` bytes of receive buffer (the window) per
/// connection: a bulk receiver's window, which the stack's default
/// (sized for servers of small requests) would hold to one segment per
/// round trip on hvt (docs/bulk.md); and for `send_buffer` bytes of send
/// buffer, the most a connection of `iperf3 -R` has in flight per round
/// trip.
pub async fn start(
    stack: impl Stack,
    console: impl Console,
    port: u16,
    echo_port: u16,
    recv_buffer: u32,
    send_buffer: u32,
) -> Result<(), BulkError> {
    let buffers = ListenOptions::default()
        .recv_buffer(recv_buffer as usize)
        .send_buffer(send_buffer as usize);
    let iperf = listen(&stack, port, "port", buffers).await?;
    let echo = listen(&stack, echo_port, "echo-port", ListenOptions::default()).await?;
    let _ = console.logf(format_args!(
        "bulk: iperf3 server on port {}, echo on port {}",
        iperf.local_addr().port(),
        echo.local_addr().port()
    ));
    match kiln_rt::select(iperf::serve(&iperf, &console), serve_echo(&echo, &console)).await {
        kiln_rt::Either::Left(never) | kiln_rt::Either::Right(never) => match never {},
    }
}

/// Bytes the echo server reads at a time.
const ECHO_CHUNK: usize = 64 * 1024;

/// Echoes each connection on `listener`, one at a time: every byte read
/// is written back; the peer's FIN is answered with ours.
async fn serve_echo<L: kiln_devices::TcpListener>(
    listener: &L,
    console: &impl Console,
) -> core::convert::Infallible {
    let mut buf = vec![0u8; ECHO_CHUNK];
    loop {
        let (mut conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                let _ = console.logf(format_args!("bulk: echo accept failed: {e}"));
                kiln_rt::yield_now().await;
                continue;
            }
        };
        let mut total: u64 = 0;
        let result = loop {
            match conn.read(&mut buf).await {
                Ok(0) => break conn.shutdown().await,
                Ok(n) => {
                    if let Err(e) = conn.write_all(&buf[..n]).await {
                        break Err(e);
                    }
                    total += n as u64;
                }
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => {
                let _ = console.logf(format_args!("bulk: echoed {total} bytes to {peer}"));
            }
            Err(e) => {
                let _ = console.logf(format_args!(
                    "bulk: echo to {peer} failed after {total} bytes: {e}"
                ));
            }
        }
    }
}
