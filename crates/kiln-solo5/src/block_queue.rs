//! The guest's side of kiln's BLOCK_EXCHANGE extension on hvt
//! (`kiln_abi::hvt_ext`): block requests wait in a queue until the
//! runtime has nothing else to run, then one hypercall performs them all.
//!
//! A request is staged in a buffer of its own (a copy of the data to write,
//! or the buffer a read fills), so nothing the tender touches belongs to
//! a future that may be dropped or forgotten. [`BlockQueue::push`] queues
//! one; [`BlockQueue::prepare`] fills the hypercall's argument and table,
//! the platform makes the call, and [`BlockQueue::complete`] moves every
//! request to the finished list with its result, for its future to
//! [`take`](BlockQueue::take). A request is reported done only after the
//! exchange that performed it returned, so a completed write has been
//! handed to the host's `pwrite(2)`, as with BLOCK_WRITE.

use alloc::vec::Vec;
use core::task::Waker;

use kiln_abi::hvt_ext::{
    BLOCK_EXCHANGE_MAX_REQUESTS, BLOCK_OP_READ, BLOCK_OP_WRITE, BlockRequest, HcBlockExchange,
};
use kiln_abi::status::Solo5Result;

/// Requests one exchange carries at most; a full queue is sent at once.
pub const MAX_REQUESTS: usize = 256;
/// Staged bytes after which the queue is sent at once, so that large
/// requests in flight do not pile up copies on the heap.
pub const MAX_BYTES: usize = 1024 * 1024;

const _: () = assert!(MAX_REQUESTS as u64 <= BLOCK_EXCHANGE_MAX_REQUESTS);

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Fill the staged buffer from the device.
    Read,
    /// Write the staged buffer to the device.
    Write,
}

struct Queued {
    id: u64,
    handle: u64,
    offset: u64,
    op: Op,
    buf: Vec<u8>,
    waker: Option<Waker>,
}

struct Finished {
    id: u64,
    ret: i32,
    /// `None` once taken or cancelled.
    buf: Option<Vec<u8>>,
}

/// Queued and finished block requests of every device.
pub struct BlockQueue {
    next_id: u64,
    queued: Vec<Queued>,
    staged: usize,
    finished: Vec<Finished>,
    /// Finished requests not yet taken or cancelled.
    unclaimed: usize,
    table: Vec<BlockRequest>,
    arg: HcBlockExchange,
}

impl Default for BlockQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockQueue {
    /// An empty queue (allocates nothing).
    pub const fn new() -> Self {
        BlockQueue {
            next_id: 0,
            queued: Vec::new(),
            staged: 0,
            finished: Vec::new(),
            unclaimed: 0,
            table: Vec::new(),
            arg: HcBlockExchange {
                requests: 0,
                count: 0,
                done: 0,
            },
        }
    }

    /// Queues a request on device `handle` at byte `offset` with its
    /// staged buffer; returns its id and whether the queue should be sent
    /// now (full, or holding [`MAX_BYTES`]).
    pub fn push(
        &mut self,
        handle: u64,
        offset: u64,
        op: Op,
        buf: Vec<u8>,
        waker: Waker,
    ) -> (u64, bool) {
        let id = self.next_id;
        self.next_id += 1;
        self.staged += buf.len();
        self.queued.push(Queued {
            id,
            handle,
            offset,
            op,
            buf,
            waker: Some(waker),
        });
        let full = self.queued.len() >= MAX_REQUESTS || self.staged >= MAX_BYTES;
        (id, full)
    }

    /// Requests waiting for an exchange.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// The result of request `id` if its exchange is done (removed from
    /// the queue: the status and the staged buffer, which a read filled);
    /// otherwise `waker` is kept to wake when it is. Both lists are in id
    /// order, so each look-up is a binary search.
    pub fn take(&mut self, id: u64, waker: &Waker) -> Option<(i32, Vec<u8>)> {
        if let Ok(i) = self.finished.binary_search_by_key(&id, |f| f.id) {
            let f = self.finished.get_mut(i)?;
            let buf = f.buf.take()?;
            let ret = f.ret;
            self.settle();
            return Some((ret, buf));
        }
        if let Ok(i) = self.queued.binary_search_by_key(&id, |q| q.id)
            && let Some(q) = self.queued.get_mut(i)
            && !q.waker.as_ref().is_some_and(|w| w.will_wake(waker))
        {
            q.waker = Some(waker.clone());
        }
        None
    }

    /// Forgets request `id` (its future was dropped): a queued request is
    /// never sent, a finished one's result is dropped.
    pub fn cancel(&mut self, id: u64) {
        if let Ok(i) = self.queued.binary_search_by_key(&id, |q| q.id) {
            let q = self.queued.remove(i);
            self.staged -= q.buf.len();
        } else if let Ok(i) = self.finished.binary_search_by_key(&id, |f| f.id)
            && let Some(f) = self.finished.get_mut(i)
            && f.buf.take().is_some()
        {
            self.settle();
        }
    }

    /// Counts a finished request taken; empties the list with the last,
    /// and drops the taken entries when they are most of a long list (a
    /// result nobody claims, its future leaked, keeps only its entry).
    fn settle(&mut self) {
        self.unclaimed = self.unclaimed.saturating_sub(1);
        if self.unclaimed == 0 {
            self.finished.clear();
        } else if self.finished.len() > 2 * MAX_REQUESTS && self.finished.len() > 4 * self.unclaimed
        {
            self.finished.retain(|f| f.buf.is_some());
        }
    }

    /// Fills the argument and table for every queued request; the caller
    /// makes BLOCK_EXCHANGE with the returned argument, then calls
    /// [`complete`](Self::complete). `None` when nothing is queued.
    pub fn prepare(&mut self) -> Option<&mut HcBlockExchange> {
        if self.queued.is_empty() {
            return None;
        }
        self.table.clear();
        self.table
            .extend(self.queued.iter_mut().map(|q| BlockRequest {
                handle: q.handle,
                offset: q.offset,
                data: q.buf.as_mut_ptr() as u64,
                len: q.buf.len() as u64,
                op: match q.op {
                    Op::Read => BLOCK_OP_READ,
                    Op::Write => BLOCK_OP_WRITE,
                },
                ret: Solo5Result::Eunspec as i32,
            }));
        self.arg = HcBlockExchange {
            requests: self.table.as_ptr() as u64,
            count: self.table.len() as u64,
            done: 0,
        };
        Some(&mut self.arg)
    }

    /// Takes the OUT fields of the exchange [`prepare`](Self::prepare)
    /// set up: every queued request is finished, with its `ret` (EUNSPEC
    /// unless the tender reports the whole table done). Returns the
    /// wakers of the requests' tasks, to wake once the queue is unlocked.
    pub fn complete(&mut self) -> Vec<Waker> {
        let all = self.arg.done == self.table.len() as u64;
        let mut wakers = Vec::with_capacity(self.queued.len());
        for (q, r) in self.queued.drain(..).zip(self.table.iter()) {
            let ret = if all {
                r.ret
            } else {
                Solo5Result::Eunspec as i32
            };
            self.finished.push(Finished {
                id: q.id,
                ret,
                buf: Some(q.buf),
            });
            self.unclaimed += 1;
            wakers.extend(q.waker);
        }
        self.staged = 0;
        self.table.clear();
        wakers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use alloc::task::Wake;
    use alloc::vec;
    use core::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn an_exchange_carries_every_queued_request_in_order() {
        let mut q = BlockQueue::new();
        let (count, w) = waker();
        let (a, _) = q.push(1, 0, Op::Write, vec![7; 512], w.clone());
        let (b, _) = q.push(1, 512, Op::Read, vec![0; 1024], w.clone());
        assert_eq!(q.take(a, &w), None, "not finished before an exchange");
        let arg = q.prepare().unwrap();
        assert_eq!(arg.count, 2);
        // What the tender does: perform both, set each ret and `done`.
        arg.done = 2;
        let table = q.table.clone();
        assert_eq!(table[0].op, BLOCK_OP_WRITE);
        assert_eq!((table[0].offset, table[0].len), (0, 512));
        assert_eq!(table[1].op, BLOCK_OP_READ);
        assert_eq!((table[1].offset, table[1].len), (512, 1024));
        q.table[0].ret = 0;
        q.table[1].ret = Solo5Result::Einval as i32;
        for w in q.complete() {
            w.wake();
        }
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        assert_eq!(q.queued(), 0);
        assert_eq!(q.take(b, &w).map(|(r, b)| (r, b.len())), Some((2, 1024)));
        assert_eq!(q.take(a, &w).map(|(r, _)| r), Some(0));
        assert!(q.prepare().is_none(), "nothing left to send");
    }

    #[test]
    fn a_tender_that_did_not_finish_the_table_fails_every_request() {
        let mut q = BlockQueue::new();
        let (_, w) = waker();
        let (a, _) = q.push(1, 0, Op::Write, vec![7; 512], w.clone());
        let arg = q.prepare().unwrap();
        assert_eq!(arg.done, 0);
        q.table[0].ret = 0;
        q.complete();
        assert_eq!(
            q.take(a, &w).map(|(r, _)| r),
            Some(Solo5Result::Eunspec as i32)
        );
    }

    #[test]
    fn the_queue_asks_to_be_sent_when_full() {
        let mut q = BlockQueue::new();
        let (_, w) = waker();
        for i in 0..MAX_REQUESTS - 1 {
            assert!(
                !q.push(1, i as u64 * 512, Op::Read, vec![0; 512], w.clone())
                    .1
            );
        }
        assert!(q.push(1, 0, Op::Read, vec![0; 512], w.clone()).1);
        let mut q = BlockQueue::new();
        assert!(q.push(1, 0, Op::Write, vec![0; MAX_BYTES], w.clone()).1);
    }

    #[test]
    fn results_nobody_claims_do_not_pile_up() {
        let mut q = BlockQueue::new();
        let (_, w) = waker();
        // A request whose future was leaked: its result is never taken.
        let (leaked, _) = q.push(1, 0, Op::Read, vec![0; 512], w.clone());
        q.prepare().unwrap().done = 1;
        q.complete();
        for _ in 0..10 {
            let ids: Vec<u64> = (0..MAX_REQUESTS)
                .map(|i| {
                    q.push(1, i as u64 * 512, Op::Read, vec![0; 512], w.clone())
                        .0
                })
                .collect();
            let arg = q.prepare().unwrap();
            arg.done = arg.count;
            q.complete();
            for id in ids {
                assert!(q.take(id, &w).is_some());
            }
            assert!(
                q.finished.len() <= 2 * MAX_REQUESTS + 1,
                "{}",
                q.finished.len()
            );
        }
        assert!(q.take(leaked, &w).is_some());
        assert!(q.finished.is_empty());
    }

    #[test]
    fn a_cancelled_request_is_never_sent() {
        let mut q = BlockQueue::new();
        let (_, w) = waker();
        let (a, _) = q.push(1, 0, Op::Write, vec![7; 512], w.clone());
        let (b, _) = q.push(1, 512, Op::Write, vec![8; 512], w.clone());
        q.cancel(a);
        let arg = q.prepare().unwrap();
        assert_eq!(arg.count, 1);
        arg.done = 1;
        assert_eq!(q.table[0].offset, 512);
        q.table[0].ret = 0;
        q.complete();
        q.cancel(b);
        assert_eq!(q.take(b, &w), None);
        assert!(
            q.finished.is_empty(),
            "the last result claimed empties the list"
        );
    }
}
