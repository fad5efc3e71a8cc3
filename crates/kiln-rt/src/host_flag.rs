//! A request the host makes by raising a flag the platform can only look
//! at (kiln's stop request on hvt and spt, QEMU's power button on virtio):
//! [`HostFlag`], the flag's reader and the one task awaiting it, woken
//! after the platform's wait that brought the request.

use core::future::{Future, poll_fn};
use core::task::{Poll, Waker};

/// A flag the host raises, read through a function, and the task waiting
/// for it (one: the application's). The platform calls
/// [`HostFlag::after_wait`] after each of its waits.
#[derive(Debug)]
pub struct HostFlag {
    raised: fn() -> bool,
    waiter: spin::Mutex<Option<Waker>>,
}

impl HostFlag {
    /// The flag `raised` reads (called at each poll and after each wait,
    /// so cheap), no task waiting yet.
    pub const fn new(raised: fn() -> bool) -> HostFlag {
        HostFlag {
            raised,
            waiter: spin::Mutex::new(None),
        }
    }

    /// Completes once the flag is raised, read at each poll; until then the
    /// task is kept (the latest waker) for [`HostFlag::after_wait`]. When
    /// the host does not deliver the request (`offered` false) it never
    /// completes and keeps no task.
    pub fn wait(&self, offered: bool) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if offered && (self.raised)() {
                return Poll::Ready(());
            }
            if offered {
                let mut waiter = self.waiter.lock();
                match &mut *waiter {
                    Some(w) => w.clone_from(cx.waker()),
                    slot => *slot = Some(cx.waker().clone()),
                }
            }
            Poll::Pending
        })
    }

    /// After each wait of the platform: wakes the waiting task once the
    /// flag is raised.
    pub fn after_wait(&self) {
        if (self.raised)() {
            let waker = self.waiter.lock().take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use alloc::task::Wake;
    use core::pin::pin;
    use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use core::task::Context;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    static RAISED: AtomicBool = AtomicBool::new(false);
    static FLAG: HostFlag = HostFlag::new(|| RAISED.load(Ordering::Relaxed));

    #[test]
    fn the_waiting_task_is_woken_once_the_flag_is_raised() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut offered = pin!(FLAG.wait(true));
        let mut never = pin!(FLAG.wait(false));
        assert!(offered.as_mut().poll(&mut cx).is_pending());
        FLAG.after_wait();
        assert_eq!(count.0.load(Ordering::Relaxed), 0, "woken before the flag");
        RAISED.store(true, Ordering::Relaxed);
        FLAG.after_wait();
        FLAG.after_wait();
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "woken once");
        assert!(offered.as_mut().poll(&mut cx).is_ready());
        // Not offered: never complete, and nothing kept to wake.
        assert!(never.as_mut().poll(&mut cx).is_pending());
        FLAG.after_wait();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }
}
