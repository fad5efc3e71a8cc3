//! The driver task: the only code that moves frames between the network
//! interface and smoltcp.
//!
//! Each time it is woken (a frame arrived, the interface can send again, a
//! socket handle queued work, or smoltcp's next timer is due) it drains
//! every pending frame from the interface into smoltcp, lets smoltcp send
//! (reading again after at most [`TX_BUDGET`] frames), and goes back to
//! sleep until the earliest of those events. It never polls on a timer of
//! its own.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use kiln_devices::{Instant, NetworkInterface};
use smoltcp::iface::{self, Interface, PollIngressSingleResult, PollResult, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr,
    HardwareAddress, IPV6_HEADER_LEN, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv6Packet,
    Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

use crate::device::{NicDevice, TxQueue};
use crate::guard::{Learnt, NdiscGuard};
use crate::stack::{Shared, State, smol_now};

/// Frames handled per wake-up before the driver lets other tasks run.
const RX_BUDGET: usize = 256;

/// Frames sent per wake-up before the driver reads again. Many connections
/// with open windows can make one egress pass thousands of frames long;
/// the peer's acknowledgements pile up meanwhile, and a tap queues only
/// 1000 frames toward us (its txqueuelen) and drops the rest, SYNs and
/// requests included: those cost the peer a retransmission timeout.
const TX_BUDGET: u64 = 128;

/// The driver task's future. It never completes: the stack lives as long
/// as the runtime.
pub(crate) struct Driver<N> {
    nic: N,
    shared: Rc<Shared>,
    rx: Vec<u8>,
    tx: TxQueue,
    frame_len: usize,
    timer: Option<kiln_rt::time::Sleep>,
    guard: NdiscGuard,
    /// No sockets: the neighbours the driver teaches smoltcp (learnt from
    /// SYNs) reach no socket.
    no_sockets: SocketSet<'static>,
    /// An interface like the stack's but without SLAAC, that never sees a
    /// frame: the sockets' deadlines are read through it (see
    /// [`next_deadline`]).
    deadlines: Interface,
    /// Rounds in a row that did nothing although a deadline had passed.
    stale_rounds: u32,
}

/// Router solicitations smoltcp 0.14's SLAAC sends
/// (`MAX_RTR_SOLICITATIONS`), and the time between them
/// (`RTR_SOLICITATION_INTERVAL`).
const SLAAC_SOLICITATIONS: u32 = 3;
const SLAAC_INTERVAL: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(4);

/// A device with an interface's capabilities that neither receives nor
/// sends.
struct Inert(smoltcp::phy::DeviceCapabilities);

impl smoltcp::phy::Device for Inert {
    type RxToken<'a> = OneRx;
    type TxToken<'a> = NoTx;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(OneRx, NoTx)> {
        None
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<NoTx> {
        None
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        self.0.clone()
    }
}

/// Rounds in a row that may find a past deadline and do nothing before the
/// driver stops believing it (see [`DeviceStats::stale_deadlines`]).
///
/// [`DeviceStats::stale_deadlines`]: crate::DeviceStats::stale_deadlines
const STALE_ROUNDS: u32 = 8;

/// How long the driver waits on a deadline it does not believe.
const STALE_WAIT_NANOS: u64 = 1_000_000;

/// The frame that tells smoltcp where `l.peer` is: an ARP reply or a
/// neighbour advertisement from it, to us.
fn neighbour_frame(iface: &Interface, l: &Learnt) -> alloc::vec::Vec<u8> {
    let HardwareAddress::Ethernet(our_mac) = iface.hardware_addr();
    let eth = |ethertype, len: usize| {
        let mut frame = vec![0; 14 + len];
        EthernetRepr {
            src_addr: l.mac,
            dst_addr: our_mac,
            ethertype,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
        frame
    };
    match (l.peer, l.ours) {
        (IpAddress::Ipv4(peer), IpAddress::Ipv4(ours)) => {
            let arp = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: l.mac,
                source_protocol_addr: peer,
                target_hardware_addr: our_mac,
                target_protocol_addr: ours,
            };
            let mut frame = eth(EthernetProtocol::Arp, arp.buffer_len());
            arp.emit(&mut ArpPacket::new_unchecked(&mut frame[14..]));
            frame
        }
        (IpAddress::Ipv6(peer), IpAddress::Ipv6(ours)) => {
            let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
                target_addr: peer,
                lladdr: Some(RawHardwareAddress::from(HardwareAddress::Ethernet(l.mac))),
            });
            let ip = Ipv6Repr {
                src_addr: peer,
                dst_addr: ours,
                next_header: IpProtocol::Icmpv6,
                payload_len: icmp.buffer_len(),
                hop_limit: 255,
            };
            let mut frame = eth(EthernetProtocol::Ipv6, IPV6_HEADER_LEN + icmp.buffer_len());
            let mut packet = Ipv6Packet::new_unchecked(&mut frame[14..]);
            ip.emit(&mut packet);
            icmp.emit(
                &peer,
                &ours,
                &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
                &ChecksumCapabilities::default(),
            );
            frame
        }
        // A SYN's addresses are of one family.
        _ => alloc::vec::Vec::new(),
    }
}

/// A device that holds one frame to receive and sends nothing.
struct OneFrame(Option<alloc::vec::Vec<u8>>);

struct OneRx(alloc::vec::Vec<u8>);
struct NoTx;

impl smoltcp::phy::RxToken for OneRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for NoTx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        f(&mut vec![0; len])
    }
}

impl smoltcp::phy::Device for OneFrame {
    type RxToken<'a> = OneRx;
    type TxToken<'a> = NoTx;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(OneRx, NoTx)> {
        self.0.take().map(|f| (OneRx(f), NoTx))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<NoTx> {
        None
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        let mut caps = smoltcp::phy::DeviceCapabilities::default();
        caps.medium = smoltcp::phy::Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

// The driver is never pinned structurally: `nic` is only used by
// reference and `Sleep` is `Unpin`.
impl<N> Unpin for Driver<N> {}

impl<N: NetworkInterface> Driver<N> {
    pub(crate) fn new(nic: N, shared: Rc<Shared>, frame_len: usize) -> Driver<N> {
        // With offloads, frames may be up to 64 KiB, behind a header.
        let rx_len = if nic.vnet_header() {
            crate::vnet::VNET_HEADER_LEN + crate::vnet::VNET_MAX_FRAME.max(frame_len)
        } else {
            frame_len
        };
        // `vnet::receive` drops TCP frames with a bad checksum the host
        // did not vouch for.
        let mut guard = NdiscGuard::default();
        guard.tcp_checked = nic.vnet_header();
        let connections = shared.state.borrow().buffers.max_connections;
        let deadlines = {
            let state = shared.state.borrow();
            // SLAAC is off in `iface::Config::new`.
            let config = iface::Config::new(state.iface.hardware_addr());
            let caps = crate::device::capabilities(frame_len, nic.vnet_header());
            Interface::new(config, &mut Inert(caps), smol_now())
        };
        Driver {
            nic,
            shared,
            rx: vec![0; rx_len],
            tx: TxQueue::new(connections),
            frame_len,
            timer: None,
            guard,
            no_sockets: SocketSet::new(alloc::vec::Vec::new()),
            deadlines,
            stale_rounds: 0,
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
        let before = (stats.rx_frames, stats.tx_frames);
        self.guard.ours.clear();
        self.guard.ours.extend(
            state
                .iface
                .ip_addrs()
                .iter()
                .filter_map(|c| match c.address() {
                    IpAddress::Ipv6(a) => Some(a.octets()),
                    IpAddress::Ipv4(_) => None,
                }),
        );
        let mut device = NicDevice {
            nic: &self.nic,
            cx,
            rx: &mut self.rx,
            tx: &mut self.tx,
            stats: &mut stats,
            frame_len: self.frame_len,
            vnet: self.nic.vnet_header(),
            guard: &mut self.guard,
            now,
            more: false,
        };
        state.iface.poll_maintenance(now);
        let mut budget_left = true;
        for n in 0.. {
            if n == RX_BUDGET {
                budget_left = false;
                break;
            }
            // Where the interface holds the frame when it can lend it
            // (no copy into `rx`), else copied into `rx`.
            let lent = device.receive_lent(&mut |lent| {
                state
                    .iface
                    .poll_ingress_single(now, lent, &mut state.sockets)
            });
            let result = match lent {
                Some(result) => result,
                None => state
                    .iface
                    .poll_ingress_single(now, &mut device, &mut state.sockets),
            };
            if result == PollIngressSingleResult::None {
                break;
            }
            // Whether a socket took the SYN just received, asked before
            // the listeners are refilled.
            for l in &device.guard.learnt {
                state.count_refused_syn(l);
            }
            if result == PollIngressSingleResult::SocketStateChanged {
                // A SYN may have taken a listening socket: put another in
                // its place before the next frame.
                state.refill_listeners(now);
            }
            // Where the SYNs just received came from (see `guard`).
            for l in device.guard.learnt.drain(..) {
                let frame = neighbour_frame(&state.iface, &l);
                let mut one = OneFrame(Some(frame));
                let _ = state
                    .iface
                    .poll_ingress_single(now, &mut one, &mut self.no_sockets);
            }
        }
        if device.more {
            budget_left = false;
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
        // Reclaimed sockets make room for listening ones.
        let reap_at = state.reap(now);
        state.refill_listeners(now);
        // Frames queued behind one the interface refused go out only
        // through `transmit`, which smoltcp calls only for a socket with
        // something to send: an ACK that ingress queued behind them, with
        // the interface's wake-up already spent, would wait for the next
        // frame or timer, and while the queue is blocked there is no
        // timer (below). Offering the queue once more either empties it
        // or leaves the interface holding this task's waker.
        device.tx.flush(device.nic, device.cx, device.stats);
        let tx_blocked = device.tx.is_blocked();
        let did_something = (stats.rx_frames, stats.tx_frames) != before;
        // Counted by the listeners during this round, not by the device.
        stats.syn_dropped = state.stats.syn_dropped;
        stats.tcp_refused = state.stats.tcp_refused;
        state.stats = stats;
        let next = [
            next_deadline(&mut self.deadlines, &self.guard, now, &state.sockets),
            reap_at,
        ]
        .into_iter()
        .flatten()
        .min();
        // While the interface refuses frames, its own wake-up is the one
        // that matters: do not spin on "send now".
        let mut next = next.filter(|_| !tx_blocked).map(|t| {
            let micros = u64::try_from(t.total_micros()).unwrap_or(0);
            Instant::from_nanos(micros.saturating_mul(1000))
        });
        // A last line of defence: a deadline that keeps being in the past
        // while rounds do nothing is not believed (and counted), so that a
        // timer smoltcp never clears costs a wake-up a millisecond, not a
        // CPU.
        let now_rt = Instant::from_nanos(
            u64::try_from(now.total_micros())
                .unwrap_or(0)
                .saturating_mul(1000),
        );
        match next {
            Some(t) if t <= now_rt && !did_something && budget_left => {
                self.stale_rounds += 1;
                if self.stale_rounds >= STALE_ROUNDS {
                    state.stats.stale_deadlines += 1;
                    next = Some(Instant::from_nanos(
                        now_rt.as_nanos().saturating_add(STALE_WAIT_NANOS),
                    ));
                }
            }
            _ => self.stale_rounds = 0,
        }
        (next, !budget_left)
    }
}

/// When smoltcp wants to be polled next: the sockets' earliest
/// deadline, or SLAAC's next router solicitation.
///
/// Not `Interface::poll_at` of the stack's interface: smoltcp 0.14
/// folds SLAAC's deadline into it with `Option::min`, where `None` is
/// the smallest. After its three solicitations went unanswered, SLAAC
/// keeps the time of a fourth, which never comes, as its deadline (12 s
/// after start): past for ever, it stood in for every socket's and the
/// driver polled without pause while any socket had a timer. Had a
/// router advertisement ended discovery, SLAAC's deadline would be
/// `None` while it holds no prefix or route, and so would the
/// interface's: no socket's timer would wake the driver. The sockets'
/// deadlines are read through an interface without SLAAC instead, and
/// SLAAC's solicitations are timed here. The expiry of a prefix or
/// route it learnt wakes nobody: every round starts with
/// `poll_maintenance`, which drops them before anything is sent.
fn next_deadline(
    deadlines: &mut Interface,
    guard: &NdiscGuard,
    now: smoltcp::time::Instant,
    sockets: &SocketSet<'static>,
) -> Option<smoltcp::time::Instant> {
    let sockets = deadlines.poll_at(now, sockets);
    let solicitation = guard
        .last_router_solicitation
        .filter(|_| guard.router_solicitations < SLAAC_SOLICITATIONS)
        .map(|t| t + SLAAC_INTERVAL);
    [sockets, solicitation].into_iter().flatten().min()
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
                return Poll::Pending;
            };
            if deadline > kiln_rt::time::now() {
                let timer = match this.timer.take() {
                    Some(t) if t.deadline() == deadline => t,
                    _ => kiln_rt::sleep_until(deadline),
                };
                let timer = this.timer.insert(timer);
                if Pin::new(timer).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.timer = None;
            }
        }
        // Still due: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
