//! Timers: futures that complete when the monotonic clock reaches a
//! deadline, kept by the executor in one ordered map.

use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;

use kiln_devices::Instant;

use crate::executor::with_current;

/// Unique ids for timer entries, so that two timers with the same deadline
/// are distinct.
static NEXT_TIMER: AtomicU64 = AtomicU64::new(0);

/// The runtime's timer device: implements [`kiln_devices::Sleep`] (and
/// [`kiln_devices::MonotonicClock`]) on every target. It is a handle to the
/// running executor and holds no state of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timer;

/// The executor's time: the platform's monotonic clock as read when the
/// executor last returned from the platform's blocking point (or when
/// [`refresh`] was last called), shared by every task polled until the next
/// wait. A clock read can be a system call (spt has no vDSO), so a wake
/// costs one, however many timers, sockets and requests look at the time.
///
/// It is never older than the last return from the blocking point, and it
/// never goes back. It lags the clock by at most the CPU time the executor
/// has spent polling since that return: the executor returns to its
/// blocking point when no task is ready, and at least every 32 rounds of
/// polling while tasks stay ready (a check that does not block), reading
/// the clock each time. A task that computes for long inside one poll and
/// then needs the time to the microsecond calls [`refresh`].
///
/// Timers compare their deadlines with this time, which is never ahead of
/// the clock: no timer fires before its deadline. A [`sleep`] counts its
/// duration from a fresh read, so it lasts at least its duration; a
/// deadline of `now() + d` given to [`sleep_until`] may end up to the lag
/// above early.
///
/// # Panics
///
/// Outside of [`block_on`](crate::block_on).
pub fn now() -> Instant {
    with_current(|e| e.now()).expect("kiln_rt::time::now called outside a kiln runtime")
}

/// Reads the platform's clock into the executor's time (see [`now`]) and
/// returns it: for a task that has computed for long since the executor's
/// last wait and needs the time exactly (one clock read, a system call on
/// spt).
///
/// # Panics
///
/// Outside of [`block_on`](crate::block_on).
pub fn refresh() -> Instant {
    with_current(|e| e.refresh()).expect("kiln_rt::time::refresh called outside a kiln runtime")
}

impl kiln_devices::Sleep for Timer {
    fn now(&self) -> Instant {
        now()
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> {
        sleep_until(deadline)
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        sleep(duration)
    }
}

impl kiln_devices::MonotonicClock for Timer {
    fn now(&self) -> Instant {
        now()
    }
}

/// A future that completes at a deadline.
#[derive(Debug)]
#[must_use = "a Sleep does nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    /// This timer's key in the executor's map, while registered.
    key: Option<(Instant, u64)>,
}

impl Sleep {
    /// The instant at which this completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Completes at `deadline` (on the next poll if it has passed).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        key: None,
    }
}

/// Completes after `duration`, counted from a fresh clock read
/// ([`refresh`]): at least `duration` passes on every clock, as a sleep
/// promises, whatever the executor's time lags. Deadlines computed from
/// [`now`] and given to [`sleep_until`] cost no clock read and may end up
/// to that lag early (timeouts, the network stack's timers).
///
/// # Panics
///
/// Outside of [`block_on`](crate::block_on).
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(refresh() + duration)
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let registered = with_current(|executor| {
            if executor.now() >= this.deadline {
                if let Some(key) = this.key.take() {
                    executor.timers.borrow_mut().remove(&key);
                }
                return false;
            }
            let mut timers = executor.timers.borrow_mut();
            match this.key.and_then(|key| timers.get_mut(&key)) {
                Some(waker) => waker.clone_from(cx.waker()),
                None => {
                    let key = (this.deadline, NEXT_TIMER.fetch_add(1, Ordering::Relaxed));
                    timers.insert(key, cx.waker().clone());
                    this.key = Some(key);
                }
            }
            true
        });
        match registered {
            Some(true) => Poll::Pending,
            Some(false) => Poll::Ready(()),
            None => panic!("kiln_rt::Sleep polled outside a kiln runtime"),
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            with_current(|executor| executor.timers.borrow_mut().remove(&key));
        }
    }
}
