//! virtio-net's checksum and segmentation offloads: which features kiln
//! takes from what a device offers, and the header between the device's
//! buffers and the stack's frames (virtio 1.2, 5.1.3 "Feature bits",
//! 5.1.3.1 "Feature bit requirements", 5.1.6 "Device Operation").
//!
//! kiln takes the offloads only as the set kiln-net's `vnet` module
//! drives (the contract of `NetworkInterface::vnet_header`): the device
//! completes partial checksums (`CSUM`) and cuts TCP segments
//! (`HOST_TSO4`), and may hand over partial checksums (`GUEST_CSUM`) and
//! segments of up to 64 KiB (`GUEST_TSO4`). A device that offers less
//! gets none of them and plain frames, as before. IPv6 segmentation
//! (`HOST_TSO6`, `GUEST_TSO6`) comes with the set when offered. Without
//! `MRG_RXBUF` (not asked for) the driver posts receive buffers that hold
//! a whole 64 KiB segment, as the specification requires of a driver with
//! `GUEST_TSO4` (5.1.6.3.1).
//!
//! The stack's frames start with the 10-byte header (`kiln_devices::net::
//! VNET_HEADER_LEN`); a virtio 1 device's with 12 (`num_buffers` after
//! it, which is 1 without `MRG_RXBUF` on receive and ignored on send).
//! The header's fields are the same; kiln-net reads and writes them.

use kiln_devices::net::VNET_HEADER_LEN;

/// The device completes a partial checksum (`VIRTIO_NET_F_CSUM`).
pub const CSUM: u64 = 1 << 0;
/// The driver takes frames with a partial or checked checksum
/// (`VIRTIO_NET_F_GUEST_CSUM`).
pub const GUEST_CSUM: u64 = 1 << 1;
/// The driver takes TCP segments over IPv4 and IPv6 larger than the MTU.
pub const GUEST_TSO4: u64 = 1 << 7;
pub const GUEST_TSO6: u64 = 1 << 8;
/// The device cuts TCP segments over IPv4 and IPv6.
pub const HOST_TSO4: u64 = 1 << 11;
pub const HOST_TSO6: u64 = 1 << 12;

/// The offloads kiln asks for.
pub const ASKED: u64 = CSUM | GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | HOST_TSO4 | HOST_TSO6;
/// Those it needs all of to use any.
pub const NEEDED: u64 = CSUM | GUEST_CSUM | GUEST_TSO4 | HOST_TSO4;

/// The features to write back when `negotiated` is what the device
/// offered of those kiln asks for: the offloads only when all of
/// [`NEEDED`] are there (else plain frames), other features unchanged.
pub const fn consistent(negotiated: u64) -> u64 {
    if negotiated & NEEDED == NEEDED {
        negotiated
    } else {
        negotiated & !ASKED
    }
}

/// Whether the features written to the device turn the offloads on.
pub const fn enabled(features: u64) -> bool {
    features & NEEDED == NEEDED
}

/// Copies a frame of the stack's (`frame`: the 10-byte header, then the
/// Ethernet frame) into a device buffer whose header is `header` bytes
/// (10 or 12; the bytes past the 10 zeroed); the buffer's length used, or
/// `None` if `buf` is too short or `frame` has no header.
pub fn to_device(frame: &[u8], header: usize, buf: &mut [u8]) -> Option<usize> {
    let (head, body) = frame.split_at_checked(VNET_HEADER_LEN)?;
    let len = header.checked_add(body.len())?;
    let extra = header.checked_sub(VNET_HEADER_LEN)?;
    let out = buf.get_mut(..len)?;
    let (h, rest) = out.split_at_mut(VNET_HEADER_LEN);
    h.copy_from_slice(head);
    let (pad, b) = rest.split_at_mut(extra);
    pad.fill(0);
    b.copy_from_slice(body);
    Some(len)
}

/// Has `fill` write a frame of the stack's of `len` bytes (with
/// `vnet`, the 10-byte header, then the Ethernet frame; else the
/// Ethernet frame alone) straight into a device buffer whose header is
/// `header` bytes (10 or 12), leaving `buf` as [`to_device`] (or the
/// zeroed header and the frame, without `vnet`) would have: the buffer's
/// length used. `None`, without calling `fill`, if `buf` is too short or
/// the frame too short for its header.
pub fn fill_device(
    buf: &mut [u8],
    header: usize,
    vnet: bool,
    len: usize,
    fill: &mut dyn FnMut(&mut [u8]),
) -> Option<usize> {
    // The stack's header ends where the device's does: only its first
    // 10 bytes move (back over the 2 bytes of `num_buffers`).
    let head = if vnet { VNET_HEADER_LEN } else { 0 };
    let at = header.checked_sub(head)?;
    if len < head {
        return None;
    }
    let used = at.checked_add(len)?;
    fill(buf.get_mut(at..used)?);
    if vnet {
        buf.copy_within(at..at + VNET_HEADER_LEN, 0);
        buf[VNET_HEADER_LEN..header].fill(0);
    } else {
        buf[..header].fill(0);
    }
    Some(used)
}

/// Copies what a device used of a receive buffer (`used`: its `header`
/// bytes, then the frame) into the stack's buffer as the 10-byte header
/// and the frame; the length written, or `None` if `used` is shorter than
/// its header or `buf` too short.
pub fn from_device(used: &[u8], header: usize, buf: &mut [u8]) -> Option<usize> {
    let head = used.get(..VNET_HEADER_LEN)?;
    let body = used.get(header.max(VNET_HEADER_LEN)..)?;
    let len = VNET_HEADER_LEN.checked_add(body.len())?;
    let out = buf.get_mut(..len)?;
    let (h, b) = out.split_at_mut(VNET_HEADER_LEN);
    h.copy_from_slice(head);
    b.copy_from_slice(body);
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's virtio-net with a tap backend offers all of them; with
    /// `csum=off,guest_csum=off,host_tso4=off,guest_tso4=off` none.
    #[test]
    fn offloads_come_as_a_set_or_not_at_all() {
        let other = 1 << 5 | 1 << 32;
        assert_eq!(consistent(ASKED | other), ASKED | other);
        assert!(enabled(consistent(ASKED | other)));
        assert_eq!(consistent(NEEDED), NEEDED, "no IPv6 segmentation");
        assert!(enabled(NEEDED));
        assert_eq!(consistent(other), other);
        assert!(!enabled(consistent(other)));
        // One missing (here the host's segmentation): none of them.
        for missing in [CSUM, GUEST_CSUM, GUEST_TSO4, HOST_TSO4] {
            let offered = (ASKED & !missing) | other;
            assert_eq!(consistent(offered), other, "{missing:#x}");
            assert!(!enabled(consistent(offered)));
        }
    }

    #[test]
    fn a_virtio_1_header_gains_num_buffers_on_the_way_out() {
        let frame = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xaa, 0xbb];
        let mut buf = [0xee; 16];
        assert_eq!(to_device(&frame, 12, &mut buf), Some(14));
        assert_eq!(buf[..14], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0, 0xaa, 0xbb]);
        let mut buf = [0xee; 16];
        assert_eq!(to_device(&frame, 10, &mut buf), Some(12));
        assert_eq!(buf[..12], frame);
        assert_eq!(to_device(&frame, 12, &mut [0; 13]), None, "too short");
        assert_eq!(to_device(&frame[..9], 12, &mut buf), None, "no header");
    }

    /// Built in place over stale bytes, a frame leaves the device buffer
    /// as the copying path (`to_device`, or the zeroed header and the
    /// frame) leaves it.
    #[test]
    fn a_frame_filled_in_place_is_laid_out_as_a_copied_one() {
        let frame = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xaa, 0xbb, 0xcc];
        let mut write = |out: &mut [u8]| {
            assert_eq!(out.len(), frame.len());
            out.copy_from_slice(&frame);
        };
        for header in [10, 12] {
            let mut copied = [0xee; 32];
            let n = to_device(&frame, header, &mut copied).unwrap();
            let mut filled = [0xee; 32];
            let m = fill_device(&mut filled, header, true, frame.len(), &mut write);
            assert_eq!(m, Some(n), "header {header}");
            assert_eq!(filled[..n], copied[..n], "header {header}");
            // Without the offloads: the zeroed header, then the frame.
            let mut filled = [0xee; 32];
            let m = fill_device(&mut filled, header, false, frame.len(), &mut write);
            assert_eq!(m, Some(header + frame.len()));
            assert!(filled[..header].iter().all(|&b| b == 0));
            assert_eq!(filled[header..header + frame.len()], frame);
        }
    }

    #[test]
    fn a_frame_that_does_not_fit_is_not_filled() {
        let mut never = |_: &mut [u8]| panic!("filled");
        let mut buf = [0; 20];
        assert_eq!(fill_device(&mut buf, 12, true, 9, &mut never), None);
        assert_eq!(fill_device(&mut buf, 12, true, 19, &mut never), None);
        assert_eq!(fill_device(&mut buf, 12, false, 9, &mut never), None);
        assert_eq!(fill_device(&mut buf, 8, true, 12, &mut never), None);
        assert_eq!(fill_device(&mut buf, 12, true, 18, &mut |_| {}), Some(20));
    }

    #[test]
    fn a_virtio_1_header_loses_num_buffers_on_the_way_in() {
        let used = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 0, 0xaa, 0xbb];
        let mut buf = [0xee; 16];
        assert_eq!(from_device(&used, 12, &mut buf), Some(12));
        assert_eq!(buf[..12], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xaa, 0xbb]);
        assert_eq!(from_device(&used, 10, &mut buf), Some(14));
        assert_eq!(buf[..14], used);
        assert_eq!(from_device(&used[..11], 12, &mut buf), None);
        assert_eq!(from_device(&used, 12, &mut [0; 11]), None);
    }
}
