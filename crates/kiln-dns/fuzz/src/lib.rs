//! The fuzz target's body: a stack whose UDP socket receives the fuzzer's
//! datagram from the server once and whose TCP connections read the
//! fuzzer's stream, a random device that always gives transaction ID 0,
//! and a virtual clock, so timeouts take no time. kiln-dns's
//! `tests/fuzz_seeds.rs` includes this file to replay the seeds in every
//! test run.
//!
//! Input: one byte picking the TCP read size (0: everything at once, else
//! that many bytes per read), the datagram's length (two bytes, big
//! endian), the datagram, then the TCP stream (length prefix and reply).
//!
//! Run with `cargo +nightly fuzz run reply fuzz/corpus/reply
//! fuzz/seeds/reply` from `crates/kiln-dns`.

use std::future::{Future, pending};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_devices::{
    Instant, Random, RandomError, Stack, StackError, TcpListener, TcpStream, UdpSocket,
};
use kiln_dns::{DnsError, Kind, Resolver, Settings};

/// The name looked up.
pub const NAME: &str = "fuzz.test";
/// The server asked.
pub const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)), 53);

/// The fuzzer's replies.
#[derive(Clone, Copy)]
pub struct Replies<'a> {
    datagram: &'a [u8],
    stream: &'a [u8],
    chunk: usize,
}

impl<'a> Replies<'a> {
    /// Splits an input as the module's documentation says.
    pub fn new(input: &'a [u8]) -> Self {
        let (first, rest) = input.split_first().unwrap_or((&0, &[]));
        let chunk = match *first {
            0 => usize::MAX,
            n => usize::from(n),
        };
        let (len, rest) = rest.split_at(rest.len().min(2));
        let len = match len {
            [hi, lo] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => 0,
        };
        let (datagram, stream) = rest.split_at(rest.len().min(len));
        Replies {
            datagram,
            stream,
            chunk,
        }
    }
}

impl<'a> Stack for Replies<'a> {
    type TcpListener = Never<'a>;
    type TcpStream = Peer<'a>;
    type UdpSocket = Socket<'a>;

    async fn listen_tcp(&self, _: SocketAddr) -> Result<Never<'a>, StackError> {
        Err(StackError::InvalidInput)
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> Result<Peer<'a>, StackError> {
        if addr != SERVER {
            return Err(StackError::Unreachable);
        }
        Ok(Peer {
            data: self.stream,
            chunk: self.chunk,
        })
    }

    async fn bind_udp(&self, addr: SocketAddr) -> Result<Socket<'a>, StackError> {
        Ok(Socket {
            local: addr,
            datagram: std::cell::Cell::new(Some(self.datagram)),
        })
    }
}

/// A listener never made.
pub struct Never<'a>(std::marker::PhantomData<Peer<'a>>);

impl<'a> TcpListener for Never<'a> {
    type Stream = Peer<'a>;

    async fn accept(&self) -> Result<(Peer<'a>, SocketAddr), StackError> {
        pending().await
    }

    fn local_addr(&self) -> SocketAddr {
        SERVER
    }
}

/// The server's side of a TCP connection: the fuzzer's stream, `chunk`
/// bytes a read, then the end; writes are accepted and dropped.
pub struct Peer<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl TcpStream for Peer<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, StackError> {
        let n = self.data.len().min(buf.len()).min(self.chunk);
        let (now, rest) = self.data.split_at(n);
        buf[..n].copy_from_slice(now);
        self.data = rest;
        Ok(n)
    }

    async fn write(&mut self, buf: &[u8]) -> Result<usize, StackError> {
        Ok(buf.len())
    }

    async fn shutdown(&mut self) -> Result<(), StackError> {
        Ok(())
    }

    fn peer_addr(&self) -> SocketAddr {
        SERVER
    }

    fn local_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000)
    }
}

/// A UDP socket that receives the fuzzer's datagram once, from the server.
pub struct Socket<'a> {
    local: SocketAddr,
    datagram: std::cell::Cell<Option<&'a [u8]>>,
}

impl UdpSocket for Socket<'_> {
    async fn send_to(&self, _: &[u8], _: SocketAddr) -> Result<(), StackError> {
        Ok(())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), StackError> {
        match self.datagram.take() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok((n, SERVER))
            }
            None => pending().await,
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Random bytes that are all zero: transaction ID 0, which the seeds use.
pub struct Zero;

impl Random for Zero {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        buf.fill(0);
        Ok(())
    }
}

/// A clock that jumps to the next timer.
struct Virtual;

static NOW: AtomicU64 = AtomicU64::new(0);

impl kiln_rt::Platform for Virtual {
    fn now(&self) -> Instant {
        Instant::from_nanos(NOW.load(Ordering::Relaxed))
    }

    fn wait(&self, deadline: Option<Instant>) {
        let d = deadline.expect("deadlock: every task waits and no timer is pending");
        NOW.fetch_max(d.as_nanos(), Ordering::Relaxed);
    }
}

fn run<F: Future>(future: F) -> F::Output {
    kiln_rt::block_on(&Virtual, future)
}

/// Looks `NAME` up twice (one try, so the second lookup answers from the
/// cache or asks the same replies again): both give the same answer.
pub fn reply(input: &[u8]) -> Result<Vec<IpAddr>, DnsError> {
    let replies = Replies::new(input);
    let settings = Settings {
        attempts: 1,
        ..Settings::default()
    };
    let resolver = Resolver::new(&replies, Zero, vec![SERVER], settings);
    let (first, second) = run(async {
        let first = resolver.lookup(NAME, Kind::A).await;
        (first, resolver.lookup(NAME, Kind::A).await)
    });
    assert_eq!(first, second, "the cache changed the answer");
    first
}
