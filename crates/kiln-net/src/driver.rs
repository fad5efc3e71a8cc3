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
use smoltcp::iface::{Interface, PollIngressSingleResult, PollResult, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IPV6_HEADER_LEN, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr,
    IpProtocol, Ipv6Address, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr, NdiscRouterFlags,
    RawHardwareAddress,
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
    /// No sockets: `Interface::poll_at` over it gives the interface's own
    /// deadline (SLAAC's).
    no_sockets: SocketSet<'static>,
    /// Rounds in a row that did nothing although a deadline had passed.
    stale_rounds: u32,
}

/// Rounds in a row that may find a past deadline and do nothing before the
/// driver stops believing it (see [`DeviceStats::stale_deadlines`]).
///
/// [`DeviceStats::stale_deadlines`]: crate::DeviceStats::stale_deadlines
const STALE_ROUNDS: u32 = 8;

/// How long the driver waits on a deadline it does not believe.
const STALE_WAIT_NANOS: u64 = 1_000_000;

/// A router advertisement with a router lifetime of 0 and no options,
/// from our own link-local address to all nodes: it tells smoltcp's SLAAC
/// nothing but that router discovery is over.
fn end_of_router_discovery(iface: &Interface) -> Option<alloc::vec::Vec<u8>> {
    let HardwareAddress::Ethernet(mac) = iface.hardware_addr();
    let src = iface.ip_addrs().iter().find_map(|c| match c {
        IpCidr::Ipv6(c) if c.address().is_unicast_link_local() => Some(c.address()),
        _ => None,
    })?;
    let dst = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert {
        hop_limit: 0,
        flags: NdiscRouterFlags::empty(),
        router_lifetime: smoltcp::time::Duration::ZERO,
        reachable_time: smoltcp::time::Duration::ZERO,
        retrans_time: smoltcp::time::Duration::ZERO,
        lladdr: None,
        mtu: None,
        prefix_info: None,
    });
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let mut frame = vec![0; 14 + IPV6_HEADER_LEN + icmp.buffer_len()];
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
        ethertype: EthernetProtocol::Ipv6,
    }
    .emit(&mut eth);
    let mut packet = Ipv6Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut packet);
    icmp.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    Some(frame)
}

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
        Driver {
            nic,
            shared,
            rx: vec![0; rx_len],
            tx: TxQueue::new(connections),
            frame_len,
            timer: None,
            guard,
            no_sockets: SocketSet::new(alloc::vec::Vec::new()),
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
            match state
                .iface
                .poll_ingress_single(now, &mut device, &mut state.sockets)
            {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => {
                    // A SYN may have taken a listening socket: put another
                    // in its place before the next frame.
                    state.refill_listeners(now);
                }
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
        // smoltcp 0.14's SLAAC sends its three router solicitations, then
        // stays in its discovery phase with the time of a fourth, which
        // never comes, as its deadline: `Interface::poll_at` returns that
        // past instant for ever once any socket has a timer, and the
        // driver would poll without pause. A router advertisement ends the
        // phase; if no router sent one, hand smoltcp one that changes
        // nothing else (lifetime 0, no prefix).
        if !tx_blocked
            && state
                .iface
                .poll_at(now, &self.no_sockets)
                .is_some_and(|t| t <= now)
            && let Some(frame) = end_of_router_discovery(&state.iface)
        {
            let mut one = OneFrame(Some(frame));
            let _ = state
                .iface
                .poll_ingress_single(now, &mut one, &mut self.no_sockets);
            state.iface.poll_maintenance(now);
        }
        let did_something = (stats.rx_frames, stats.tx_frames) != before;
        // Counted by the listeners during this round, not by the device.
        stats.syn_dropped = state.stats.syn_dropped;
        stats.tcp_refused = state.stats.tcp_refused;
        state.stats = stats;
        let poll_at = state.iface.poll_at(now, &state.sockets);
        let next = match (poll_at, reap_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
