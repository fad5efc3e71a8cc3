//! A static website over HTTPS with www's HTTP code: TLS 1.3 and 1.2 (`kiln-tls`) on
//! `--tls-port`, with the certificate chain and key read from a key-value
//! store (and more identities under `--sni-dir`, chosen by the ClientHello's
//! server name), ALPN `http/1.1`, session resumption by stateless tickets
//! and session IDs, optionally client certificates (`--client-ca`);
//! optionally a plain-HTTP port that answers every request with a
//! permanent redirect to HTTPS.
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
use alloc::vec::Vec;
use core::cell::Cell;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use kiln_devices::{KvRo, Random, Stack, StackError, TcpListener as _, WallClock};
use kiln_tls::{Identity, ServerConfig, ServerSettings, TlsError, UnknownName};
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
        "TLS identity: {0}\nhint: put the PEM chain and key in the tls store and name them with --cert and --key (more: --sni-dir=DIR with DIR/NAME/cert.pem and DIR/NAME/key.pem)"
    )]
    Identity(TlsError),
    /// The client CA certificates could not be loaded or used.
    #[error(
        "client CA: {0}\nhint: put the PEM CA certificates in the tls store and name them with --client-ca"
    )]
    ClientCa(TlsError),
}

/// How the server authenticates itself and its clients, from the command
/// line: keys of the tls store.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The default certificate chain (`--cert`).
    pub cert: String,
    /// Its key (`--key`).
    pub key: String,
    /// The dictionary of identities chosen by name (`--sni-dir`); a
    /// dictionary the store lacks means none.
    pub sni_dir: String,
    /// Refuse unknown server names (`--sni-strict`).
    pub sni_strict: bool,
    /// CA certificates for client certificates (`--client-ca`); empty for
    /// none.
    pub client_ca: String,
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

/// The server's TLS configuration: the identities and client CAs from
/// `tls` as `options` names them, ALPN `http/1.1`.
pub async fn tls_config<T, R, W>(
    tls: &T,
    random: R,
    wall_clock: W,
    options: &TlsOptions,
) -> Result<Arc<ServerConfig>, WwwsError>
where
    T: KvRo,
    R: Random + Send + Sync + 'static,
    W: WallClock + Send + Sync + 'static,
{
    let identity = Identity::load(tls, &options.cert, &options.key)
        .await
        .map_err(WwwsError::Identity)?;
    let mut others = Vec::new();
    if !options.sni_dir.is_empty() {
        for (name, other) in Identity::load_dir(tls, &options.sni_dir)
            .await
            .map_err(WwwsError::Identity)?
        {
            let names = kiln_tls::sni::names_of(&other).map_err(WwwsError::Identity)?;
            if names.is_empty() {
                log::warn!(
                    "identity {}/{name}: its certificate names no DNS name, so no client gets it",
                    options.sni_dir
                );
            } else {
                log::info!(
                    "identity {}/{name} for {}",
                    options.sni_dir,
                    names.join(", ")
                );
            }
            others.push(other);
        }
    }
    let client_roots = if options.client_ca.is_empty() {
        None
    } else {
        Some(
            kiln_tls::config::roots_from_store(tls, &options.client_ca)
                .await
                .map_err(WwwsError::ClientCa)?,
        )
    };
    let settings = ServerSettings {
        alpn: vec![b"http/1.1".to_vec()],
        unknown_name: if options.sni_strict {
            UnknownName::Refuse
        } else {
            UnknownName::Default
        },
        client_roots,
        ..ServerSettings::default()
    };
    kiln_tls::server_config_by_name(random, wall_clock, identity, others, &settings).map_err(|e| {
        match e {
            TlsError::ClientRoots(_) => WwwsError::ClientCa(e),
            e => WwwsError::Identity(e),
        }
    })
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
    sni_dir: String,
    sni_strict: bool,
    client_ca: String,
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
    let options = TlsOptions {
        cert,
        key,
        sni_dir,
        sni_strict,
        client_ca,
    };
    let config = tls_config(&tls, random, wall_clock, &options).await?;
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
