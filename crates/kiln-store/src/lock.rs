//! A single-threaded async mutex, so that one store operation's device
//! requests are never interleaved with another's.

use alloc::collections::VecDeque;
use core::cell::{RefCell, RefMut};
use core::future::poll_fn;
use core::ops::{Deref, DerefMut};
use core::task::{Poll, Waker};

/// Owns a `T`; [`lock`](Lock::lock) waits until no other task holds it.
#[derive(Debug)]
pub struct Lock<T> {
    value: RefCell<T>,
    waiters: RefCell<VecDeque<Waker>>,
}

/// Access to the value of a [`Lock`]; dropping it lets the next task in.
pub struct Guard<'a, T> {
    value: RefMut<'a, T>,
    waiters: &'a RefCell<VecDeque<Waker>>,
}

impl<T> Lock<T> {
    /// A lock around `value`.
    pub fn new(value: T) -> Lock<T> {
        Lock {
            value: RefCell::new(value),
            waiters: RefCell::new(VecDeque::new()),
        }
    }

    /// Waits for the value, then holds it until the guard is dropped.
    pub async fn lock(&self) -> Guard<'_, T> {
        poll_fn(|cx| match self.value.try_borrow_mut() {
            Ok(value) => Poll::Ready(Guard {
                value,
                waiters: &self.waiters,
            }),
            Err(_) => {
                if let Ok(mut waiters) = self.waiters.try_borrow_mut()
                    && !waiters.iter().any(|w| w.will_wake(cx.waker()))
                {
                    waiters.push_back(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // Wake every waiter: the first to run takes the lock, the others
        // queue again. Simple, and fair enough for a handful of tasks.
        if let Ok(mut waiters) = self.waiters.try_borrow_mut() {
            for w in waiters.drain(..) {
                w.wake();
            }
        }
    }
}
