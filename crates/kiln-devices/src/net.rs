//! Network interfaces: devices that send and receive Ethernet frames.

use core::fmt;
use core::future::{Future, poll_fn};
use core::task::{Context, Poll};

/// An Ethernet (EUI-48) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// Parses `aa:bb:cc:dd:ee:ff` (hex digits in either case).
    pub fn parse(s: &str) -> Option<MacAddress> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next()?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(MacAddress(out))
    }

    /// Whether this is a unicast address (the multicast bit is clear).
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a frame could not be sent or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The frame is longer than the interface's MTU plus the Ethernet header.
    #[error("frame of {len} bytes exceeds the interface's limit of {max}")]
    FrameTooLarge {
        /// Length of the rejected frame.
        len: usize,
        /// The largest frame the interface accepts.
        max: usize,
    },
    /// The receive buffer is shorter than the largest possible frame.
    #[error("receive buffer of {len} bytes is shorter than the {needed} a frame may need")]
    BufferTooSmall {
        /// Length of the buffer given.
        len: usize,
        /// The length needed.
        needed: usize,
    },
    /// The interface is down or its host side is gone.
    #[error("network interface unavailable")]
    Unavailable,
    /// The host reported an I/O error with this OS error code.
    #[error("network I/O error (os error {0})")]
    Io(i32),
}

/// Length of an Ethernet header (destination, source, EtherType).
pub const ETHERNET_HEADER_LEN: usize = 14;

/// Bytes of the `struct virtio_net_hdr` in front of each frame of an
/// interface with [`NetworkInterface::vnet_header`].
pub const VNET_HEADER_LEN: usize = 10;

/// The largest frame (Ethernet header included, virtio-net header not) an
/// interface with [`NetworkInterface::vnet_header`] sends or receives: an
/// IP packet of up to 64 KiB to be segmented, or segments the host
/// coalesced (an IPv6 header and a payload of 65535 bytes at most).
pub const VNET_MAX_FRAME: usize = ETHERNET_HEADER_LEN + 40 + 65535;

/// A network interface: a tap device on unix, the tender's net device on hvt
/// and spt.
///
/// The interface is poll-based, like `AsyncRead`, so that a TCP/IP stack can
/// drain every pending frame in one wake-up; [`receive`](Self::receive) and
/// [`send`](Self::send) are the `async` forms.
pub trait NetworkInterface {
    /// The interface's MAC address.
    fn mac(&self) -> MacAddress;

    /// The largest IP packet the interface carries (1500 for Ethernet);
    /// frames may be up to `mtu() + ETHERNET_HEADER_LEN` bytes long.
    fn mtu(&self) -> usize;

    /// Receives one frame into `buf`, returning its length, or registers
    /// `cx`'s waker to be woken when a frame may have arrived.
    ///
    /// `buf` must hold at least `mtu() + ETHERNET_HEADER_LEN` bytes.
    fn poll_receive(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>>;

    /// Sends one complete Ethernet frame, or registers `cx`'s waker to be
    /// woken when the interface may accept one.
    fn poll_send(&self, cx: &mut Context<'_>, frame: &[u8]) -> Poll<Result<(), NetError>>;

    /// Sends a frame of `len` bytes that `fill` writes straight into the
    /// interface's own send buffer (every byte of the slice it is given),
    /// instead of a frame built elsewhere and copied by
    /// [`poll_send`](Self::poll_send). `None` when the interface has no
    /// such buffer or no room for `len` bytes now: `fill` was not called,
    /// and the caller sends with `poll_send`. The default has none.
    fn send_in_place(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Option<Result<(), NetError>> {
        let _ = (len, fill);
        None
    }

    /// Receives one frame where the interface already holds it (its own
    /// receive buffer) and hands it to `use_frame`, instead of copying it
    /// into a buffer of the caller's as [`poll_receive`](Self::poll_receive)
    /// does. The slice is the frame (with the virtio-net header in front
    /// when [`vnet_header`](Self::vnet_header)), valid for the call only;
    /// `use_frame` may change it and must not call the interface.
    /// `Some(Ready(Ok(())))`: one frame was handed over;
    /// `Some(Pending)`: none now, `cx`'s waker is registered as
    /// `poll_receive` would register it. `None` when the interface has no
    /// such buffer: the caller receives with `poll_receive`. The default
    /// has none.
    fn receive_in_place(
        &self,
        cx: &mut Context<'_>,
        use_frame: &mut dyn FnMut(&mut [u8]),
    ) -> Option<Poll<Result<(), NetError>>> {
        let _ = (cx, use_frame);
        None
    }

    /// Whether every frame this interface sends and receives starts with a
    /// [`VNET_HEADER_LEN`]-byte `struct virtio_net_hdr` (virtio 1.2,
    /// 5.1.6, without `num_buffers`): the interface completes checksums
    /// marked `NEEDS_CSUM`, segments frames marked for TCP segmentation
    /// (up to [`VNET_MAX_FRAME`] bytes), and may deliver such frames
    /// (a Linux tap opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD`; a
    /// virtio-net device with the checksum and TSO features). With
    /// it, [`poll_receive`](Self::poll_receive)'s `buf` must hold
    /// `VNET_HEADER_LEN + VNET_MAX_FRAME` bytes. Off by default.
    fn vnet_header(&self) -> bool {
        false
    }

    /// Receives one frame into `buf`, waiting until one arrives.
    fn receive<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = Result<usize, NetError>> + 'a {
        poll_fn(move |cx| self.poll_receive(cx, buf))
    }

    /// Sends one frame, waiting until the interface accepts it.
    fn send<'a>(&'a self, frame: &'a [u8]) -> impl Future<Output = Result<(), NetError>> + 'a {
        poll_fn(move |cx| self.poll_send(cx, frame))
    }
}

impl<N: NetworkInterface + ?Sized> NetworkInterface for &N {
    fn mac(&self) -> MacAddress {
        (**self).mac()
    }
    fn mtu(&self) -> usize {
        (**self).mtu()
    }
    fn poll_receive(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>> {
        (**self).poll_receive(cx, buf)
    }
    fn poll_send(&self, cx: &mut Context<'_>, frame: &[u8]) -> Poll<Result<(), NetError>> {
        (**self).poll_send(cx, frame)
    }
    fn send_in_place(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Option<Result<(), NetError>> {
        (**self).send_in_place(len, fill)
    }
    fn receive_in_place(
        &self,
        cx: &mut Context<'_>,
        use_frame: &mut dyn FnMut(&mut [u8]),
    ) -> Option<Poll<Result<(), NetError>>> {
        (**self).receive_in_place(cx, use_frame)
    }
    fn vnet_header(&self) -> bool {
        (**self).vnet_header()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn mac_parses_and_prints() {
        let mac = MacAddress::parse("02:00:5E:10:00:0a").unwrap();
        assert_eq!(mac.0, [0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a]);
        assert_eq!(mac.to_string(), "02:00:5e:10:00:0a");
        assert!(mac.is_unicast());
        assert!(!MacAddress::parse("ff:ff:ff:ff:ff:ff").unwrap().is_unicast());
    }

    #[test]
    fn mac_rejects_malformed() {
        for bad in [
            "",
            "02:00:5e:10:00",
            "02:00:5e:10:00:0a:01",
            "02:00:5e:10:00:0",
            "02:00:5e:10:00:0g",
            "020:0:5e:10:00:0a",
            "+2:00:5e:10:00:0a",
        ] {
            assert_eq!(MacAddress::parse(bad), None, "{bad:?}");
        }
    }
}
