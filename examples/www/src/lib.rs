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

pub mod http;
pub mod mime;

use alloc::rc::Rc;
use core::cell::Cell;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use kiln_devices::{Console, KvRo, NoShutdown, Shutdown, Stack, StackError, TcpListener as _};
use kiln_rt::{Either, select};

pub use http::{Limits, Summary, serve};

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
/// unikernel is stopped. `index.html` answers for directories.
pub async fn start<S, K, C>(stack: S, htdocs: K, console: C, port: u16) -> Result<(), WwwError>
where
    S: Stack,
    S::TcpStream: 'static,
    K: KvRo + 'static,
    C: Console + 'static,
{
    serve_until(stack, htdocs, console, NoShutdown, port).await
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
    let in_flight = Rc::new(Cell::new(0usize));
    loop {
        let accepted = match select(listener.accept(), shutdown.requested()).await {
            Either::Left(accepted) => accepted,
            Either::Right(()) => break,
        };
        match accepted {
            Ok((mut stream, _peer)) => {
                let htdocs = htdocs.clone();
                let console = console.clone();
                let in_flight = in_flight.clone();
                in_flight.set(in_flight.get() + 1);
                kiln_rt::spawn(async move {
                    if let Err(e) = serve(&mut stream, &*htdocs, &limits).await
                        && !matches!(e, StackError::ConnectionReset | StackError::TimedOut)
                    {
                        let _ = console.logf(format_args!("www: connection failed: {e}"));
                    }
                    in_flight.set(in_flight.get() - 1);
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
        in_flight.get()
    ));
    let drained = kiln_rt::timeout(DRAIN_TIMEOUT, async {
        while in_flight.get() > 0 {
            kiln_rt::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if drained.is_err() {
        let _ = console.logf(format_args!(
            "www: {} connection(s) cut after {DRAIN_TIMEOUT:?}",
            in_flight.get()
        ));
    }
    Ok(())
}
