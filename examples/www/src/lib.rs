//! A static website unikernel: serves the files of a read-only store over
//! HTTP/1.1 on a TCP port, one task per connection.
//!
//! Modules: [`http`] (one connection: parsing, responses, keep-alive and
//! timeouts; testable over any in-memory `TcpStream`), [`mime`] (content
//! types). [`start`] is the entry function named in `unikernel.toml`.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod clients;
pub mod http;
pub mod mime;

use alloc::rc::Rc;
use core::cell::Cell;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use kiln_devices::{Console, KvRo, NoShutdown, Shutdown, Stack, StackError, TcpListener as _};
use kiln_rt::{Either, select};

pub use clients::{ClientCounters, Clients, Ticket};
pub use http::{Limits, Summary, serve, serve_client};

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

/// Serves `htdocs` on TCP `port` (every address of `stack`) until the
/// unikernel is stopped, at most `max_clients` connections at a time (see
/// [`Clients`]). `index.html` answers for directories.
pub async fn start<S, K, C>(
    stack: S,
    htdocs: K,
    console: C,
    port: u16,
    max_clients: u32,
) -> Result<(), WwwError>
where
    S: Stack,
    S::TcpStream: 'static,
    K: KvRo + 'static,
    C: Console + 'static,
{
    serve_until(stack, htdocs, console, NoShutdown, port, max_clients).await
}

/// How long a shutdown waits for the requests in flight: less than the 10 s
/// `kiln stop` waits by default before SIGKILL.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The entry function named in `unikernel.toml`: [`start`] until the host
/// asks the unikernel to stop (`kiln stop`); then it stops accepting,
/// lets the connections in flight finish (at most [`DRAIN_TIMEOUT`]) and
/// returns, so that the unikernel exits 0.
pub async fn serve_until<S, K, C, D>(
    stack: S,
    htdocs: K,
    console: C,
    shutdown: D,
    port: u16,
    max_clients: u32,
) -> Result<(), WwwError>
where
    S: Stack,
    S::TcpStream: 'static,
    K: KvRo + 'static,
    C: Console + 'static,
    D: Shutdown,
{
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
    let _ = console.logf(format_args!(
        "www: serving on port {}",
        listener.local_addr().port()
    ));
    let htdocs = Rc::new(htdocs);
    let console = Rc::new(console);
    let limits = Limits::default();
    let in_flight = Rc::new(InFlight::default());
    let clients = Clients::new(usize::try_from(max_clients).unwrap_or(usize::MAX));
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
                        let _ = console.logf(format_args!(
                            "www: {refused} connections refused at the limit of {max_clients} (--max-clients)"
                        ));
                    }
                    continue;
                };
                let htdocs = htdocs.clone();
                let console = console.clone();
                let in_flight = in_flight.clone();
                in_flight.count.set(in_flight.count.get() + 1);
                kiln_rt::spawn(async move {
                    let served = serve_client(&mut stream, &*htdocs, &limits, &ticket).await;
                    drop(ticket);
                    if let Err(e) = served
                        && !matches!(e, StackError::ConnectionReset | StackError::TimedOut)
                    {
                        let _ = console.logf(format_args!("www: connection failed: {e}"));
                    }
                    in_flight.end();
                });
            }
            Err(e) => {
                let _ = console.logf(format_args!("www: accept failed: {e}"));
                // Do not spin on a persistent failure.
                kiln_rt::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    let _ = console.logf(format_args!(
        "www: stopping; {} connection(s) in flight",
        in_flight.count.get()
    ));
    let drained = kiln_rt::timeout(DRAIN_TIMEOUT, in_flight.drained()).await;
    if drained.is_err() {
        let _ = console.logf(format_args!(
            "www: {} connection(s) cut after {DRAIN_TIMEOUT:?}",
            in_flight.count.get()
        ));
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
