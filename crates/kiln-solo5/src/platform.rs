//! The runtime's blocking point: one POLL hypercall per wait on hvt, one
//! `epoll_pwait` on the tender's epoll set on spt.

use kiln_devices::Instant;

use crate::reactor::Reactor;
use crate::sys;

/// The timeout passed to POLL when no timer is pending: 2^62 ns (some 146
/// years), large enough to mean "until a device is ready" while leaving the
/// tender room to convert it without overflow.
pub const FOREVER_NANOS: u64 = 1 << 62;

/// The platform: implements [`kiln_rt::Platform`] with the monotonic clock
/// and the target's wait (POLL on hvt, `epoll_pwait` on spt), and keeps
/// the devices' readiness.
pub struct Platform {
    reactor: Reactor,
}

static PLATFORM: Platform = Platform {
    reactor: Reactor::new(),
};

/// The platform.
pub fn platform() -> &'static Platform {
    &PLATFORM
}

impl Platform {
    /// The devices' readiness.
    pub fn reactor(&self) -> &'static Reactor {
        &PLATFORM.reactor
    }
}

/// The POLL timeout for `deadline` at `now`: zero for a past deadline,
/// [`FOREVER_NANOS`] for none.
pub fn timeout_nanos(deadline: Option<Instant>, now: Instant) -> u64 {
    match deadline {
        None => FOREVER_NANOS,
        Some(d) => d
            .as_nanos()
            .saturating_sub(now.as_nanos())
            .min(FOREVER_NANOS),
    }
}

impl kiln_rt::Platform for Platform {
    fn now(&self) -> Instant {
        sys::clock::now()
    }

    fn wait(&self, deadline: Option<Instant>) {
        let ready = sys::host::poll(timeout_nanos(deadline, self.now()));
        self.reactor.deliver(ready);
    }
}
