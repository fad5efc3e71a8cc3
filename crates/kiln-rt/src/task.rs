//! Spawning tasks and waiting for their results.

use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use crate::executor::with_current;

struct JoinState<T> {
    output: Option<T>,
    finished: bool,
    waiter: Option<Waker>,
}

/// A handle to a spawned task. Awaiting it yields the task's output;
/// dropping it lets the task run on, detached.
pub struct JoinHandle<T> {
    state: Rc<RefCell<JoinState<T>>>,
}

impl<T> JoinHandle<T> {
    /// Whether the task has completed.
    pub fn is_finished(&self) -> bool {
        self.state.borrow().finished
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;

    /// # Panics
    ///
    /// If polled again after it returned the output.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self.state.borrow_mut();
        if state.finished {
            let output = state.output.take();
            return Poll::Ready(output.expect("JoinHandle polled after completion"));
        }
        state.waiter = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Spawns `future` as a task on the running executor. It runs concurrently
/// with the caller, on the same thread.
///
/// # Panics
///
/// Outside of [`block_on`](crate::block_on).
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = Rc::new(RefCell::new(JoinState {
        output: None,
        finished: false,
        waiter: None,
    }));
    let task_state = state.clone();
    let task = async move {
        let output = future.await;
        let waiter = {
            let mut state = task_state.borrow_mut();
            state.output = Some(output);
            state.finished = true;
            state.waiter.take()
        };
        if let Some(waker) = waiter {
            waker.wake();
        }
    };
    with_current(|executor| executor.spawn_boxed(Box::pin(task)))
        .expect("kiln_rt::spawn called outside a kiln runtime");
    JoinHandle { state }
}
