//! A static website over HTTPS with www's HTTP code: TLS 1.3 and 1.2 (`kiln-tls`) on
//! `--tls-port`, with the certificate chain and key read from a key-value
//! store, ALPN `http/1.1`, session resumption; optionally a plain-HTTP port
//! that answers every request with a permanent redirect to HTTPS.
//!
//! A separate unikernel from `www` because its device graph differs (a
//! random device, a wall clock and a certificate store beside the site),
//! and a plain-HTTP `www` should not carry a TLS stack. The HTTP code is
//! `www`'s own [`www::serve`], run over a [`kiln_tls::TlsStream`] (itself a
//! `TcpStream`). Modules: [`redirect`] (the plain-HTTP port), [`hsts`]
//! (the `Strict-Transport-Security` header, with `--hsts=SECONDS`).
//!
//! It logs through the `log` facade (target `wwws`), filtered by `--log`:
//! its ports at `info`, failed handshakes (at a bounded rate) and failed
//! connections at `warn`, a failing `accept` at `error`. www's own code
//! logs each response at `debug` (`www::access`).
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

pub mod hsts;
pub mod redirect;

use alloc::rc::Rc;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use core::cell::Cell;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use kiln_devices::{KvRo, Random, Stack, StackError, TcpListener as _, WallClock};
use kiln_tls::{Identity, ServerConfig, ServerSettings, TlsError};
use www::Limits;

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; a connection beyond it is closed at
/// once, counted and logged.
pub const MAX_HANDSHAKES: usize = 256;
/// Failed handshakes logged per second; the others are counted and the
/// count is logged with the next line.
pub const FAILURES_LOGGED_PER_SECOND: u32 = 5;

/// Logs failed handshakes at a bounded rate (`warn`): a server under a
/// flood of garbage keeps its console readable.
#[derive(Default)]
struct FailureLog {
    second: Cell<u64>,
    in_second: Cell<u32>,
    suppressed: Cell<u64>,
}

impl FailureLog {
    fn log(&self, what: core::fmt::Arguments<'_>) {
        let second = kiln_rt::time::now().as_nanos() / 1_000_000_000;
        if second != self.second.get() {
            self.second.set(second);
            self.in_second.set(0);
        }
        if self.in_second.get() >= FAILURES_LOGGED_PER_SECOND {
            self.suppressed.set(self.suppressed.get() + 1);
            return;
        }
        self.in_second.set(self.in_second.get() + 1);
        match self.suppressed.replace(0) {
            0 => log::warn!("{what}"),
            n => log::warn!("{what} ({n} more not shown)"),
        }
    }
}

/// Why the server stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WwwsError {
    /// A port could not be listened on.
    #[error(
        "cannot listen on TCP port {port}: {source}\nhint: choose another port with --tls-port or --port"
    )]
    Listen {
        /// The port.
        port: u16,
        /// Why.
        source: StackError,
    },
    /// The certificate chain or key could not be loaded or used.
    #[error(
        "TLS identity: {0}\nhint: put the PEM chain and key in the tls store and name them with --cert and --key"
    )]
    Identity(TlsError),
}

/// Listens on `port` on every address of `stack` (IPv6 and IPv4 where the
/// stack has both).
pub async fn listen<S: Stack>(stack: &S, port: u16) -> Result<S::TcpListener, WwwsError> {
    let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    let any4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
    match stack.listen_tcp(any6).await {
        Ok(l) => Ok(l),
        Err(StackError::AddressInUse) => Err(WwwsError::Listen {
            port,
            source: StackError::AddressInUse,
        }),
        Err(_) => stack
            .listen_tcp(any4)
            .await
            .map_err(|source| WwwsError::Listen { port, source }),
    }
}

/// The server's TLS configuration: the identity from `tls`, ALPN
/// `http/1.1`.
pub async fn tls_config<T, R, W>(
    tls: &T,
    random: R,
    wall_clock: W,
    cert: &str,
    key: &str,
) -> Result<Arc<ServerConfig>, WwwsError>
where
    T: KvRo,
    R: Random + Send + Sync + 'static,
    W: WallClock + Send + Sync + 'static,
{
    let identity = Identity::load(tls, cert, key)
        .await
        .map_err(WwwsError::Identity)?;
    let settings = ServerSettings {
        alpn: vec![b"http/1.1".to_vec()],
        ..ServerSettings::default()
    };
    kiln_tls::server_config(random, wall_clock, identity, &settings).map_err(WwwsError::Identity)
}

/// Serves `htdocs` over HTTPS on `tls_port`, and redirects plain HTTP on
/// `port` (unless 0) to it, until the unikernel is stopped.
#[allow(clippy::too_many_arguments)]
pub async fn start<S, K, T, R, W>(
    stack: S,
    htdocs: K,
    tls: T,
    random: R,
    wall_clock: W,
    tls_port: u16,
    port: u16,
    cert: String,
    key: String,
    hsts: u32,
) -> Result<(), WwwsError>
where
    S: Stack,
    S::TcpStream: 'static,
    S::TcpListener: 'static,
    K: KvRo + 'static,
    T: KvRo,
    R: Random + Send + Sync + 'static,
    W: WallClock + Send + Sync + 'static,
{
    let config = tls_config(&tls, random, wall_clock, &cert, &key).await?;
    let listener = listen(&stack, tls_port).await?;
    if port != 0 {
        let plain = listen(&stack, port).await?;
        log::info!(
            "redirecting HTTP on port {} to HTTPS",
            plain.local_addr().port()
        );
        kiln_rt::spawn(redirect::run(plain, tls_port));
    }
    log::info!("serving HTTPS on port {}", listener.local_addr().port());
    let htdocs = Rc::new(htdocs);
    let limits = Limits::default();
    let failures = Rc::new(FailureLog::default());
    let handshaking = Rc::new(Cell::new(0usize));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if handshaking.get() >= MAX_HANDSHAKES {
                    failures.log(format_args!(
                        "{MAX_HANDSHAKES} handshakes in progress: closed {peer}"
                    ));
                    drop(stream);
                    continue;
                }
                handshaking.set(handshaking.get() + 1);
                let htdocs = htdocs.clone();
                let config = config.clone();
                let failures = failures.clone();
                let handshaking = handshaking.clone();
                kiln_rt::spawn(async move {
                    let handshake =
                        kiln_rt::timeout(HANDSHAKE_TIMEOUT, kiln_tls::accept(stream, &config))
                            .await;
                    handshaking.set(handshaking.get() - 1);
                    let mut tls = match handshake {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            failures.log(format_args!("handshake with {peer}: {e}"));
                            return;
                        }
                        Err(_) => {
                            failures.log(format_args!("handshake with {peer}: timed out"));
                            return;
                        }
                    };
                    let served = if hsts > 0 {
                        let mut with_header = hsts::Hsts::new(tls, hsts);
                        let served = www::serve(&mut with_header, &*htdocs, &limits).await;
                        tls = with_header.into_inner();
                        served
                    } else {
                        www::serve(&mut tls, &*htdocs, &limits).await
                    };
                    match served {
                        Ok(_) => {
                            let _ = tls.close().await;
                        }
                        Err(StackError::ConnectionReset | StackError::TimedOut) => {}
                        Err(e) => {
                            log::warn!("connection failed: {e}");
                        }
                    }
                });
            }
            Err(e) => {
                log::error!("accept failed: {e}");
                kiln_rt::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
