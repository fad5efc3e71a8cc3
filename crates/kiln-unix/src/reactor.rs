//! The reactor: file descriptors registered by devices, and the runtime's one
//! blocking point, a single `ppoll(2)` over them.
//!
//! Each device holds a [`Registration`], which owns one slot: an entry in
//! the `pollfd` array handed to the kernel and the wakers of the tasks
//! waiting on that descriptor. Registering interest is an update in place;
//! slots are recycled, so the array only ever grows to the largest number
//! of descriptors open at once and `wait` allocates nothing.
//!
//! Readiness is level-triggered: a device tries its operation first and
//! registers interest only when it would block (EAGAIN), and the next
//! `wait` reports the descriptor as soon as it is ready. Interest is
//! cleared once it fires; the woken task registers again if it still needs
//! to wait.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::Write as _;
use std::os::fd::RawFd;
use std::task::Waker;
use std::time::Duration;

use kiln_devices::Instant;

use crate::sys::{self, pollfd};

/// Which readiness a task waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Data (or a connection, or end of file) to read.
    Readable,
    /// Room to write, or a connect that completed.
    Writable,
}

/// The wakers waiting on one descriptor.
#[derive(Default)]
struct Slot {
    /// The descriptor; `pollfds[i].fd` is this while interest is
    /// registered and -1 (ignored by the kernel) otherwise.
    fd: RawFd,
    readers: Vec<Waker>,
    writers: Vec<Waker>,
}

#[derive(Default)]
struct Reactor {
    /// Handed to `ppoll` as is; entry `i` belongs to `slots[i]`.
    pollfds: Vec<pollfd>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Wakers collected during `wait`, woken once no borrow is held; kept
    /// to reuse its allocation.
    woken: Vec<Waker>,
}

/// Adds `waker` to `wakers` unless it would wake the same task as one
/// already there.
fn add_waker(wakers: &mut Vec<Waker>, waker: &Waker) {
    if !wakers.iter().any(|w| w.will_wake(waker)) {
        wakers.push(waker.clone());
    }
}

/// The unix platform: a monotonic clock and a `ppoll(2)` reactor.
/// Implements [`kiln_rt::Platform`]; obtain it with [`platform`](crate::platform).
///
/// It is single-threaded (neither `Send` nor `Sync`): each thread that asks
/// for the platform gets its own.
pub struct Platform {
    reactor: RefCell<Reactor>,
    /// Calls to `wait` so far, for tests that check the executor does not spin.
    waits: Cell<u64>,
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (registered, slots) = match self.reactor.try_borrow() {
            Ok(r) => (Some(r.slots.len() - r.free.len()), Some(r.slots.len())),
            Err(_) => (None, None),
        };
        f.debug_struct("Platform")
            .field("registered", &registered)
            .field("slots", &slots)
            .field("waits", &self.waits.get())
            .finish()
    }
}

impl Platform {
    pub(crate) fn new() -> Platform {
        sys::ignore_sigpipe();
        sys::minimise_timer_slack();
        sys::map_large_allocations();
        Platform {
            reactor: RefCell::new(Reactor::default()),
            waits: Cell::new(0),
        }
    }

    /// How many times the runtime has blocked (or checked devices) in
    /// [`wait`](kiln_rt::Platform::wait) on this platform.
    pub fn wait_count(&self) -> u64 {
        self.waits.get()
    }

    fn add(&self, fd: RawFd) -> usize {
        let mut r = self.reactor.borrow_mut();
        let index = match r.free.pop() {
            Some(index) => index,
            None => {
                r.slots.push(Slot::default());
                r.pollfds.push(pollfd {
                    fd: -1,
                    events: 0,
                    revents: 0,
                });
                r.slots.len() - 1
            }
        };
        if let Some(slot) = r.slots.get_mut(index) {
            slot.fd = fd;
        }
        index
    }

    fn remove(&self, index: usize) {
        let mut r = self.reactor.borrow_mut();
        let Reactor {
            pollfds,
            slots,
            free,
            ..
        } = &mut *r;
        if let (Some(slot), Some(pfd)) = (slots.get_mut(index), pollfds.get_mut(index)) {
            // The wakers are dropped: a descriptor that goes away has no
            // more readiness to report.
            slot.readers.clear();
            slot.writers.clear();
            slot.fd = -1;
            *pfd = pollfd {
                fd: -1,
                events: 0,
                revents: 0,
            };
            free.push(index);
        }
    }

    fn register(&self, index: usize, interest: Interest, waker: &Waker) {
        let mut r = self.reactor.borrow_mut();
        let Reactor { pollfds, slots, .. } = &mut *r;
        let (Some(slot), Some(pfd)) = (slots.get_mut(index), pollfds.get_mut(index)) else {
            return;
        };
        match interest {
            Interest::Readable => {
                add_waker(&mut slot.readers, waker);
                pfd.events |= libc::POLLIN;
            }
            Interest::Writable => {
                add_waker(&mut slot.writers, waker);
                pfd.events |= libc::POLLOUT;
            }
        }
        pfd.fd = slot.fd;
    }

    /// The ppoll timeout for `deadline`: `None` blocks without limit; a
    /// deadline already past gives zero.
    fn timeout(&self, deadline: Option<Instant>) -> Option<Duration> {
        match deadline {
            None | Some(Instant::MAX) => None,
            Some(d) => Some(d.saturating_duration_since(kiln_rt::Platform::now(self))),
        }
    }
}

impl kiln_rt::Platform for Platform {
    fn now(&self) -> Instant {
        Instant::from_nanos(sys::monotonic_nanos())
    }

    fn wait(&self, deadline: Option<Instant>) {
        self.waits.set(self.waits.get().wrapping_add(1));
        // The timeout is computed before the kernel starts counting, so the
        // call never returns before `deadline` because of it: ppoll takes
        // nanoseconds and sleeps at least that long on CLOCK_MONOTONIC.
        let timeout = self.timeout(deadline);
        let mut woken = {
            let mut r = self.reactor.borrow_mut();
            match sys::ppoll(&mut r.pollfds, timeout) {
                Ok(0) => return,
                Ok(_) => {}
                // A signal arrived: return, the executor loops.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
                Err(e) => {
                    drop(r);
                    // ENOMEM, or EINVAL after RLIMIT_NOFILE was lowered below
                    // the number of slots. Report it and block as asked, so
                    // that the executor does not spin; it retries next time.
                    let _ = writeln!(std::io::stderr(), "kiln-unix: ppoll failed: {e}");
                    std::thread::sleep(timeout.unwrap_or(Duration::from_millis(10)));
                    return;
                }
            }
            let Reactor {
                pollfds,
                slots,
                woken,
                ..
            } = &mut *r;
            let mut woken = std::mem::take(woken);
            let error = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
            for (pfd, slot) in pollfds.iter_mut().zip(slots.iter_mut()) {
                if pfd.revents == 0 {
                    continue;
                }
                if pfd.revents & (libc::POLLIN | libc::POLLPRI | libc::POLLRDHUP | error) != 0 {
                    woken.append(&mut slot.readers);
                    pfd.events &= !libc::POLLIN;
                }
                if pfd.revents & (libc::POLLOUT | error) != 0 {
                    woken.append(&mut slot.writers);
                    pfd.events &= !libc::POLLOUT;
                }
                pfd.revents = 0;
                if pfd.events == 0 {
                    // No interest left: stop polling it, or an error or
                    // hang-up (always reported) would end every wait.
                    pfd.fd = -1;
                }
            }
            woken
        };
        // Wake with no borrow held: a waker may do anything.
        woken.drain(..).for_each(Waker::wake);
        self.reactor.borrow_mut().woken = woken;
    }
}

/// A descriptor registered with the reactor. Dropping it deregisters the
/// descriptor (it does not close it); drop it before closing the
/// descriptor.
pub struct Registration {
    platform: &'static Platform,
    index: usize,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("slot", &self.index)
            .finish()
    }
}

impl Registration {
    /// Registers `fd` (which should be non-blocking) with `platform`. No
    /// interest is registered yet.
    pub fn new(platform: &'static Platform, fd: RawFd) -> Registration {
        Registration {
            platform,
            index: platform.add(fd),
        }
    }

    /// The platform this belongs to.
    pub fn platform(&self) -> &'static Platform {
        self.platform
    }

    /// Wakes `waker` once the descriptor is ready for `interest` (or has an
    /// error or hang-up). Call after an operation returned EAGAIN; several
    /// tasks may wait at once.
    pub fn register(&self, interest: Interest, waker: &Waker) {
        self.platform.register(self.index, interest, waker);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.platform.remove(self.index);
    }
}
