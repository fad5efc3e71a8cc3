//! The driver task: the only code that moves frames between the network
//! interface and smoltcp.
//!
//! Each time it is woken (a frame arrived, the interface can send again, a
//! socket handle queued work, or smoltcp's next timer is due) it drains
//! every pending frame from the interface into smoltcp, lets smoltcp send
//! (reading again after at most [`TX_BUDGET`] frames), and goes back to
//! sleep until the earliest of those events. It polls on a timer of its
//! own only while smoltcp reports a deadline that has passed and that a
//! complete round did not move ([`STALE_DEADLINE_RETRY`] apart, never in a
//! loop).

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use kiln_devices::{Instant, NetworkInterface};
use smoltcp::iface::{PollIngressSingleResult, PollResult};

use crate::device::{NicDevice, TxQueue};
use crate::stack::{Shared, State, smol_now};

/// Frames handled per wake-up before the driver lets other tasks run.
const RX_BUDGET: usize = 256;

/// Frames sent per wake-up before the driver reads again. Many connections
/// with open windows can make one egress pass thousands of frames long;
/// the peer's acknowledgements pile up meanwhile, and a tap queues only
/// 1000 frames toward us (its txqueuelen) and drops the rest, SYNs and
/// requests included: those cost the peer a retransmission timeout.
const TX_BUDGET: u64 = 128;

/// How long the driver waits before polling again when smoltcp keeps
/// reporting a deadline that has passed and that a full round did not move
/// (see [`Driver::poll`]). The socket timers hidden behind such a deadline
/// fire at most this late; smoltcp's delayed ACK is of the same order.
const STALE_DEADLINE_RETRY: core::time::Duration = core::time::Duration::from_millis(10);

/// The driver task's future. It never completes: the stack lives as long
/// as the runtime.
pub(crate) struct Driver<N> {
    nic: N,
    shared: Rc<Shared>,
    rx: Vec<u8>,
    tx: TxQueue,
    frame_len: usize,
    timer: Option<kiln_rt::time::Sleep>,
    /// The past deadline smoltcp reported after the last complete round.
    past_deadline: Option<Instant>,
}

// The driver is never pinned structurally: `nic` is only used by
// reference and `Sleep` is `Unpin`.
impl<N> Unpin for Driver<N> {}

impl<N: NetworkInterface> Driver<N> {
    pub(crate) fn new(nic: N, shared: Rc<Shared>, frame_len: usize) -> Driver<N> {
        Driver {
            nic,
            shared,
            rx: vec![0; frame_len],
            tx: TxQueue::default(),
            frame_len,
            timer: None,
            past_deadline: None,
        }
    }

    /// One round: ingress, DHCP, egress, listener and closing upkeep.
    /// Returns when smoltcp wants to be polled next (`None`: only on an
    /// event) and whether the round stopped early with work left.
    fn round(&mut self, cx: &mut Context<'_>) -> (Option<Instant>, bool) {
        let now = smol_now();
        let mut guard = self.shared.state.borrow_mut();
        let state: &mut State = &mut guard;
        let mut stats = state.stats;
        let mut device = NicDevice {
            nic: &self.nic,
            cx,
            rx: &mut self.rx,
            tx: &mut self.tx,
            stats: &mut stats,
            frame_len: self.frame_len,
        };
        state.iface.poll_maintenance(now);
        let mut budget_left = true;
        for n in 0.. {
            if n == RX_BUDGET {
                budget_left = false;
                break;
            }
            match state
                .iface
                .poll_ingress_single(now, &mut device, &mut state.sockets)
            {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => {
                    // A SYN may have taken a listening socket: put another
                    // in its place before the next frame.
                    state.refill_listeners();
                }
            }
        }
        // Router advertisements just processed become addresses here.
        state.iface.poll_maintenance(now);
        let sent_before = device.stats.tx_frames;
        loop {
            state.poll_dhcp();
            if device.stats.tx_frames.wrapping_sub(sent_before) >= TX_BUDGET {
                budget_left = false;
                break;
            }
            // Bounded: each call sends at most one packet per socket.
            if state
                .iface
                .poll_egress(now, &mut device, &mut state.sockets)
                == PollResult::None
            {
                break;
            }
        }
        state.refill_listeners();
        let reap_at = state.reap(now);
        let tx_blocked = device.tx.is_blocked();
        state.stats = stats;
        let poll_at = state.iface.poll_at(now, &state.sockets);
        let next = match (poll_at, reap_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // While the interface refuses frames, its own wake-up is the one
        // that matters: do not spin on "send now".
        let next = next.filter(|_| !tx_blocked).map(|t| {
            let micros = u64::try_from(t.total_micros()).unwrap_or(0);
            Instant::from_nanos(micros.saturating_mul(1000))
        });
        (next, !budget_left)
    }
}

impl<N: NetworkInterface> Future for Driver<N> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.shared.set_driver_waker(cx.waker());
        // A few rounds at most: smoltcp may ask to be polled again at once
        // (a neighbour was just resolved, a window opened).
        for _ in 0..4 {
            let (next, more) = this.round(cx);
            if more {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let Some(deadline) = next else {
                this.timer = None;
                this.past_deadline = None;
                return Poll::Pending;
            };
            let now = kiln_rt::time::now();
            let wake_at = if deadline > now {
                this.past_deadline = None;
                deadline
            } else if this.past_deadline == Some(deadline) {
                // A complete round ran at or after this deadline and smoltcp
                // still reports it: it is stale, and polling again at once
                // would spin. smoltcp 0.14's SLAAC does this: once its three
                // router solicitations went unanswered it keeps the time of
                // a fourth (12 s after start) as its deadline for good, and
                // `Interface::poll_at` returns it whenever any socket has a
                // timer of its own, hiding the sockets' real deadlines.
                // Poll again shortly instead: every round runs whatever
                // socket timers have come due.
                now + STALE_DEADLINE_RETRY
            } else {
                this.past_deadline = Some(deadline);
                continue;
            };
            let timer = match this.timer.take() {
                Some(t) if t.deadline() == wake_at => t,
                _ => kiln_rt::sleep_until(wake_at),
            };
            let timer = this.timer.insert(timer);
            if Pin::new(timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.timer = None;
        }
        // Still due: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
