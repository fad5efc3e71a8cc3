//! Tasks, the ready queue, and the run loop around the platform's blocking
//! point.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::pin::{Pin, pin};
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};

use kiln_devices::Instant;

use crate::platform::Platform;

type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// After this many rounds in a row with tasks still ready, the run loop asks
/// the platform for device readiness without blocking, so that busy tasks
/// cannot starve I/O.
const BUSY_ROUNDS_BEFORE_CHECK: u32 = 32;

/// Tasks woken and waiting to be polled. Wakers may in principle be called
/// from anywhere, so the queue sits behind a lock; on kiln's single thread it
/// is never contended.
struct ReadyQueue {
    tasks: spin::Mutex<VecDeque<(usize, u64)>>,
    main: AtomicBool,
}

/// The waker of a spawned task: the task's slot and generation.
struct TaskWaker {
    index: usize,
    generation: u64,
    queued: AtomicBool,
    ready: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready
                .tasks
                .lock()
                .push_back((self.index, self.generation));
        }
    }
}

/// The waker of the future passed to `block_on`.
struct MainWaker(Arc<ReadyQueue>);

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.main.store(true, Ordering::Release);
    }
}

struct Task {
    future: Option<BoxFuture>,
    waker: Waker,
    state: Arc<TaskWaker>,
}

struct Slot {
    generation: u64,
    task: Option<Task>,
}

/// What the executor counts for the metrics page (`kiln_executor_*`):
/// plain increments on its one thread.
#[derive(Default)]
struct Counts {
    /// Futures polled: tasks and the entry future.
    polls: Cell<u64>,
    /// Calls to the platform's blocking point with nothing ready.
    blocks: Cell<u64>,
    /// Calls to it that only checked the devices (tasks still ready).
    checks: Cell<u64>,
    /// Tasks spawned, and those finished.
    spawned: Cell<u64>,
    finished: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}

impl Counts {
    fn collect(&self, out: &mut kiln_metrics::Exposition) {
        use kiln_metrics::Kind;
        out.family(
            "kiln_executor_polls_total",
            "Futures the executor polled: spawned tasks and the entry function",
            Kind::Counter,
        )
        .sample(&[], self.polls.get());
        let mut f = out.family(
            "kiln_executor_waits_total",
            "Calls to the platform's blocking point: to block (nothing ready) or to check devices between busy rounds",
            Kind::Counter,
        );
        f.sample(&[("kind", "block")], self.blocks.get());
        f.sample(&[("kind", "check")], self.checks.get());
        out.family(
            "kiln_executor_spawned_total",
            "Tasks spawned",
            Kind::Counter,
        )
        .sample(&[], self.spawned.get());
        out.family(
            "kiln_executor_tasks",
            "Tasks spawned and not finished",
            Kind::Gauge,
        )
        .sample(&[], self.spawned.get().saturating_sub(self.finished.get()));
    }
}

pub(crate) struct Executor {
    platform: *const dyn Platform,
    counts: Rc<Counts>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    ready: Arc<ReadyQueue>,
    /// Pending timers by (deadline, unique id).
    pub(crate) timers: RefCell<BTreeMap<(Instant, u64), Waker>>,
    /// The executor's time: the platform's clock as read when `block_on`
    /// started and each time the platform's blocking point returned (or
    /// [`refresh`](Self::refresh) was called). Every task polled until the
    /// next wait shares it, so a wake costs one clock read however many
    /// timers, sockets and requests look at the time.
    now: Cell<Instant>,
}

impl Executor {
    /// The executor's time (see `now`): never older than the last return
    /// from the platform's blocking point.
    pub(crate) fn now(&self) -> Instant {
        self.now.get()
    }

    /// Reads the platform's clock into the executor's time and returns it.
    pub(crate) fn refresh(&self) -> Instant {
        // SAFETY: `platform` was made from a reference that `block_on`
        // borrows for as long as this executor exists.
        let now = unsafe { &*self.platform }.now();
        // The platform's clock never goes back; keep that true of the
        // cache even for one that does.
        let now = now.max(self.now.get());
        self.now.set(now);
        now
    }

    pub(crate) fn spawn_boxed(&self, future: BoxFuture) {
        bump(&self.counts.spawned);
        let index = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut slots = self.slots.borrow_mut();
            slots.push(Slot {
                generation: 0,
                task: None,
            });
            slots.len() - 1
        });
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[index];
        let state = Arc::new(TaskWaker {
            index,
            generation: slot.generation,
            queued: AtomicBool::new(false),
            ready: self.ready.clone(),
        });
        let waker = Waker::from(state.clone());
        waker.wake_by_ref();
        slot.task = Some(Task {
            future: Some(future),
            waker,
            state,
        });
    }

    /// Polls the task in `index` if it is still the one of `generation`.
    fn poll_task(&self, index: usize, generation: u64) {
        let (mut future, waker) = {
            let mut slots = self.slots.borrow_mut();
            let Some(Slot {
                generation: g,
                task: Some(task),
            }) = slots.get_mut(index)
            else {
                return;
            };
            if *g != generation {
                return;
            }
            let Some(future) = task.future.take() else {
                return;
            };
            task.state.queued.store(false, Ordering::Release);
            (future, task.waker.clone())
        };
        // No borrow is held while the task runs: it may spawn, set timers,
        // or wake itself.
        bump(&self.counts.polls);
        let done = future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        if done {
            bump(&self.counts.finished);
            drop(future);
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[index];
            slot.task = None;
            slot.generation += 1;
            self.free.borrow_mut().push(index);
        } else if let Some(task) = self.slots.borrow_mut()[index].task.as_mut() {
            task.future = Some(future);
        }
    }

    /// Polls every task that was ready when the round began.
    fn run_ready(&self) {
        let round = self.ready.tasks.lock().len();
        for _ in 0..round {
            let Some((index, generation)) = self.ready.tasks.lock().pop_front() else {
                break;
            };
            self.poll_task(index, generation);
        }
    }

    fn has_ready(&self) -> bool {
        self.ready.main.load(Ordering::Acquire) || !self.ready.tasks.lock().is_empty()
    }

    /// Wakes every timer due at `now`.
    fn fire_timers(&self, now: Instant) {
        let mut due = Vec::new();
        {
            let mut timers = self.timers.borrow_mut();
            while let Some(entry) = timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
        }
        due.into_iter().for_each(Waker::wake);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.borrow().first_key_value().map(|(k, _)| k.0)
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    static CURRENT: core::cell::Cell<*const Executor> = const { core::cell::Cell::new(ptr::null()) };
}

#[cfg(feature = "std")]
fn current() -> *const Executor {
    CURRENT.with(|c| c.get())
}

#[cfg(feature = "std")]
fn set_current(executor: *const Executor) {
    CURRENT.with(|c| c.set(executor))
}

/// Without `std` there is one thread, so one static slot.
#[cfg(not(feature = "std"))]
static CURRENT: core::sync::atomic::AtomicPtr<Executor> =
    core::sync::atomic::AtomicPtr::new(ptr::null_mut());

#[cfg(not(feature = "std"))]
fn current() -> *const Executor {
    CURRENT.load(Ordering::Acquire)
}

#[cfg(not(feature = "std"))]
fn set_current(executor: *const Executor) {
    CURRENT.store(executor.cast_mut(), Ordering::Release)
}

/// Runs `f` with the executor of the `block_on` running on this thread, or
/// returns `None` outside of one.
pub(crate) fn with_current<R>(f: impl FnOnce(&Executor) -> R) -> Option<R> {
    let executor = current();
    if executor.is_null() {
        return None;
    }
    // SAFETY: CURRENT is non-null only while `block_on` runs (on this thread
    // with `std`; on the only thread without), and `block_on` clears it
    // before the executor it points to is dropped.
    Some(f(unsafe { &*executor }))
}

/// Clears CURRENT when `block_on` returns or unwinds.
struct Enter;

impl Drop for Enter {
    fn drop(&mut self) {
        set_current(ptr::null());
    }
}

/// Runs `future` to completion on the current thread, with every task it
/// spawns, blocking in `platform` whenever nothing is ready. Tasks still
/// pending when `future` completes are dropped.
///
/// # Panics
///
/// If called from inside another `block_on`.
pub fn block_on<P: Platform + 'static, F: Future>(platform: &P, future: F) -> F::Output {
    assert!(
        current().is_null(),
        "kiln_rt::block_on called inside a running kiln runtime"
    );
    let ready = Arc::new(ReadyQueue {
        tasks: spin::Mutex::new(VecDeque::new()),
        main: AtomicBool::new(true),
    });
    let counts = Rc::new(Counts::default());
    let executor = Executor {
        platform: platform as &dyn Platform as *const dyn Platform,
        counts: counts.clone(),
        slots: RefCell::new(Vec::new()),
        free: RefCell::new(Vec::new()),
        ready: ready.clone(),
        timers: RefCell::new(BTreeMap::new()),
        now: Cell::new(platform.now()),
    };
    // Unregistered when `block_on` returns.
    let metrics =
        kiln_metrics::register(move |out: &mut kiln_metrics::Exposition| counts.collect(out));
    set_current(&executor);
    let enter = Enter;
    let output = run(&executor, platform, future, &ready);
    // Drop the remaining tasks while timers can still be deregistered.
    let slots = core::mem::take(&mut *executor.slots.borrow_mut());
    drop(slots);
    drop(enter);
    drop(metrics);
    output
}

fn run<F: Future>(
    executor: &Executor,
    platform: &dyn Platform,
    future: F,
    ready: &Arc<ReadyQueue>,
) -> F::Output {
    let mut future = pin!(future);
    let main_waker = Waker::from(Arc::new(MainWaker(ready.clone())));
    let mut busy_rounds = 0u32;
    let counts = &*executor.counts;
    loop {
        if ready.main.swap(false, Ordering::AcqRel) {
            bump(&counts.polls);
            if let Poll::Ready(output) = future.as_mut().poll(&mut Context::from_waker(&main_waker))
            {
                return output;
            }
        }
        executor.run_ready();
        // The executor's time, not the clock: no timer is due before it
        // moves, and it moves only when a wait returns.
        executor.fire_timers(executor.now());
        if executor.has_ready() {
            busy_rounds += 1;
            if busy_rounds >= BUSY_ROUNDS_BEFORE_CHECK {
                busy_rounds = 0;
                bump(&counts.checks);
                platform.wait(Some(Instant::ZERO));
                // Also what bounds the time's staleness while tasks stay
                // busy: it is read again at least every
                // BUSY_ROUNDS_BEFORE_CHECK rounds.
                executor.fire_timers(executor.refresh());
            }
            continue;
        }
        busy_rounds = 0;
        bump(&counts.blocks);
        platform.wait(executor.next_deadline());
        // The one clock read of a wake: what the tasks woken now see.
        executor.fire_timers(executor.refresh());
    }
}
