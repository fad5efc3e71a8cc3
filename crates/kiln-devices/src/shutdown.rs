//! The shutdown device: a request from the host to stop (`kiln stop`,
//! SIGTERM on unix) that the application awaits, so that it can finish
//! what it is doing and return.

use core::future::Future;

/// A request to shut down, delivered once.
pub trait Shutdown {
    /// Completes when the host has asked the unikernel to stop (at once if
    /// it already has). Awaiting it again completes at once.
    fn requested(&self) -> impl Future<Output = ()>;
}

/// A shutdown device for platforms that cannot deliver the request: it
/// never completes, and the host's stop is a hard one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoShutdown;

impl Shutdown for NoShutdown {
    fn requested(&self) -> impl Future<Output = ()> {
        core::future::pending()
    }
}
