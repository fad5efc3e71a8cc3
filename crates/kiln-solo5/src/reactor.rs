//! Device readiness between POLL hypercalls: which manifest handles the
//! tender reported ready, and the wakers of the tasks waiting on them.
//!
//! The POLL hypercall returns a set of ready handles (one bit per manifest
//! entry). The reactor remembers that set, so that a network device asked
//! for a frame makes a NETREAD hypercall only when its handle was reported
//! ready, and wakes the task waiting on each handle in the set.

use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Poll, Waker};

use crate::outcome::Failure;

/// Number of handles a ready set can name (`MFT_MAX_ENTRIES`).
pub const MAX_HANDLES: usize = 64;

/// Why a handle cannot be used with the reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReactorError {
    /// The handle does not fit in a ready set.
    #[error("device handle {0} is outside the {MAX_HANDLES} a ready set can name")]
    BadHandle(u64),
}

/// A manifest handle checked to fit in a ready set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle(u8);

impl Handle {
    /// Checks `raw`.
    pub fn new(raw: u64) -> Result<Handle, ReactorError> {
        u8::try_from(raw)
            .ok()
            .filter(|&h| usize::from(h) < MAX_HANDLES)
            .map(Handle)
            .ok_or(ReactorError::BadHandle(raw))
    }

    /// The handle as the hypercalls take it.
    pub fn raw(self) -> u64 {
        u64::from(self.0)
    }

    fn bit(self) -> u64 {
        1 << self.0
    }
}

/// Readiness and wakers of every handle.
pub struct Reactor {
    ready: AtomicU64,
    wakers: spin::Mutex<[Option<Waker>; MAX_HANDLES]>,
}

impl Default for Reactor {
    fn default() -> Self {
        Self::new()
    }
}

impl Reactor {
    /// A reactor with nothing ready and nobody waiting.
    pub const fn new() -> Reactor {
        Reactor {
            ready: AtomicU64::new(0),
            wakers: spin::Mutex::new([const { None }; MAX_HANDLES]),
        }
    }

    /// Whether `handle` was reported ready and not drained since.
    pub fn is_ready(&self, handle: Handle) -> bool {
        self.ready.load(Ordering::Acquire) & handle.bit() != 0
    }

    /// Records that `handle` has nothing pending (its read said "again").
    pub fn clear(&self, handle: Handle) {
        self.ready.fetch_and(!handle.bit(), Ordering::AcqRel);
    }

    /// Registers `waker` to be woken when `handle` is next reported ready,
    /// replacing the previous one.
    pub fn register(&self, handle: Handle, waker: &Waker) {
        let mut wakers = self.wakers.lock();
        match &mut wakers[usize::from(handle.0)] {
            Some(w) => w.clone_from(waker),
            slot => *slot = Some(waker.clone()),
        }
    }

    /// The receive protocol of a device: `read` (a hypercall) is made only
    /// if `handle` was reported ready. A read that finds nothing ("again")
    /// clears the readiness; whenever nothing was read, `waker` is
    /// registered for the next POLL that reports `handle`.
    pub fn poll_read<T>(
        &self,
        handle: Handle,
        waker: &Waker,
        read: impl FnOnce() -> Result<T, Failure>,
    ) -> Poll<Result<T, Failure>> {
        if self.is_ready(handle) {
            match read() {
                Err(Failure::Again) => self.clear(handle),
                done => return Poll::Ready(done),
            }
        }
        self.register(handle, waker);
        Poll::Pending
    }

    /// Records the ready set a POLL returned and wakes the tasks waiting on
    /// its handles.
    ///
    /// Only the handles in `ready_set` are visited (one step per set bit,
    /// usually one): on hvt every guest instruction may be emulated, so a
    /// pass over all [`MAX_HANDLES`] slots on every wake-up would cost
    /// several hundred instructions per frame.
    pub fn deliver(&self, ready_set: u64) {
        if ready_set == 0 {
            return;
        }
        self.ready.fetch_or(ready_set, Ordering::AcqRel);
        let mut pending = ready_set;
        while pending != 0 {
            let i = pending.trailing_zeros() as usize;
            pending &= pending - 1;
            // Taken under the lock, woken outside it: a waker may register
            // again at once.
            let waker = self.wakers.lock().get_mut(i).and_then(Option::take);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use alloc::sync::Arc;
    use alloc::task::Wake;
    use core::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn handles_outside_a_ready_set_are_refused() {
        assert_eq!(Handle::new(63).unwrap().raw(), 63);
        assert_eq!(Handle::new(64), Err(ReactorError::BadHandle(64)));
        assert_eq!(
            Handle::new(u64::MAX),
            Err(ReactorError::BadHandle(u64::MAX))
        );
    }

    #[test]
    fn reads_happen_only_after_a_poll_reported_the_handle() {
        let reactor = Reactor::new();
        let h = Handle::new(3).unwrap();
        let (woken, waker) = counter();
        let mut reads = 0;

        // Nothing reported yet: no hypercall, the waker is registered.
        let p = reactor.poll_read(h, &waker, || {
            reads += 1;
            Ok(60)
        });
        assert!(p.is_pending());
        assert_eq!(reads, 0);

        // A POLL reports another handle: still nothing to do.
        reactor.deliver(1 << 4);
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);

        // A POLL reports ours: the task is woken and its read is made.
        reactor.deliver(1 << 3);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        let p = reactor.poll_read(h, &waker, || {
            reads += 1;
            Ok(60)
        });
        assert_eq!(p, Poll::Ready(Ok(60)));
        assert_eq!(reads, 1);

        // Drained: "again" clears readiness and registers the waker; the
        // next poll makes no hypercall.
        let p: Poll<Result<usize, Failure>> = reactor.poll_read(h, &waker, || {
            reads += 1;
            Err(Failure::Again)
        });
        assert!(p.is_pending());
        assert_eq!(reads, 2);
        let p = reactor.poll_read(h, &waker, || {
            reads += 1;
            Ok(1)
        });
        assert!(p.is_pending());
        assert_eq!(reads, 2);
        reactor.deliver(1 << 3);
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);

        // Errors are returned as they are.
        let p: Poll<Result<usize, Failure>> =
            reactor.poll_read(h, &waker, || Err(Failure::Error(3)));
        assert_eq!(p, Poll::Ready(Err(Failure::Error(3))));
    }

    #[test]
    fn delivery_wakes_only_the_ready_handles_once() {
        let reactor = Reactor::new();
        let (a_count, a) = counter();
        let (b_count, b) = counter();
        let ha = Handle::new(1).unwrap();
        let hb = Handle::new(2).unwrap();
        reactor.register(ha, &a);
        reactor.register(hb, &b);
        assert!(!reactor.is_ready(ha));

        reactor.deliver(1 << 1);
        assert!(reactor.is_ready(ha));
        assert!(!reactor.is_ready(hb));
        assert_eq!(a_count.0.load(Ordering::SeqCst), 1);
        assert_eq!(b_count.0.load(Ordering::SeqCst), 0);

        // The waker was consumed: a second delivery wakes nobody.
        reactor.deliver(1 << 1);
        assert_eq!(a_count.0.load(Ordering::SeqCst), 1);

        reactor.clear(ha);
        assert!(!reactor.is_ready(ha));
        reactor.deliver(0);
        assert!(!reactor.is_ready(ha));
    }

    #[test]
    fn delivery_wakes_every_handle_in_a_set_including_the_extremes() {
        let reactor = Reactor::new();
        let handles = [0u64, 5, 62, 63].map(|h| Handle::new(h).unwrap());
        let counters: alloc::vec::Vec<_> = handles
            .iter()
            .map(|&h| {
                let (count, waker) = counter();
                reactor.register(h, &waker);
                count
            })
            .collect();
        let (idle, idle_waker) = counter();
        let other = Handle::new(7).unwrap();
        reactor.register(other, &idle_waker);

        let set = handles.iter().fold(0u64, |set, h| set | 1 << h.raw());
        reactor.deliver(set);
        for (h, count) in handles.iter().zip(&counters) {
            assert!(reactor.is_ready(*h), "handle {}", h.raw());
            assert_eq!(count.0.load(Ordering::SeqCst), 1, "handle {}", h.raw());
        }
        assert_eq!(idle.0.load(Ordering::SeqCst), 0);
        assert!(!reactor.is_ready(other));
    }

    /// A waker that registers itself again when woken, as a task polled
    /// from its wake would: delivery must not hold the lock while waking.
    struct Rearm {
        reactor: &'static Reactor,
        handle: Handle,
        woken: AtomicUsize,
    }

    impl Wake for Rearm {
        fn wake(self: Arc<Self>) {
            self.woken.fetch_add(1, Ordering::SeqCst);
            let handle = self.handle;
            let reactor = self.reactor;
            reactor.register(handle, &Waker::from(self));
        }
    }

    #[test]
    fn a_woken_task_can_register_again_during_delivery() {
        static REACTOR: Reactor = Reactor::new();
        let handle = Handle::new(9).unwrap();
        let rearm = Arc::new(Rearm {
            reactor: &REACTOR,
            handle,
            woken: AtomicUsize::new(0),
        });
        REACTOR.register(handle, &Waker::from(rearm.clone()));
        REACTOR.deliver(1 << 9 | 1 << 10);
        assert_eq!(rearm.woken.load(Ordering::SeqCst), 1);
        REACTOR.deliver(1 << 9);
        assert_eq!(rearm.woken.load(Ordering::SeqCst), 2);
    }
}
