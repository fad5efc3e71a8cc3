//! The executor against a platform with virtual time: `wait` jumps the
//! clock to the deadline, so hours of timers take no real time, and every
//! call to the blocking point is recorded.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use kiln_devices::{Instant, Sleep as _};
use kiln_rt::{
    Either, Elapsed, Platform, Timer, block_on, join_all, select, sleep, spawn, timeout, yield_now,
};

/// A virtual clock and one fake device that becomes ready after
/// `device_ready_after` calls to `wait`.
#[derive(Default)]
struct VirtualPlatform {
    now: Cell<u64>,
    waits: RefCell<Vec<Option<Instant>>>,
    device_ready_after: Cell<Option<usize>>,
    device_waker: RefCell<Option<Waker>>,
    device_ready: Cell<bool>,
}

impl Platform for VirtualPlatform {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.now.get())
    }

    fn wait(&self, deadline: Option<Instant>) {
        self.waits.borrow_mut().push(deadline);
        let calls = self.waits.borrow().len();
        if self.device_ready_after.get() == Some(calls) {
            self.device_ready.set(true);
            if let Some(waker) = self.device_waker.borrow_mut().take() {
                waker.wake();
            }
            return;
        }
        match deadline {
            Some(d) => self.now.set(self.now.get().max(d.as_nanos())),
            None => panic!("deadlock: blocked forever with no device about to be ready"),
        }
    }
}

impl VirtualPlatform {
    /// A future that completes once the fake device is ready.
    async fn device(&self) {
        poll_fn(|cx| {
            if self.device_ready.get() {
                Poll::Ready(())
            } else {
                *self.device_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

fn ms(n: u64) -> Instant {
    Instant::from_nanos(n * 1_000_000)
}

#[test]
fn timers_fire_in_deadline_order_with_one_wait_each() {
    // Leak the platform so it is 'static, as platforms are in practice.
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    let log = Rc::new(RefCell::new(Vec::new()));
    block_on(platform, async {
        let handles: Vec<_> = [30u64, 10, 20]
            .into_iter()
            .map(|n| {
                let log = log.clone();
                spawn(async move {
                    sleep(Duration::from_millis(n)).await;
                    log.borrow_mut().push(n);
                    n * 2
                })
            })
            .collect();
        let mut outputs = Vec::new();
        for h in handles {
            outputs.push(h.await);
        }
        assert_eq!(outputs, [60, 20, 40]);
    });
    assert_eq!(*log.borrow(), [10, 20, 30]);
    assert_eq!(platform.now(), ms(30));
    assert_eq!(
        *platform.waits.borrow(),
        [Some(ms(10)), Some(ms(20)), Some(ms(30))]
    );
}

#[test]
fn timeout_expires_and_deregisters_the_losing_timer() {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    block_on(platform, async {
        let r = timeout(Duration::from_millis(5), sleep(Duration::from_secs(3600))).await;
        assert_eq!(r, Err(Elapsed));
        assert_eq!(Timer.now(), ms(5));
        let r = timeout(Duration::from_secs(1), async { 7 }).await;
        assert_eq!(r, Ok(7));
        // Both losing timers are gone: the next wait's deadline is this one.
        Timer.sleep(Duration::from_millis(1)).await;
    });
    assert_eq!(*platform.waits.borrow(), [Some(ms(5)), Some(ms(6))]);
}

#[test]
fn idle_runtime_blocks_in_the_platform_without_spinning() {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    platform.device_ready_after.set(Some(1));
    block_on(platform, platform.device());
    // Exactly one blocking call with no deadline: nothing polled in a loop.
    assert_eq!(*platform.waits.borrow(), [None]);
}

#[test]
fn busy_tasks_do_not_starve_devices() {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    platform.device_ready_after.set(Some(1));
    block_on(platform, async {
        spawn(async {
            loop {
                yield_now().await;
            }
        });
        platform.device().await;
    });
    // The device was checked without blocking while the spinner was ready.
    assert_eq!(*platform.waits.borrow(), [Some(Instant::ZERO)]);
}

#[test]
fn select_returns_the_first_and_yield_interleaves_tasks() {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    let log = Rc::new(RefCell::new(String::new()));
    block_on(platform, async {
        let r = select(sleep(Duration::from_millis(2)), async { "now" }).await;
        assert_eq!(r, Either::Right("now"));
        let tasks: Vec<_> = ['a', 'b']
            .into_iter()
            .map(|c| {
                let log = log.clone();
                spawn(async move {
                    for _ in 0..3 {
                        log.borrow_mut().push(c);
                        yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    });
    assert_eq!(*log.borrow(), "ababab");
}

/// join_all polls every future before any is done (so their requests go
/// out together) and gives the outputs in the order of the futures, not of
/// their completion; each sleep ends on one wait.
#[test]
fn join_all_polls_every_future_and_keeps_their_order() {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    let log = Rc::new(RefCell::new(String::new()));
    let out = block_on(platform, async {
        let futures: Vec<_> = [(3u64, 'a'), (1, 'b'), (2, 'c')]
            .into_iter()
            .map(|(d, c)| {
                let log = log.clone();
                async move {
                    log.borrow_mut().push(c);
                    sleep(Duration::from_millis(d)).await;
                    log.borrow_mut().push(c.to_ascii_uppercase());
                    c
                }
            })
            .collect();
        join_all(futures).await
    });
    assert_eq!(out, ['a', 'b', 'c']);
    assert_eq!(*log.borrow(), "abcBCA");
    assert_eq!(platform.waits.borrow().len(), 3);
    assert!(block_on(platform, join_all(Vec::<std::future::Ready<()>>::new())).is_empty());
}

#[test]
fn tasks_spawn_tasks_and_slots_are_reused() {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    let total = block_on(platform, async {
        let mut sum = 0u64;
        for round in 0..100u64 {
            let handles: Vec<_> = (0..100u64)
                .map(|i| spawn(async move { spawn(async move { round * i }).await }))
                .collect();
            for h in handles {
                sum += h.await;
            }
        }
        sum
    });
    assert_eq!(total, (0..100u64).sum::<u64>().pow(2));
}

#[test]
fn pending_tasks_are_dropped_with_their_timers_when_main_returns() {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    block_on(platform, async {
        for _ in 0..10 {
            spawn(sleep(Duration::from_secs(60)));
        }
        yield_now().await;
    });
    // A second runtime on the same thread starts clean.
    block_on(platform, async { sleep(Duration::from_millis(1)).await });
    assert_eq!(platform.waits.borrow().last(), Some(&Some(ms(1))));
}

#[test]
#[should_panic(expected = "inside a running kiln runtime")]
fn nested_block_on_is_refused() {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    block_on(platform, async { block_on(platform, async {}) });
}

/// The value of the sample `line` (`name{labels}`) on the metrics page.
fn sample(page: &str, line: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {line} in\n{page}"))
}

#[test]
fn the_executor_counts_polls_waits_and_tasks_for_the_metrics_page() {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    let (during, after_tasks) = block_on(platform, async {
        let done = spawn(async {
            for _ in 0..3 {
                yield_now().await;
            }
        });
        spawn(async {
            sleep(Duration::from_secs(3600)).await;
        });
        sleep(Duration::from_millis(5)).await;
        let during = kiln_metrics::render();
        done.await;
        yield_now().await;
        (during, kiln_metrics::render())
    });
    // The first task was polled four times, the sleeper once, the entry
    // function at least twice (before and after its sleep).
    assert!(
        sample(&during, "kiln_executor_polls_total") >= 7,
        "{during}"
    );
    assert_eq!(sample(&during, "kiln_executor_spawned_total"), 2);
    assert_eq!(sample(&during, "kiln_executor_tasks"), 1, "{during}");
    assert_eq!(
        sample(&during, "kiln_executor_waits_total{kind=\"block\"}"),
        1,
        "one block for the 5 ms sleep: {during}"
    );
    assert!(
        sample(&after_tasks, "kiln_executor_polls_total")
            > sample(&during, "kiln_executor_polls_total")
    );
    // Unregistered once block_on returned.
    assert_eq!(kiln_metrics::render(), "");
}

/// A clock that counts its reads and that tasks move forward to stand for
/// CPU time; `wait` lets a microsecond pass, or jumps to the deadline.
#[derive(Default)]
struct CountingClock {
    clock: Cell<u64>,
    reads: Cell<u64>,
    /// The clock when the last `wait` returned.
    last_return: Cell<u64>,
    waits: Cell<u64>,
}

impl Platform for CountingClock {
    fn now(&self) -> Instant {
        self.reads.set(self.reads.get() + 1);
        Instant::from_nanos(self.clock.get())
    }

    fn wait(&self, deadline: Option<Instant>) {
        self.waits.set(self.waits.get() + 1);
        // A time that does not move with the clock would loop for ever.
        assert!(
            self.waits.get() < 1_000,
            "1000 waits: the executor's time is stuck"
        );
        let passed = self.clock.get() + 1_000;
        let t = deadline.map_or(passed, |d| passed.max(d.as_nanos()));
        self.clock.set(t);
        self.last_return.set(t);
    }
}

impl CountingClock {
    /// Time spent computing inside a poll.
    fn compute(&self, nanos: u64) {
        self.clock.set(self.clock.get() + nanos);
    }
}

#[test]
fn the_executors_time_is_read_once_per_wait_and_never_older_than_its_return() {
    use kiln_rt::time::{now, refresh};
    let p: &'static CountingClock = Box::leak(Box::default());
    block_on(p, async {
        // Inside one poll: the same time however often it is asked for,
        // without reading the clock, even after long computing.
        let start = now();
        let reads = p.reads.get();
        p.compute(5_000_000);
        for _ in 0..100 {
            assert_eq!(now(), start);
        }
        assert_eq!(p.reads.get(), reads, "now() read the platform's clock");
        // Refreshed when the blocking point returns: never older than it,
        // and read once for the wake (plus at most once by the wait).
        for round in 0..5 {
            let reads = p.reads.get();
            let deadline = now() + Duration::from_millis(3);
            sleep_until_and_check(p, deadline).await;
            assert!(
                now().as_nanos() >= p.last_return.get(),
                "round {round}: the executor's time {:?} is older than the last wait's return {}",
                now(),
                p.last_return.get()
            );
            assert!(
                p.reads.get() - reads <= 2,
                "round {round}: {} clock reads for one wait",
                p.reads.get() - reads
            );
        }
        // refresh() reads the clock and becomes the executor's time.
        p.compute(7_000_000);
        let fresh = refresh();
        assert_eq!(fresh.as_nanos(), p.clock.get());
        assert_eq!(now(), fresh);
        // Busy tasks that never let the executor block still see time
        // move: the check between busy rounds refreshes it.
        let before = now();
        let mut yields = 0;
        while now() == before {
            p.compute(1_000);
            yield_now().await;
            yields += 1;
            assert!(
                yields <= 64,
                "the executor's time did not move in {yields} busy rounds"
            );
        }
    });
}

/// Sleeps until `deadline` and checks that the platform's clock, not just
/// the executor's time, has reached it: a timer never fires early.
async fn sleep_until_and_check(p: &CountingClock, deadline: Instant) {
    kiln_rt::sleep_until(deadline).await;
    assert!(
        p.clock.get() >= deadline.as_nanos(),
        "a timer for {deadline:?} fired at {}",
        p.clock.get()
    );
}
