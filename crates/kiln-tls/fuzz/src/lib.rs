//! The fuzz targets' bodies: a TCP stream that delivers the fuzzer's bytes
//! as the peer's records (in reads of a size the first byte picks) and
//! swallows what the connection sends, a server and a client configuration
//! (the P-256 identity in `identity/`), and a way to run the connection's
//! futures to completion. kiln-tls's `tests/fuzz_seeds.rs` includes this
//! file to replay the seeds in every test run.
//!
//! Run with `cargo +nightly fuzz run server fuzz/corpus/server
//! fuzz/seeds/server` from `crates/kiln-tls` (likewise `client`).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use kiln_devices::{Instant, Random, RandomError, StackError, TcpStream, Timestamp, WallClock};
use kiln_tls::config::certificates_from_pem;
use kiln_tls::{ClientConfig, ClientSettings, Identity, ServerConfig, ServerSettings, TlsError};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// The certificate (for `fuzz.test`, valid until 2126) and key of the
/// server, and the client's only root.
const CERT: &[u8] = include_bytes!("../identity/cert.pem");
const KEY: &[u8] = include_bytes!("../identity/key.pem");
/// The name the client asks for.
pub const NAME: &str = "fuzz.test";

/// The peer: reads return the fuzzer's bytes, `chunk` at a time, then the
/// end of the stream; writes are accepted and dropped.
pub struct Peer<'a> {
    data: &'a [u8],
    chunk: usize,
    /// Bytes the connection wrote (shared with the caller).
    written: Rc<Cell<usize>>,
}

impl<'a> Peer<'a> {
    /// The first byte picks the read size (0: everything at once, else
    /// that many bytes per read); the rest is what the peer sends.
    pub fn new(input: &'a [u8]) -> Peer<'a> {
        let (first, data) = input.split_first().unwrap_or((&0, &[]));
        let chunk = match *first {
            0 => usize::MAX,
            n => usize::from(n),
        };
        Peer {
            data,
            chunk,
            written: Rc::new(Cell::new(0)),
        }
    }
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
        self.written.set(self.written.get() + buf.len());
        Ok(buf.len())
    }
    async fn shutdown(&mut self) -> Result<(), StackError> {
        Ok(())
    }
    fn peer_addr(&self) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], 40000))
    }
    fn local_addr(&self) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 2], 443))
    }
}

/// The state of [`Xorshift`], reset at the start of every run.
const SEED: u64 = 0x6b69_6c6e_2d74_6c73;

thread_local!(static STATE: Cell<u64> = const { Cell::new(SEED) });

/// A deterministic random source (xorshift64, from [`SEED`] at the start
/// of every run): a crash reproduces from its input alone.
#[derive(Clone, Copy)]
struct Xorshift;

impl Random for Xorshift {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        STATE.with(|s| {
            for b in buf {
                let mut x = s.get();
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.set(x);
                *b = x as u8;
            }
        });
        Ok(())
    }
}

/// 2026-12-01, inside the certificate's validity.
#[derive(Clone, Copy)]
struct Clock;

impl WallClock for Clock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_nanos(1_796_083_200 * 1_000_000_000)
    }
}

/// The server's configuration: TLS 1.3 and 1.2, ALPN `http/1.1`,
/// resumption, as examples/wwws.
pub fn server_config() -> &'static Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let identity = Identity {
            chain: certificates_from_pem("cert.pem", CERT).expect("the fuzz identity"),
            key: PrivateKeyDer::from_pem_slice(KEY).expect("the fuzz key"),
        };
        let settings = ServerSettings {
            alpn: vec![b"http/1.1".to_vec()],
            ..ServerSettings::default()
        };
        kiln_tls::server_config(Xorshift, Clock, identity, &settings).expect("a server config")
    })
}

/// The client's configuration: the identity's certificate as its root,
/// TLS 1.3 and 1.2, ALPN `http/1.1`.
pub fn client_config() -> &'static Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates_from_pem("cert.pem", CERT).expect("the fuzz identity") {
            roots.add(cert).expect("a root");
        }
        let settings = ClientSettings {
            alpn: vec![b"http/1.1".to_vec()],
            tls12_only: false,
        };
        kiln_tls::client_config(Xorshift, Clock, roots, &settings).expect("a client config")
    })
}

struct Idle;

impl kiln_rt::Platform for Idle {
    fn now(&self) -> Instant {
        Instant::ZERO
    }
    fn wait(&self, deadline: Option<Instant>) {
        // The peer never blocks: only the executor's periodic zero-deadline
        // poll is expected; a real wait would mean a future that can never
        // complete.
        assert_eq!(
            deadline,
            Some(Instant::ZERO),
            "a TLS future blocked forever"
        );
    }
}

/// Runs `f` to completion.
pub fn run<F: Future>(f: F) -> F::Output {
    kiln_rt::block_on(&Idle, f)
}

/// How one run ended: bytes the connection wrote, and its error if the
/// handshake failed.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes written to the peer (records, alerts).
    pub written: usize,
    /// The handshake's typed error, if it failed.
    pub error: Option<TlsError>,
}

/// What an established connection does with the rest of the input: reads
/// until an error or the end, echoes, closes. Every outcome is a value.
async fn exchange<S: TcpStream>(mut tls: S) {
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match tls.read(&mut buf).await {
            Ok(n @ 1..) => {
                let _ = tls.write(&buf[..n]).await;
            }
            _ => break,
        }
    }
    let _ = tls.shutdown().await;
}

/// Arbitrary bytes as a client's records to a server.
pub fn server(input: &[u8]) -> Outcome {
    STATE.with(|s| s.set(SEED));
    run(async {
        let peer = Peer::new(input);
        let written = peer.written.clone();
        let error = match kiln_tls::accept(peer, server_config()).await {
            Ok(tls) => {
                exchange(tls).await;
                None
            }
            Err(e) => Some(typed(e)),
        };
        Outcome {
            written: written.get(),
            error,
        }
    })
}

/// Arbitrary bytes as a server's records to a client (for `fuzz.test`).
pub fn client(input: &[u8]) -> Outcome {
    STATE.with(|s| s.set(SEED));
    run(async {
        let peer = Peer::new(input);
        let written = peer.written.clone();
        let error = match kiln_tls::connect(peer, client_config(), NAME).await {
            Ok(tls) => {
                exchange(tls).await;
                None
            }
            Err(e) => Some(typed(e)),
        };
        Outcome {
            written: written.get(),
            error,
        }
    })
}

/// A failure is one of kiln-tls's typed errors, and says what it is.
fn typed(e: TlsError) -> TlsError {
    assert!(!e.to_string().is_empty(), "{e:?} has no message");
    e
}
