//! A static website unikernel: serves the files of a read-only store over
//! HTTP/1.1 on a TCP port, one task per connection.
//!
//! Modules: [`http`] (one connection: parsing, responses, keep-alive and
//! timeouts; testable over any in-memory `TcpStream`), [`clients`] (the
//! connection limit), [`metrics`] (what `/metrics` shows of www), [`mime`]
//! (content types). [`serve_until`] is the entry function named in
//! `unikernel.toml`.
//!
//! www logs through the `log` facade (target `www`; each response at
//! `debug` with target `www::access`), which the runtime writes to the
//! console, filtered by `--log`.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod clients;
pub mod http;
pub mod metrics;
pub mod mime;

use alloc::rc::Rc;
use alloc::string::String;
use core::cell::Cell;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use kiln_devices::{KvRo, NoShutdown, Shutdown, Stack, StackError, TcpListener as _};
use kiln_rt::{Either, select};

pub use clients::{ClientCounters, Clients, Ticket};
pub use http::{Limits, Observe, Summary, serve, serve_client, serve_observed};
pub use metrics::Metrics;

/// Why the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WwwError {
    /// The port could not be listened on.
    #[error("cannot listen on TCP port {port}: {source}\nhint: choose another port with --port")]
    Listen {
        /// The port.
        port: u16,
        /// Why.
        source: StackError,
    },
}

/// How a server runs: the runtime arguments of `unikernel.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The TCP port (`--port`).
    pub port: u16,
    /// Most connections at a time (`--max-clients`; see [`Clients`]).
    pub max_clients: u32,
    /// Where the metrics page is served (`--metrics-path`); `None`: no
    /// metrics page, and responses are not counted.
    pub metrics_path: Option<String>,
}

impl Options {
    /// `port` and `max_clients`, no metrics.
    pub fn new(port: u16, max_clients: u32) -> Options {
        Options {
            port,
            max_clients,
            metrics_path: None,
        }
    }
}

/// Serves `htdocs` on TCP `port` (every address of `stack`) until the
/// unikernel is stopped, at most `max_clients` connections at a time (see
/// [`Clients`]). `index.html` answers for directories.
pub async fn start<S, K>(stack: S, htdocs: K, port: u16, max_clients: u32) -> Result<(), WwwError>
where
    S: Stack,
    S::TcpStream: 'static,
    K: KvRo + 'static,
{
    run(stack, htdocs, NoShutdown, Options::new(port, max_clients)).await
}

/// How long a shutdown waits for the requests in flight: less than the 10 s
/// `kiln stop` waits by default before SIGKILL.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The entry function named in `unikernel.toml`: [`run`] with the runtime
/// arguments; an empty `metrics_path` (the default) serves no metrics.
pub async fn serve_until<S, K, D>(
    stack: S,
    htdocs: K,
    shutdown: D,
    port: u16,
    max_clients: u32,
    metrics_path: String,
) -> Result<(), WwwError>
where
    S: Stack,
    S::TcpStream: 'static,
    K: KvRo + 'static,
    D: Shutdown,
{
    let options = Options {
        port,
        max_clients,
        metrics_path: (!metrics_path.is_empty()).then_some(metrics_path),
    };
    run(stack, htdocs, shutdown, options).await
}

/// Serves `htdocs` until the host asks the unikernel to stop (`kiln
/// stop`); then stops accepting, lets the connections in flight finish (at
/// most [`DRAIN_TIMEOUT`]) and returns, so that the unikernel exits 0.
pub async fn run<S, K, D>(
    stack: S,
    htdocs: K,
    shutdown: D,
    options: Options,
) -> Result<(), WwwError>
where
    S: Stack,
    S::TcpStream: 'static,
    K: KvRo + 'static,
    D: Shutdown,
{
    let Options {
        port,
        max_clients,
        metrics_path,
    } = options;
    // Every address; a stack without IPv6 may refuse `[::]`.
    let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    let any4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
    let listener = match stack.listen_tcp(any6).await {
        Ok(l) => l,
        Err(StackError::AddressInUse) => {
            return Err(WwwError::Listen {
                port,
                source: StackError::AddressInUse,
            });
        }
        Err(_) => stack
            .listen_tcp(any4)
            .await
            .map_err(|source| WwwError::Listen { port, source })?,
    };
    log::info!("serving on port {}", listener.local_addr().port());
    let htdocs = Rc::new(htdocs);
    let limits = Limits::default();
    let in_flight = Rc::new(InFlight::default());
    let clients = Clients::new(usize::try_from(max_clients).unwrap_or(usize::MAX));
    let (observe, _registration) = match metrics_path {
        Some(path) => {
            log::info!("metrics at {path}");
            let metrics = Rc::new(Metrics::new());
            let registration = Metrics::register(&metrics, &clients);
            let observe = Observe {
                metrics_path: Some(path.into()),
                metrics: Some(metrics),
            };
            (Rc::new(observe), registration)
        }
        None => (Rc::new(Observe::default()), Default::default()),
    };
    let mut refused_logged = 0;
    loop {
        let accepted = match select(listener.accept(), shutdown.requested()).await {
            Either::Left(accepted) => accepted,
            Either::Right(()) => break,
        };
        match accepted {
            Ok((mut stream, _peer)) => {
                let Some(ticket) = clients.admit() else {
                    // Every connection is answering a request: refuse
                    // (dropping the stream closes it). Logged once per
                    // power of two, so a flood does not flood the console.
                    let refused = clients.counters().refused;
                    if refused >= refused_logged * 2 || refused == 1 {
                        refused_logged = refused;
                        log::warn!(
                            "{refused} connections refused at the limit of {max_clients} (--max-clients)"
                        );
                    }
                    continue;
                };
                let htdocs = htdocs.clone();
                let observe = observe.clone();
                let in_flight = in_flight.clone();
                in_flight.count.set(in_flight.count.get() + 1);
                kiln_rt::spawn(async move {
                    let served =
                        serve_observed(&mut stream, &*htdocs, &limits, &ticket, &observe).await;
                    drop(ticket);
                    if let Err(e) = served
                        && !matches!(e, StackError::ConnectionReset | StackError::TimedOut)
                    {
                        log::warn!("connection failed: {e}");
                    }
                    in_flight.end();
                });
            }
            Err(e) => {
                log::error!("accept failed: {e}");
                // Do not spin on a persistent failure.
                kiln_rt::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    log::info!(
        "stopping; {} connection(s) in flight",
        in_flight.count.get()
    );
    let drained = kiln_rt::timeout(DRAIN_TIMEOUT, in_flight.drained()).await;
    if drained.is_err() {
        log::warn!(
            "{} connection(s) cut after {DRAIN_TIMEOUT:?}",
            in_flight.count.get()
        );
    }
    Ok(())
}

/// The connections being served, and the stop's wait for their end.
#[derive(Default)]
struct InFlight {
    count: Cell<usize>,
    /// The stop waiting for the count to reach zero.
    waiter: core::cell::RefCell<Option<core::task::Waker>>,
}

impl InFlight {
    /// A connection ended: wakes the stop if it was the last one.
    fn end(&self) {
        self.count.set(self.count.get().saturating_sub(1));
        if self.count.get() == 0
            && let Some(waker) = self.waiter.borrow_mut().take()
        {
            waker.wake();
        }
    }

    /// Completes when no connection is left (at once, in the round the
    /// last one ends: its answer must be out by then, `http::close`).
    async fn drained(&self) {
        core::future::poll_fn(|cx| {
            if self.count.get() == 0 {
                return core::task::Poll::Ready(());
            }
            *self.waiter.borrow_mut() = Some(cx.waker().clone());
            core::task::Poll::Pending
        })
        .await;
    }
}
