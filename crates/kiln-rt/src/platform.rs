//! The one blocking point that every platform implements.

use kiln_devices::Instant;

/// What the executor needs from a platform: a monotonic clock and a way to
/// block until there is something to do.
pub trait Platform {
    /// The current monotonic instant, never decreasing. The executor reads
    /// it when it starts and after each return from [`wait`](Self::wait),
    /// and hands that reading to every task until the next wait
    /// ([`time::now`](crate::time::now)); `wait` itself reads it only when
    /// it needs a timeout.
    fn now(&self) -> Instant;

    /// Blocks until a device may be ready or `deadline` passes, then wakes
    /// the wakers of the devices that became ready. `None` means no timer
    /// is pending: block until a device is ready. A deadline at or before
    /// `now()` means "check the devices without blocking".
    ///
    /// Spurious returns are allowed; the executor loops.
    fn wait(&self, deadline: Option<Instant>);
}

impl<P: Platform + ?Sized> Platform for &P {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn wait(&self, deadline: Option<Instant>) {
        (**self).wait(deadline)
    }
}
