//! Neighbour discovery that may change the neighbour cache: only answers
//! to our own solicitations, solicitations of our own addresses (RFC 4861
//! 7.2.3 and 7.2.5), and router advertisements from at most four routers.
//!
//! smoltcp fills its neighbour cache (eight entries) from the link-layer
//! address option of every Neighbour Solicitation and Advertisement it
//! receives, whoever they are for. A burst of them from made-up sources
//! evicts the entries of the hosts we talk to, IPv4 ones included; their
//! traffic then waits on ARP, which smoltcp rate-limits to one request a
//! second for the whole interface while the burst's sources compete for
//! it. This filter drops, before smoltcp sees them, advertisements nobody
//! asked for and solicitations of addresses that are not ours: RFC 4861
//! says to discard both (an unsolicited advertisement "SHOULD be silently
//! discarded" when there is no entry to update; we do not know the cache's
//! entries, so an update of one waits for the next solicitation).
//!
//! smoltcp also empties the whole neighbour cache whenever SLAAC changes
//! the interface's addresses or routes, and every router advertisement
//! from a router it does not know asks for such a change, even when its
//! route table (four entries) is full and nothing changes. 200
//! advertisements from 200 made-up routers emptied the cache 200 times.
//! Advertisements are admitted from the first [`ROUTERS_MAX`] routers
//! heard; a new router takes the place of one silent for
//! [`ROUTER_SILENCE`] (the longest interval RFC 4861 6.2.1 allows between
//! a router's advertisements).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet,
    Ipv6Packet, TcpPacket, TcpRepr,
};

/// Sources of SYNs learnt per driver round, at most.
const LEARN_MAX: usize = 64;

/// Where a SYN came from: the peer's address, port and link-layer
/// address, and our address and port it was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Learnt {
    pub(crate) peer: IpAddress,
    pub(crate) ours: IpAddress,
    pub(crate) mac: EthernetAddress,
    pub(crate) peer_port: u16,
    pub(crate) our_port: u16,
}

/// The sender of `frame` if it is a TCP SYN (without ACK or RST) with
/// valid checksums that smoltcp parses as one (ports not 0, no FIN, well
/// formed options), not fragmented. With `tcp_checked`, the TCP checksum
/// was already checked or vouched for (see [`NdiscGuard::tcp_checked`]).
/// IPv6 packets with extension headers are not looked into.
fn syn_source(frame: &[u8], tcp_checked: bool) -> Option<Learnt> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let mac = eth.src_addr();
    if !mac.is_unicast() {
        return None;
    }
    let (peer, ours, payload): (IpAddress, IpAddress, &[u8]) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if !ip.verify_checksum()
                || ip.next_header() != IpProtocol::Tcp
                || ip.more_frags()
                || ip.frag_offset() != 0
            {
                return None;
            }
            let payload = eth
                .payload()
                .get(ip.header_len().into()..ip.total_len().into())?;
            (ip.src_addr().into(), ip.dst_addr().into(), payload)
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            let end = 40 + usize::from(ip.payload_len());
            (
                ip.src_addr().into(),
                ip.dst_addr().into(),
                eth.payload().get(40..end)?,
            )
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    if !tcp.syn() || tcp.ack() || tcp.rst() || !(tcp_checked || tcp.verify_checksum(&peer, &ours)) {
        return None;
    }
    // The checksum is checked above: what is left is what smoltcp refuses
    // before any socket sees the segment.
    TcpRepr::parse(&tcp, &peer, &ours, &ChecksumCapabilities::ignored()).ok()?;
    Some(Learnt {
        peer,
        ours,
        mac,
        peer_port: tcp.src_port(),
        our_port: tcp.dst_port(),
    })
}

/// Solicited targets remembered, and for how long an answer is accepted.
const SOLICITED_MAX: usize = 32;
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Routers whose advertisements are admitted (smoltcp keeps four routes).
const ROUTERS_MAX: usize = 4;
/// How long a router may stay silent before another takes its place.
const ROUTER_SILENCE: Duration = Duration::from_secs(1800);
const ROUTER_SOLICIT: u8 = 133;
const ROUTER_ADVERT: u8 = 134;

const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
const NEXT_HEADER_ICMPV6: u8 = 58;
const NEIGHBOR_SOLICIT: u8 = 135;
const NEIGHBOR_ADVERT: u8 = 136;
/// Ethernet (14) + IPv6 (40) headers: where ICMPv6 starts.
const ICMP_AT: usize = 54;

/// The type and target of a neighbour solicitation or advertisement
/// without extension headers (for a router advertisement: its source),
/// if `frame` is one.
fn ndisc(frame: &[u8]) -> Option<(u8, [u8; 16])> {
    if frame.get(12..14)? != ETHERTYPE_IPV6 || *frame.get(14 + 6)? != NEXT_HEADER_ICMPV6 {
        return None;
    }
    let kind = *frame.get(ICMP_AT)?;
    let at = match kind {
        NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT => ICMP_AT + 8,
        // The IPv6 source address.
        ROUTER_ADVERT => 14 + 8,
        _ => return None,
    };
    let addr: [u8; 16] = frame.get(at..at + 16)?.try_into().ok()?;
    Some((kind, addr))
}

/// Whether `frame` is a router solicitation without extension headers
/// (as smoltcp's SLAAC sends them).
fn is_router_solicitation(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&ETHERTYPE_IPV6[..])
        && frame.get(14 + 6) == Some(&NEXT_HEADER_ICMPV6)
        && frame.get(ICMP_AT) == Some(&ROUTER_SOLICIT)
}

/// What the filter knows: our addresses and the targets we solicited.
#[derive(Default)]
pub(crate) struct NdiscGuard {
    /// The interface's IPv6 addresses, refreshed every round.
    pub(crate) ours: Vec<[u8; 16]>,
    solicited: VecDeque<([u8; 16], Instant)>,
    /// Routers admitted, with when each was last heard.
    routers: Vec<([u8; 16], Instant)>,
    /// Sources of SYNs received this round, for the driver to teach
    /// smoltcp's neighbour cache (see [`NdiscGuard::admit`]) and to count
    /// those no socket took at the connection limit.
    pub(crate) learnt: Vec<Learnt>,
    /// Frames dropped.
    pub(crate) dropped: u64,
    /// Router solicitations sent, and when the last one was (the driver
    /// wakes smoltcp's SLAAC for the next).
    pub(crate) router_solicitations: u32,
    pub(crate) last_router_solicitation: Option<Instant>,
    /// The TCP checksums of the frames admitted were checked before, or
    /// vouched for by the host (an interface with offloads: `vnet`). The
    /// host's own SYNs then come with `NEEDS_CSUM` and only the
    /// pseudo-header sum in their checksum field, which would not verify.
    pub(crate) tcp_checked: bool,
}

impl NdiscGuard {
    /// Whether smoltcp may see `frame`.
    ///
    /// The source of a SYN is also noted in `learnt`: the driver tells
    /// smoltcp the link-layer address the SYN came from, so that the
    /// SYN-ACK goes back there without neighbour discovery. smoltcp
    /// allows one discovery request a second for the whole interface;
    /// after a flood of SYNs from sources that do not exist, each
    /// half-open connection waited its turn for it, and so did the SYN-ACK
    /// to a real client (10 s without IPv4 after an IPv6 burst). This
    /// teaches nothing ARP could not (smoltcp fills its cache from any ARP
    /// request for our address), and only for SYNs with valid checksums.
    pub(crate) fn admit(&mut self, frame: &[u8], now: Instant) -> bool {
        let Some((kind, target)) = ndisc(frame) else {
            if self.learnt.len() < LEARN_MAX
                && let Some(l) = syn_source(frame, self.tcp_checked)
            {
                self.learnt.push(l);
            }
            return true;
        };
        let ok = if kind == ROUTER_ADVERT {
            self.router(target, now)
        } else if kind == NEIGHBOR_SOLICIT {
            self.ours.contains(&target)
        } else {
            self.solicited
                .iter()
                .any(|(t, at)| *t == target && now < *at + ANSWER_WITHIN)
        };
        if !ok {
            self.dropped += 1;
        }
        ok
    }

    /// Whether an advertisement from `router` is admitted (and notes it).
    fn router(&mut self, router: [u8; 16], now: Instant) -> bool {
        if let Some(r) = self.routers.iter_mut().find(|r| r.0 == router) {
            r.1 = now;
            return true;
        }
        if self.routers.len() < ROUTERS_MAX {
            self.routers.push((router, now));
            return true;
        }
        match self.routers.iter_mut().min_by_key(|r| r.1) {
            Some(r) if now >= r.1 + ROUTER_SILENCE => {
                *r = (router, now);
                true
            }
            _ => false,
        }
    }

    /// Notes a frame we send: a neighbour solicitation makes its answer
    /// welcome; router solicitations are counted.
    pub(crate) fn sent(&mut self, frame: &[u8], now: Instant) {
        if let Some((NEIGHBOR_SOLICIT, target)) = ndisc(frame) {
            self.solicited.retain(|(t, _)| *t != target);
            if self.solicited.len() == SOLICITED_MAX {
                self.solicited.pop_front();
            }
            self.solicited.push_back((target, now));
        } else if is_router_solicitation(frame) {
            self.router_solicitations = self.router_solicitations.saturating_add(1);
            self.last_router_solicitation = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, target: [u8; 16]) -> alloc::vec::Vec<u8> {
        let mut f = alloc::vec![0u8; 78];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6);
        f[20] = NEXT_HEADER_ICMPV6;
        f[ICMP_AT] = kind;
        f[ICMP_AT + 8..ICMP_AT + 24].copy_from_slice(&target);
        f
    }

    #[test]
    fn counts_the_router_solicitations_sent() {
        let mut g = NdiscGuard::default();
        let t0 = Instant::from_secs(1);
        g.sent(&frame(ROUTER_SOLICIT, [0; 16]), t0);
        g.sent(&frame(NEIGHBOR_SOLICIT, [3; 16]), t0);
        g.sent(&frame(ROUTER_ADVERT, [3; 16]), t0);
        g.sent(&frame(ROUTER_SOLICIT, [0; 16])[..ICMP_AT], t0);
        assert_eq!(g.router_solicitations, 1);
        assert_eq!(g.last_router_solicitation, Some(t0));
        // One received is not one sent.
        assert!(g.admit(&frame(ROUTER_SOLICIT, [0; 16]), t0));
        assert_eq!(g.router_solicitations, 1);
    }

    #[test]
    fn admits_only_answers_to_our_solicitations_and_solicitations_of_us() {
        let mut g = NdiscGuard {
            ours: alloc::vec![[1; 16]],
            ..NdiscGuard::default()
        };
        let t0 = Instant::from_secs(1);
        assert!(g.admit(&frame(NEIGHBOR_SOLICIT, [1; 16]), t0));
        assert!(!g.admit(&frame(NEIGHBOR_SOLICIT, [2; 16]), t0));
        assert!(!g.admit(&frame(NEIGHBOR_ADVERT, [3; 16]), t0));
        g.sent(&frame(NEIGHBOR_SOLICIT, [3; 16]), t0);
        assert!(g.admit(
            &frame(NEIGHBOR_ADVERT, [3; 16]),
            t0 + Duration::from_secs(1)
        ));
        assert!(!g.admit(
            &frame(NEIGHBOR_ADVERT, [3; 16]),
            t0 + Duration::from_secs(6)
        ));
        // Anything else passes, truncated frames included.
        assert!(g.admit(&frame(128, [3; 16]), t0));
        assert!(g.admit(&frame(NEIGHBOR_ADVERT, [3; 16])[..40], t0));
        assert_eq!(g.dropped, 3);
    }

    #[test]
    fn admits_advertisements_from_four_routers() {
        let mut g = NdiscGuard::default();
        let ra = |n: u8| {
            let mut f = frame(ROUTER_ADVERT, [0; 16]);
            f[22..38].copy_from_slice(&[n; 16]);
            f
        };
        let t0 = Instant::from_secs(1);
        for n in 0..4 {
            assert!(g.admit(&ra(n), t0));
        }
        assert!(!g.admit(&ra(9), t0));
        assert!(g.admit(&ra(2), t0 + Duration::from_secs(1000)));
        assert!(!g.admit(&ra(7), t0 + Duration::from_secs(1001)));
        // Routers 0, 1 and 3 have been silent for half an hour: new ones
        // take their places, not router 2's.
        for n in [9, 10, 11] {
            assert!(g.admit(&ra(n), t0 + ROUTER_SILENCE));
        }
        assert!(!g.admit(&ra(12), t0 + ROUTER_SILENCE));
    }
    /// An IPv4 SYN from 10.0.0.1 whose TCP checksum field holds only the
    /// pseudo-header sum, as the host sends it with `NEEDS_CSUM`.
    fn partial_syn() -> alloc::vec::Vec<u8> {
        use smoltcp::phy::ChecksumCapabilities;
        use smoltcp::wire::{
            EthernetRepr, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber, checksum,
        };
        let (src, dst) = (Ipv4Address::new(10, 0, 0, 1), Ipv4Address::new(10, 0, 0, 2));
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 8080,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(1),
            ack_number: None,
            window_len: 1024,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut f = alloc::vec![0u8; 14 + 20 + tcp.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let mut packet = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut packet, &ChecksumCapabilities::default());
        let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
        tcp.emit(
            &mut segment,
            &src.into(),
            &dst.into(),
            &ChecksumCapabilities::ignored(),
        );
        let len = tcp.buffer_len() as u32;
        segment.set_checksum(checksum::pseudo_header_v4(&src, &dst, IpProtocol::Tcp, len));
        f
    }

    #[test]
    fn learns_a_syn_whose_checksum_the_host_vouched_for() {
        let t0 = Instant::from_secs(1);
        let mut g = NdiscGuard::default();
        assert!(g.admit(&partial_syn(), t0));
        assert!(g.learnt.is_empty(), "a partial checksum does not verify");
        g.tcp_checked = true;
        assert!(g.admit(&partial_syn(), t0));
        assert_eq!(g.learnt.len(), 1);
        assert_eq!(g.learnt[0].mac, EthernetAddress([2, 0, 0, 0, 0, 1]));
    }
}
