//! The runtime's blocking point: one POLL hypercall per wait on hvt (one
//! NET_EXCHANGE when the tender offers kiln's extension), one
//! `epoll_pwait` on the tender's epoll set on spt. Block requests queued
//! for BLOCK_EXCHANGE are sent first, in one exit, instead of a wait.

use kiln_devices::Instant;

use crate::block_queue::BlockQueue;
use crate::exchange::Exchange;
use crate::reactor::Reactor;
use crate::sys;

/// The timeout passed to POLL when no timer is pending: 2^62 ns (some 146
/// years), large enough to mean "until a device is ready" while leaving the
/// tender room to convert it without overflow.
pub const FOREVER_NANOS: u64 = 1 << 62;

/// The platform: implements [`kiln_rt::Platform`] with the monotonic clock
/// and the target's wait (POLL or NET_EXCHANGE on hvt, `epoll_pwait` on
/// spt), and keeps the devices' readiness.
pub struct Platform {
    reactor: Reactor,
    /// The NET_EXCHANGE queues of the one network device that uses them.
    exchange: spin::Mutex<Option<Exchange>>,
    /// Block requests waiting for BLOCK_EXCHANGE.
    blocks: spin::Mutex<BlockQueue>,
}

static PLATFORM: Platform = Platform {
    reactor: Reactor::new(),
    exchange: spin::Mutex::new(None),
    blocks: spin::Mutex::new(BlockQueue::new()),
};

/// The block requests waiting for BLOCK_EXCHANGE.
pub(crate) fn block_queue() -> &'static spin::Mutex<BlockQueue> {
    &PLATFORM.blocks
}

/// Sends every queued block request in one BLOCK_EXCHANGE and wakes their
/// tasks; returns whether there were any.
pub(crate) fn block_exchange() -> bool {
    let wakers = {
        let mut q = PLATFORM.blocks.lock();
        let Some(arg) = q.prepare() else {
            return false;
        };
        sys::host::block_exchange(arg);
        q.complete()
    };
    for w in wakers {
        w.wake();
    }
    true
}

/// The platform.
pub fn platform() -> &'static Platform {
    &PLATFORM
}

impl Platform {
    /// The devices' readiness.
    pub fn reactor(&self) -> &'static Reactor {
        &PLATFORM.reactor
    }

    /// The NET_EXCHANGE queues, `None` until a network device takes them.
    pub(crate) fn exchange(&self) -> &'static spin::Mutex<Option<Exchange>> {
        &PLATFORM.exchange
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

/// One NET_EXCHANGE: sends the queue, refills the cache, waits at most
/// `timeout_nsecs` if nothing came; returns the ready set to deliver.
pub(crate) fn exchange(ex: &mut Exchange, timeout_nsecs: u64) -> u64 {
    match ex.prepare_area(timeout_nsecs) {
        Some(arg) => sys::host::net_exchange_area(arg),
        None => sys::host::net_exchange(ex.prepare(timeout_nsecs)),
    }
    ex.complete()
}

/// Sends the frames queued for NET_EXCHANGE without waiting (at exit, when
/// no wait will come). Frames it reads are dropped.
pub(crate) fn flush() {
    // `try_lock`: an exit from inside a send must not deadlock.
    if let Some(mut guard) = PLATFORM.exchange.try_lock()
        && let Some(ex) = guard.as_mut()
        && ex.queued() > 0
    {
        exchange(ex, 0);
    }
}

impl kiln_rt::Platform for Platform {
    fn now(&self) -> Instant {
        sys::clock::now()
    }

    fn wait(&self, deadline: Option<Instant>) {
        // Queued block requests are work to finish now: their tasks are
        // ready once the exchange returns, so no wait follows it.
        if block_exchange() {
            return;
        }
        // The clock is read only for a deadline it has not passed yet: on
        // spt every read is a system call.
        let timeout = match deadline {
            Some(d) if d <= sys::clock::last() => 0,
            Some(_) => timeout_nanos(deadline, self.now()),
            None => FOREVER_NANOS,
        };
        let ready = match self.exchange.lock().as_mut() {
            Some(ex) => exchange(ex, timeout),
            None => sys::host::poll(timeout),
        };
        self.reactor.deliver(ready);
        crate::shutdown::after_wait();
    }
}
