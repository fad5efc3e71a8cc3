//! The network interface: frames read and written on the device's manifest
//! handle (NETREAD/NETWRITE on hvt, `read`/`write` on spt), with readiness
//! from the ready set of the last wait.

use core::task::{Context, Poll};

use kiln_devices::net::ETHERNET_HEADER_LEN;
use kiln_devices::{MacAddress, NetError};

use crate::env::Device;
use crate::outcome::Failure;
use crate::reactor::{Handle, Reactor};
use crate::sys;

/// A network interface the tender attached (a tap device on the host).
pub struct Net {
    handle: Handle,
    mac: MacAddress,
    mtu: usize,
    reactor: &'static Reactor,
}

fn error(failure: Failure) -> NetError {
    match failure {
        Failure::Again => NetError::Unavailable,
        Failure::Error(code) => NetError::Io(code),
    }
}

impl Net {
    pub(crate) fn new(handle: Handle, device: &Device, reactor: &'static Reactor) -> Net {
        Net {
            handle,
            mac: MacAddress(device.info.net_mac()),
            mtu: usize::from(device.info.net_mtu()),
            reactor,
        }
    }

    fn max_frame(&self) -> usize {
        self.mtu + ETHERNET_HEADER_LEN
    }
}

impl kiln_devices::NetworkInterface for Net {
    fn mac(&self) -> MacAddress {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn poll_receive(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>> {
        if buf.len() < self.max_frame() {
            return Poll::Ready(Err(NetError::BufferTooSmall {
                len: buf.len(),
                needed: self.max_frame(),
            }));
        }
        // No hypercall unless the last POLL said a frame may be waiting.
        self.reactor
            .poll_read(self.handle, cx.waker(), || {
                sys::host::net_read(self.handle.raw(), buf)
            })
            .map_err(error)
    }

    fn poll_send(&self, _cx: &mut Context<'_>, frame: &[u8]) -> Poll<Result<(), NetError>> {
        if frame.len() > self.max_frame() {
            return Poll::Ready(Err(NetError::FrameTooLarge {
                len: frame.len(),
                max: self.max_frame(),
            }));
        }
        // NETWRITE completes synchronously in the tender.
        Poll::Ready(sys::host::net_write(self.handle.raw(), frame).map_err(error))
    }
}
