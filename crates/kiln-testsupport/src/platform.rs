//! A virtual-time `kiln_rt::Platform`, a console that records, the `log`
//! facade's records kept for a test to read, and waiting for blocking work
//! from a task.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_devices::{Console, ConsoleError, Instant};
use kiln_rt::{Platform, block_on};

/// How much virtual time may pass before a test counts as stuck.
pub const VIRTUAL_LIMIT: Duration = Duration::from_secs(3600);

/// A platform whose clock is virtual: `wait` jumps it to the deadline, so
/// timers (retransmissions, timeouts) take no real time. It has no
/// devices: it fails the test when every task waits with no timer pending
/// (a deadlock), or once an hour of virtual time has passed (a stuck
/// test).
#[derive(Debug, Default)]
pub struct VirtualPlatform {
    now: Cell<u64>,
}

impl Platform for VirtualPlatform {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.now.get())
    }

    fn wait(&self, deadline: Option<Instant>) {
        let d = deadline.expect("deadlock: every task waits and no timer is pending");
        self.now.set(self.now.get().max(d.as_nanos()));
        assert!(
            u128::from(self.now.get()) < VIRTUAL_LIMIT.as_nanos(),
            "an hour of virtual time passed: the test is stuck"
        );
    }
}

/// Runs `future` to completion on a fresh [`VirtualPlatform`] (leaked:
/// the executor wants a `'static` platform).
pub fn run_virtual<F: Future>(future: F) -> F::Output {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    block_on(platform, future)
}

/// A console that appends everything written to a shared string.
#[derive(Debug, Clone, Default)]
pub struct RecordingConsole(Rc<RefCell<String>>);

impl RecordingConsole {
    /// What was written so far (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        self.0.borrow().clone()
    }
}

impl Console for RecordingConsole {
    fn write(&self, bytes: &[u8]) -> Result<(), ConsoleError> {
        self.0
            .borrow_mut()
            .push_str(&String::from_utf8_lossy(bytes));
        Ok(())
    }
}

/// Every line kiln-rt's logger wrote in this process (see [`record_log`]).
static LOGGED: Mutex<String> = Mutex::new(String::new());

/// Installs kiln-rt's logger (`kiln_rt::logger`) for this process with
/// `filter` (`--log`'s syntax), its lines kept for [`logged`]; times are
/// printed as 0. The first call in a process wins (the logger is
/// process-wide), so every test of a binary should pass the same filter.
///
/// # Panics
///
/// If `filter` does not parse.
pub fn record_log(filter: &str) {
    let filter = kiln_rt::args::LogFilter::parse(filter).expect("a valid --log filter");
    kiln_rt::logger::init(
        filter,
        kiln_rt::logger::Sink {
            write: |bytes| {
                LOGGED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(bytes));
            },
            now: || Instant::ZERO,
        },
    );
}

/// What the logger installed by [`record_log`] wrote so far, from every
/// thread of the process.
pub fn logged() -> String {
    LOGGED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Runs blocking `work` (host tools, std sockets) in a thread of its own
/// while the calling task sleeps between looks at its outcome, every
/// 10 ms, so the executor keeps serving the other tasks. Its result, or
/// `None` if it has not finished within `limit` (the thread is then left
/// to end on its own).
pub async fn in_thread<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let outcome = Arc::new(Mutex::new(None));
    let slot = outcome.clone();
    std::thread::spawn(move || {
        let r = work();
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    });
    let rounds = limit.as_millis().div_ceil(10);
    for _ in 0..rounds {
        if let Some(r) = outcome.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Some(r);
        }
        kiln_rt::sleep(Duration::from_millis(10)).await;
    }
    outcome.lock().unwrap_or_else(|e| e.into_inner()).take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_take_no_real_time() {
        let started = std::time::Instant::now();
        let at = run_virtual(async {
            kiln_rt::sleep(Duration::from_secs(600)).await;
            kiln_rt::time::now()
        });
        assert!(at.as_nanos() >= 600_000_000_000, "{at:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn a_deadlock_fails() {
        run_virtual(std::future::pending::<()>());
    }

    #[test]
    #[should_panic(expected = "an hour of virtual time passed")]
    fn an_hour_of_virtual_time_fails() {
        run_virtual(async { kiln_rt::sleep(Duration::from_secs(7200)).await });
    }

    #[test]
    fn the_console_records() {
        let console = RecordingConsole::default();
        console.clone().log("one").unwrap();
        console.write(b"two").unwrap();
        assert_eq!(console.text(), "one\ntwo");
    }

    #[test]
    fn blocking_work_runs_beside_the_executor() {
        // Real time here: the thread's work takes real time.
        struct Real;
        impl Platform for Real {
            fn now(&self) -> Instant {
                static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
                let start = START.get_or_init(std::time::Instant::now);
                Instant::from_nanos(start.elapsed().as_nanos() as u64)
            }
            fn wait(&self, deadline: Option<Instant>) {
                if let Some(d) = deadline {
                    let now = self.now().as_nanos();
                    std::thread::sleep(Duration::from_nanos(d.as_nanos().saturating_sub(now)));
                }
            }
        }
        let (done, late) = block_on(&Real, async {
            let done = in_thread(Duration::from_secs(5), || 7).await;
            let late = in_thread(Duration::from_millis(50), || {
                std::thread::sleep(Duration::from_secs(1));
            })
            .await;
            (done, late)
        });
        assert_eq!(done, Some(7));
        assert_eq!(late, None);
    }
}
