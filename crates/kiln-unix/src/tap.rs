//! The tap network interface: Ethernet frames through `/dev/net/tun`.
//!
//! The tap is opened by `kiln-tap` (kiln's one tap opener, shared with the
//! tenders): each read or write is exactly one Ethernet frame, and by
//! default with `IFF_VNET_HDR` and `TUNSETOFFLOAD` (checksum and TCP
//! segmentation offload): each frame then starts with a `struct
//! virtio_net_hdr` that the stack reads and writes, the kernel completes
//! the checksums of the frames sent, and frames of up to 64 KiB go one
//! read or write each (segmented, or coalesced, by the kernel).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::task::{Context, Poll};

use kiln_devices::net::{ETHERNET_HEADER_LEN, VNET_HEADER_LEN, VNET_MAX_FRAME};
use kiln_devices::{MacAddress, NetError, NetworkInterface, Random as _};

use crate::attach::AttachError;
use crate::random::Random;
use crate::reactor::{Interest, Platform, Registration};
use crate::sys;

/// The largest MTU kiln takes from a tap: the largest a tap accepts
/// (`ip link set TAP mtu 65521`) is below it.
const MAX_MTU: usize = 65535;

/// A random locally administered unicast MAC address.
fn random_mac() -> io::Result<MacAddress> {
    let mut mac = [0u8; 6];
    Random::new()
        .fill(&mut mac)
        .map_err(|e| io::Error::other(e.to_string()))?;
    mac[0] = (mac[0] & !0x01) | 0x02;
    Ok(MacAddress(mac))
}

/// How a tap is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapOptions {
    /// Negotiate checksum and TCP segmentation offload with the kernel
    /// (`IFF_VNET_HDR`, `TUNSETOFFLOAD`); when the kernel refuses, frames
    /// go plain, one MTU-sized frame per read or write.
    pub offloads: bool,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions { offloads: true }
    }
}

/// A tap interface on the host. The unikernel is the far end of the wire:
/// frames the host sends on the interface are received here, and frames
/// sent here arrive at the host.
#[derive(Debug)]
pub struct Tap {
    registration: Registration,
    fd: OwnedFd,
    mac: MacAddress,
    /// The interface's MTU when it was attached.
    mtu: usize,
    /// Frames carry a virtio-net header (offloads negotiated).
    vnet: bool,
    /// With offloads, the process that clears them if this one is killed
    /// (kiln-tap's guard); dropped after `fd`, which stops it.
    _guard: Option<kiln_tap::Guard>,
}

impl Tap {
    /// Attaches net device `device` to the host tap interface `ifname`
    /// (created if it does not exist, and then removed when this closes),
    /// with MAC address `mac` or a random locally administered one.
    pub fn open(
        platform: &'static Platform,
        device: &str,
        ifname: &str,
        mac: Option<MacAddress>,
    ) -> Result<Tap, AttachError> {
        Tap::open_with(platform, device, ifname, mac, TapOptions::default())
    }

    /// [`Tap::open`] with `options`.
    pub fn open_with(
        platform: &'static Platform,
        device: &str,
        ifname: &str,
        mac: Option<MacAddress>,
        options: TapOptions,
    ) -> Result<Tap, AttachError> {
        if !kiln_tap::valid_name(ifname) {
            return Err(AttachError::InvalidIfname {
                device: device.to_owned(),
                ifname: ifname.to_owned(),
            });
        }
        let tap_error = |error| AttachError::Tap {
            device: device.to_owned(),
            ifname: ifname.to_owned(),
            error,
        };
        let mac = match mac {
            Some(mac) if !mac.is_unicast() => {
                return Err(AttachError::MulticastMac {
                    device: device.to_owned(),
                    mac,
                });
            }
            Some(mac) => mac,
            None => random_mac().map_err(tap_error)?,
        };
        // Created if absent, as a host process's interface may be; the
        // offloads negotiated when asked, else any a previous reader left
        // cleared (kiln-tap).
        let tap = kiln_tap::open(
            ifname,
            kiln_tap::TapOptions {
                create: true,
                offloads: if options.offloads {
                    kiln_tap::TCP_OFFLOADS
                } else {
                    0
                },
            },
        )
        .map_err(tap_error)?;
        let (fd, vnet, guard) = (tap.fd, tap.vnet_header, tap.guard);
        // The host decides the MTU (`ip link set TAP mtu 9000`); the
        // unikernel's stack sizes its frames to it.
        let mtu = kiln_tap::mtu(fd.as_fd()).map_err(tap_error)?;
        let mtu = usize::try_from(mtu).unwrap_or(MAX_MTU).min(MAX_MTU);
        Ok(Tap {
            registration: Registration::new(platform, fd.as_raw_fd()),
            fd,
            mac,
            mtu,
            vnet,
            _guard: guard,
        })
    }

    /// The longest read or write, virtio-net header included.
    fn max_frame(&self) -> usize {
        if self.vnet {
            VNET_HEADER_LEN + VNET_MAX_FRAME.max(self.mtu + ETHERNET_HEADER_LEN)
        } else {
            self.mtu + ETHERNET_HEADER_LEN
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        // Leave the tap as a plain one for whoever reads it next (a Solo5
        // tender, a VMM without offloads).
        if self.vnet {
            let _ = kiln_tap::clear_offloads(self.fd.as_fd());
        }
    }
}

fn net_error(e: &io::Error) -> NetError {
    match e.raw_os_error() {
        // EIO: the interface is down; EBADFD: it was detached.
        Some(libc::EIO | libc::EBADFD) => NetError::Unavailable,
        Some(code) => NetError::Io(code),
        None => NetError::Io(libc::EIO),
    }
}

impl NetworkInterface for Tap {
    fn mac(&self) -> MacAddress {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn vnet_header(&self) -> bool {
        self.vnet
    }

    fn poll_receive(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>> {
        let needed = self.max_frame();
        if buf.len() < needed {
            return Poll::Ready(Err(NetError::BufferTooSmall {
                len: buf.len(),
                needed,
            }));
        }
        loop {
            match sys::read(self.fd.as_fd(), buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.registration.register(Interest::Readable, cx.waker());
                    return Poll::Pending;
                }
                Err(e) => return Poll::Ready(Err(net_error(&e))),
            }
        }
    }

    fn poll_send(&self, cx: &mut Context<'_>, frame: &[u8]) -> Poll<Result<(), NetError>> {
        let max = self.max_frame();
        if frame.len() > max {
            return Poll::Ready(Err(NetError::FrameTooLarge {
                len: frame.len(),
                max,
            }));
        }
        loop {
            match sys::write(self.fd.as_fd(), frame) {
                // A tap takes a frame whole or not at all.
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.registration.register(Interest::Writable, cx.waker());
                    return Poll::Pending;
                }
                Err(e) => return Poll::Ready(Err(net_error(&e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..64 {
            let mac = random_mac().unwrap();
            assert!(mac.is_unicast());
            assert_eq!(mac.0[0] & 0x02, 0x02);
        }
    }

    #[test]
    fn a_bad_name_is_refused_before_touching_the_host() {
        let err = Tap::open(crate::platform(), "service", "no/slash", None).unwrap_err();
        assert!(matches!(err, AttachError::InvalidIfname { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot attach net device `service` to tap `no/slash`: "),
            "{err}"
        );
    }
}
