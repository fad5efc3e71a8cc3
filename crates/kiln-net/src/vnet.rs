//! The virtio-net header in front of each frame of an interface with
//! offloads (`NetworkInterface::vnet_header`: a Linux tap with
//! `IFF_VNET_HDR` on unix, kiln-virtio's virtio-net device when it
//! negotiated the offloads).
//!
//! Implements `struct virtio_net_hdr` of the virtio 1.2 specification,
//! 5.1.6 "Device Operation" (10 bytes, no `num_buffers`; little-endian,
//! as Linux's tap uses it on x86), for the two offloads the stack uses:
//!
//! - checksum: TCP frames are sent with `NEEDS_CSUM` and the pseudo-header
//!   sum in their checksum field; the host completes or skips the rest.
//!   Frames received with `NEEDS_CSUM` (from the host's own stack: it
//!   vouches for their data) or `DATA_VALID` (checked by the host) are
//!   not checked again; other TCP frames are checked here, since smoltcp's
//!   own TCP checksum is off on such an interface. Partial checksums of
//!   other protocols are completed here for smoltcp to check.
//! - TCP segmentation: a segment smoltcp made larger than the MTU (its
//!   `segmentation-offload`) goes as one frame marked `GSO_TCPV4` or
//!   `GSO_TCPV6` with the MSS smoltcp chose; the host cuts it (only IPv4
//!   segments are offered for now: smoltcp 0.14 drops IPv6 packets larger
//!   than the MTU, see `device`). The host may likewise hand over several
//!   segments coalesced into one.

use smoltcp::wire::{
    EthernetProtocol, IpAddress, IpProtocol, Ipv4Address, Ipv6Address, TcpPacket, checksum,
};

pub(crate) use kiln_devices::net::{VNET_HEADER_LEN, VNET_MAX_FRAME};

const ETH: usize = 14;

/// `flags`: the checksum from `csum_start` on is partial.
const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the host checked the checksums.
const F_DATA_VALID: u8 = 2;
/// `gso_type` values.
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
/// Offset of the checksum in a TCP header.
const TCP_CSUM_OFFSET: u16 = 16;

/// Where a frame's transport header starts, and its protocol and
/// pseudo-header sum.
struct Transport {
    start: usize,
    /// Where the IP packet ends (Ethernet padding follows).
    end: usize,
    protocol: IpProtocol,
    pseudo: u16,
    /// Source and destination, for smoltcp's checksum check.
    addrs: (IpAddress, IpAddress),
}

/// Finds the transport header of an IPv4 packet that is not a fragment,
/// or of an IPv6 packet whose transport header follows the fixed header.
fn transport(frame: &[u8]) -> Option<Transport> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(ETH..)?;
    match EthernetProtocol::from(ethertype) {
        EthernetProtocol::Ipv4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            // More fragments, or an offset: not a whole transport packet.
            if ihl < 20 || total < ihl || total > ip.len() || frag & 0x3fff != 0 {
                return None;
            }
            let protocol = IpProtocol::from(*ip.get(9)?);
            let src = Ipv4Address::from_octets(ip.get(12..16)?.try_into().ok()?);
            let dst = Ipv4Address::from_octets(ip.get(16..20)?.try_into().ok()?);
            let len = (total - ihl) as u32;
            Some(Transport {
                start: ETH + ihl,
                end: ETH + total,
                protocol,
                pseudo: checksum::pseudo_header_v4(&src, &dst, protocol, len),
                addrs: (src.into(), dst.into()),
            })
        }
        EthernetProtocol::Ipv6 => {
            let payload = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            if 40 + payload > ip.len() {
                return None;
            }
            let protocol = IpProtocol::from(*ip.get(6)?);
            let src = Ipv6Address::from_octets(ip.get(8..24)?.try_into().ok()?);
            let dst = Ipv6Address::from_octets(ip.get(24..40)?.try_into().ok()?);
            Some(Transport {
                start: ETH + 40,
                end: ETH + 40 + payload,
                protocol,
                pseudo: checksum::pseudo_header_v6(&src, &dst, protocol, payload as u32),
                addrs: (src.into(), dst.into()),
            })
        }
        _ => None,
    }
}

/// Whether IPv6 header `next` may precede a TCP header (an extension
/// header smoltcp walks).
fn is_ipv6_extension(next: IpProtocol) -> bool {
    matches!(
        next,
        IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts | IpProtocol::Ipv6Frag
    )
}

/// Reads the header in front of a received frame (`buf`: header and
/// frame), completes a partial checksum smoltcp will check, and checks
/// the TCP checksum of a frame the host did not vouch for. Returns where
/// the frame starts, or `None` to drop it (too short, a bad checksum).
pub(crate) fn receive(buf: &mut [u8]) -> Option<usize> {
    let header: [u8; VNET_HEADER_LEN] = buf.get(..VNET_HEADER_LEN)?.try_into().ok()?;
    let frame = &mut buf[VNET_HEADER_LEN..];
    let flags = header[0];
    if flags & F_NEEDS_CSUM != 0 {
        let start = usize::from(u16::from_le_bytes([header[6], header[7]]));
        let offset = usize::from(u16::from_le_bytes([header[8], header[9]]));
        let at = start.checked_add(offset)?;
        if start > frame.len() || at.checked_add(2)? > frame.len() {
            return None;
        }
        // TCP's is not checked by smoltcp on this interface: leave it.
        let is_tcp = transport(frame).is_some_and(|t| t.protocol == IpProtocol::Tcp);
        if !is_tcp {
            let sum = !checksum::data(&frame[start..]);
            frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        return Some(VNET_HEADER_LEN);
    }
    if flags & F_DATA_VALID != 0 {
        return Some(VNET_HEADER_LEN);
    }
    match transport(frame) {
        Some(t) if t.protocol == IpProtocol::Tcp => {
            let packet = TcpPacket::new_checked(&frame[t.start..t.end]).ok()?;
            packet
                .verify_checksum(&t.addrs.0, &t.addrs.1)
                .then_some(VNET_HEADER_LEN)
        }
        // TCP behind IPv6 extension headers: not checked here, and
        // smoltcp would not check it either.
        Some(t) if is_ipv6_extension(t.protocol) => None,
        _ => Some(VNET_HEADER_LEN),
    }
}

/// Fills the header in front of a frame to send (`buf`: room for the
/// header, then the frame smoltcp wrote, with TCP checksums zero): TCP
/// frames get `NEEDS_CSUM` and, when `mss` is given and the payload is
/// longer, segmentation by the host.
pub(crate) fn send(buf: &mut [u8], mss: Option<u16>) {
    let Some((header, frame)) = buf.split_at_mut_checked(VNET_HEADER_LEN) else {
        return;
    };
    header.fill(0);
    let Some(t) = transport(frame).filter(|t| t.protocol == IpProtocol::Tcp) else {
        return;
    };
    let Ok(tcp) = TcpPacket::new_checked(&frame[t.start..t.end]) else {
        return;
    };
    let headers = t.start + usize::from(tcp.header_len());
    let Ok(start) = u16::try_from(t.start) else {
        return;
    };
    let at = t.start + usize::from(TCP_CSUM_OFFSET);
    frame[at..at + 2].copy_from_slice(&t.pseudo.to_be_bytes());
    header[0] = F_NEEDS_CSUM;
    header[6..8].copy_from_slice(&start.to_le_bytes());
    header[8..10].copy_from_slice(&TCP_CSUM_OFFSET.to_le_bytes());
    let mut gso = GSO_NONE;
    if let Some(mss) = mss
        && t.end.saturating_sub(headers) > usize::from(mss)
    {
        gso = if t.addrs.0.version() == smoltcp::wire::IpVersion::Ipv4 {
            GSO_TCPV4
        } else {
            GSO_TCPV6
        };
        header[4..6].copy_from_slice(&mss.to_le_bytes());
    }
    header[1] = gso;
    header[2..4].copy_from_slice(&u16::try_from(headers).unwrap_or(0).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetRepr, Ipv4Packet, Ipv4Repr, TcpControl, TcpRepr,
        TcpSeqNumber, UdpPacket, UdpRepr,
    };

    const SRC: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
    const DST: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

    /// A header's worth of room, then an Ethernet/IPv4 frame with `payload`
    /// over TCP (checksum zero, as smoltcp leaves it) or UDP (complete).
    fn frame(tcp: bool, payload: &[u8]) -> Vec<u8> {
        let caps = ChecksumCapabilities::default();
        let (protocol, len) = if tcp {
            (IpProtocol::Tcp, 20 + payload.len())
        } else {
            (IpProtocol::Udp, 8 + payload.len())
        };
        let ip = Ipv4Repr {
            src_addr: SRC,
            dst_addr: DST,
            next_header: protocol,
            payload_len: len,
            hop_limit: 64,
        };
        let mut buf = vec![0u8; VNET_HEADER_LEN + ETH + 20 + len];
        let mut eth = EthernetFrame::new_unchecked(&mut buf[VNET_HEADER_LEN..]);
        EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let mut packet = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut packet, &caps);
        if tcp {
            let repr = TcpRepr {
                src_port: 5201,
                dst_port: 40000,
                control: TcpControl::None,
                seq_number: TcpSeqNumber(1),
                ack_number: Some(TcpSeqNumber(2)),
                window_len: 1024,
                window_scale: None,
                max_seg_size: None,
                sack_permitted: false,
                sack_ranges: [None; 3],
                timestamp: None,
                payload,
            };
            let mut none = ChecksumCapabilities::ignored();
            none.ipv4 = smoltcp::phy::Checksum::Both;
            repr.emit(
                &mut TcpPacket::new_unchecked(packet.payload_mut()),
                &SRC.into(),
                &DST.into(),
                &none,
            );
        } else {
            UdpRepr {
                src_port: 7,
                dst_port: 7,
            }
            .emit(
                &mut UdpPacket::new_unchecked(packet.payload_mut()),
                &SRC.into(),
                &DST.into(),
                payload.len(),
                |b| b.copy_from_slice(payload),
                &caps,
            );
        }
        buf
    }

    fn tcp_checksum_ok(buf: &[u8]) -> bool {
        let tcp = TcpPacket::new_checked(&buf[VNET_HEADER_LEN + ETH + 20..]).unwrap();
        tcp.verify_checksum(&SRC.into(), &DST.into())
    }

    /// What the host does with `NEEDS_CSUM`: sums from `csum_start` and
    /// stores the complement.
    fn complete(buf: &mut [u8]) {
        let start = usize::from(u16::from_le_bytes([buf[6], buf[7]]));
        let at = start + usize::from(u16::from_le_bytes([buf[8], buf[9]]));
        let frame = &mut buf[VNET_HEADER_LEN..];
        let sum = !checksum::data(&frame[start..]);
        frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn a_tcp_frame_goes_with_a_partial_checksum_the_host_can_complete() {
        let mut buf = frame(true, b"hello, host");
        send(&mut buf, Some(1460));
        assert_eq!(buf[0], F_NEEDS_CSUM);
        assert_eq!(buf[1], GSO_NONE, "short: not segmented");
        assert_eq!(u16::from_le_bytes([buf[6], buf[7]]), 34);
        assert_eq!(u16::from_le_bytes([buf[8], buf[9]]), 16);
        assert_eq!(u16::from_le_bytes([buf[2], buf[3]]), 54);
        complete(&mut buf);
        assert!(tcp_checksum_ok(&buf));
    }

    #[test]
    fn a_long_tcp_segment_is_marked_for_segmentation() {
        let payload = vec![0x5a; 4000];
        let mut buf = frame(true, &payload);
        send(&mut buf, Some(1448));
        assert_eq!(buf[1], GSO_TCPV4);
        assert_eq!(u16::from_le_bytes([buf[4], buf[5]]), 1448);
        complete(&mut buf);
        assert!(tcp_checksum_ok(&buf));
    }

    #[test]
    fn other_frames_go_without_offloads() {
        let mut buf = frame(false, b"datagram");
        buf[..VNET_HEADER_LEN].fill(0xee);
        send(&mut buf, Some(1448));
        assert_eq!(&buf[..VNET_HEADER_LEN], &[0; VNET_HEADER_LEN]);
    }

    #[test]
    fn received_frames_are_checked_unless_the_host_vouches() {
        let mut good = frame(true, b"data");
        send(&mut good, None);
        complete(&mut good);
        good[..VNET_HEADER_LEN].fill(0);
        assert_eq!(receive(&mut good.clone()), Some(VNET_HEADER_LEN));
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(receive(&mut bad.clone()), None, "a corrupt segment");
        bad[0] = F_DATA_VALID;
        assert_eq!(
            receive(&mut bad),
            Some(VNET_HEADER_LEN),
            "checked by the host"
        );
        // Partial, from the host's own stack: passed on as it is.
        let mut partial = frame(true, b"data");
        send(&mut partial, None);
        let copy = partial.clone();
        assert_eq!(receive(&mut partial), Some(VNET_HEADER_LEN));
        assert_eq!(partial, copy);
    }

    #[test]
    fn a_partial_udp_checksum_is_completed_for_smoltcp() {
        let mut buf = frame(false, b"datagram!");
        let udp = VNET_HEADER_LEN + ETH + 20;
        let pseudo = checksum::pseudo_header_v4(&SRC, &DST, IpProtocol::Udp, 17);
        buf[udp + 6..udp + 8].copy_from_slice(&pseudo.to_be_bytes());
        buf[0] = F_NEEDS_CSUM;
        buf[6..8].copy_from_slice(&34u16.to_le_bytes());
        buf[8..10].copy_from_slice(&6u16.to_le_bytes());
        assert_eq!(receive(&mut buf), Some(VNET_HEADER_LEN));
        let p = UdpPacket::new_checked(&buf[udp..]).unwrap();
        assert!(p.verify_checksum(&SRC.into(), &DST.into()));
    }

    #[test]
    fn malformed_headers_are_dropped_not_trusted() {
        assert_eq!(receive(&mut [0u8; 5]), None);
        let mut buf = frame(false, b"x");
        buf[0] = F_NEEDS_CSUM;
        buf[6..8].copy_from_slice(&0xfff0u16.to_le_bytes());
        assert_eq!(receive(&mut buf), None, "csum_start past the end");
        let mut buf = frame(false, b"x");
        buf[0] = F_NEEDS_CSUM;
        buf[6..8].copy_from_slice(&40u16.to_le_bytes());
        buf[8..10].copy_from_slice(&0xffffu16.to_le_bytes());
        assert_eq!(receive(&mut buf), None, "csum_offset past the end");
        // A truncated IPv4 header or TCP header.
        let mut buf = frame(true, b"");
        buf.truncate(VNET_HEADER_LEN + ETH + 30);
        assert_eq!(
            receive(&mut buf),
            Some(VNET_HEADER_LEN),
            "not TCP: smoltcp drops it"
        );
        send(&mut buf, Some(1));
    }
}
