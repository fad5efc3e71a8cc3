//! The limit on concurrent connections, and which connection gives way
//! when a new one arrives at the limit.
//!
//! Each connection holds a [`Ticket`] while it lives. At the limit, the
//! connection that has been waiting longest for a request (idle between
//! requests, or still receiving a request head: a slow client) is told to
//! close, and the new one takes its place; if every connection is busy
//! answering, the new one is refused (closed at once). So slow or idle
//! clients can never lock out a new client, and a flood of connections
//! never holds more than the limit (plus those told to close and not yet
//! gone, which close at their next turn).

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use core::cell::RefCell;
use core::future::poll_fn;
use core::task::{Poll, Waker};

use kiln_devices::Instant;

#[derive(Default)]
struct Slot {
    /// Since when it waits for a request; `None` while it answers one.
    waiting_since: Option<Instant>,
    /// Told to close.
    kicked: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Inner {
    max: usize,
    next_id: u64,
    slots: BTreeMap<u64, Slot>,
    /// Connections refused at the limit.
    refused: u64,
    /// Connections told to close to make room.
    evicted: u64,
}

/// The connections of one server, at most `max` at a time.
#[derive(Clone)]
pub struct Clients(Rc<RefCell<Inner>>);

/// What [`Clients::counters`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCounters {
    /// Connections open now.
    pub open: usize,
    /// Connections refused because all were busy at the limit.
    pub refused: u64,
    /// Waiting connections closed to make room for new ones.
    pub evicted: u64,
}

impl Clients {
    /// At most `max` connections (at least 1).
    pub fn new(max: usize) -> Clients {
        Clients(Rc::new(RefCell::new(Inner {
            max: max.max(1),
            ..Inner::default()
        })))
    }

    /// A ticket for a new connection, making room if needed; `None` if
    /// every connection is busy answering and the limit is reached.
    pub fn admit(&self) -> Option<Ticket> {
        let mut inner = self.0.borrow_mut();
        let kicked = inner.slots.values().filter(|s| s.kicked).count();
        if inner.slots.len() - kicked >= inner.max {
            let oldest = inner
                .slots
                .iter_mut()
                .filter(|(_, s)| !s.kicked)
                .filter_map(|(_, s)| s.waiting_since.map(|t| (t, s)))
                .min_by_key(|(t, _)| *t);
            match oldest {
                Some((_, slot)) => {
                    slot.kicked = true;
                    if let Some(w) = slot.waker.take() {
                        w.wake();
                    }
                    inner.evicted += 1;
                }
                None => {
                    inner.refused += 1;
                    return None;
                }
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.slots.insert(
            id,
            Slot {
                waiting_since: Some(kiln_rt::time::now()),
                ..Slot::default()
            },
        );
        Some(Ticket {
            clients: self.0.clone(),
            id,
        })
    }

    /// Connections open, refused and evicted so far.
    pub fn counters(&self) -> ClientCounters {
        let inner = self.0.borrow();
        ClientCounters {
            open: inner.slots.len(),
            refused: inner.refused,
            evicted: inner.evicted,
        }
    }
}

/// One connection's place among [`Clients`]; gives it back on drop.
pub struct Ticket {
    clients: Rc<RefCell<Inner>>,
    id: u64,
}

impl Ticket {
    /// A ticket of its own, never told to close (for a connection served
    /// outside any limit).
    pub fn unlimited() -> Ticket {
        let mut inner = Inner {
            max: 1,
            next_id: 1,
            ..Inner::default()
        };
        inner.slots.insert(0, Slot::default());
        Ticket {
            clients: Rc::new(RefCell::new(inner)),
            id: 0,
        }
    }

    /// Says since when the connection waits for a request (`Some`), or
    /// that it is answering one (`None`, which makes it keep its place).
    pub fn waiting(&self, since: Option<Instant>) {
        if let Some(slot) = self.clients.borrow_mut().slots.get_mut(&self.id) {
            slot.waiting_since = since;
        }
    }

    /// Completes once the connection is told to close.
    pub async fn kicked(&self) {
        poll_fn(|cx| {
            let mut inner = self.clients.borrow_mut();
            match inner.slots.get_mut(&self.id) {
                Some(slot) if !slot.kicked => {
                    slot.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            }
        })
        .await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.clients.borrow_mut().slots.remove(&self.id);
    }
}
