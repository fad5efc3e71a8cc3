//! The network interface: frames read and written on the device's manifest
//! handle (NETREAD/NETWRITE on hvt, `read`/`write` on spt), with readiness
//! from the ready set of the last wait; or, for the first interface under
//! a tender with kiln's NET_EXCHANGE, through the platform's TX queue and
//! RX cache, which each wait exchanges with the tender.

use core::task::{Context, Poll};

use kiln_abi::hvt_ext::area_record_len;
use kiln_devices::net::{ETHERNET_HEADER_LEN, VNET_HEADER_LEN, VNET_MAX_FRAME};
use kiln_devices::{MacAddress, NetError};

use crate::env::Device;
use crate::exchange::{Exchange, ExchangeError, queue_sizes};
use crate::outcome::Failure;
use crate::platform::platform;
use crate::reactor::{Handle, Reactor};
use crate::sys;

/// A network interface the tender attached (a tap device on the host).
pub struct Net {
    handle: Handle,
    mac: MacAddress,
    mtu: usize,
    /// Frames carry a virtio-net header (kiln's extension, negotiated by
    /// the tender for an image that declared it).
    vnet: bool,
    /// The longest frame read or written, header included.
    max_frame: usize,
    reactor: &'static Reactor,
    /// The platform's NET_EXCHANGE queues, if this interface has them.
    exchange: Option<&'static spin::Mutex<Option<Exchange>>>,
}

fn error(failure: Failure) -> NetError {
    match failure {
        Failure::Again => NetError::Unavailable,
        Failure::Error(code) => NetError::Io(code),
    }
}

impl Net {
    pub(crate) fn new(handle: Handle, device: &Device, reactor: &'static Reactor) -> Net {
        let mtu = usize::from(device.info.net_mtu());
        let vnet = sys::host::has_vnet_header();
        let max_frame = if vnet {
            VNET_HEADER_LEN + VNET_MAX_FRAME.max(mtu + ETHERNET_HEADER_LEN)
        } else {
            mtu + ETHERNET_HEADER_LEN
        };
        let mut exchange = None;
        if sys::host::has_net_exchange() {
            let queues = platform().exchange();
            let mut slot = queues.lock();
            if slot.is_none() {
                let heap = crate::heap_stats().size;
                let (tx_bytes, rx_frames) = queue_sizes(vnet, max_frame, heap);
                *slot = Some(if sys::host::has_net_rx_area() {
                    // One area the tender packs frames into: as many
                    // small frames as fit, not one a slot.
                    let record = area_record_len(max_frame as u64) as usize;
                    Exchange::with_area(handle, max_frame, tx_bytes, rx_frames * record)
                } else {
                    Exchange::with_sizes(handle, max_frame, tx_bytes, rx_frames)
                });
                exchange = Some(queues);
            }
        }
        Net {
            handle,
            mac: MacAddress(device.info.net_mac()),
            mtu,
            vnet,
            max_frame,
            reactor,
            exchange,
        }
    }

    /// Whether this interface goes through kiln's NET_EXCHANGE (the tender
    /// offers it and no other interface took it first).
    pub fn uses_exchange(&self) -> bool {
        self.exchange.is_some()
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Queues a frame of `len` bytes, which `fill` writes in the queue,
    /// for the next exchange; a full queue is sent first with an exchange
    /// that does not wait.
    fn queue(
        &self,
        queues: &spin::Mutex<Option<Exchange>>,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), NetError> {
        let mut guard = queues.lock();
        let Some(ex) = guard.as_mut() else {
            return Err(NetError::Unavailable);
        };
        match ex.queue_with(len, fill) {
            Err(ExchangeError::Full) => {}
            done => return done.map_err(|_| NetError::Unavailable),
        }
        let ready = crate::platform::exchange(ex, 0);
        let queued = ex.queue_with(len, fill).map_err(|_| NetError::Unavailable);
        drop(guard);
        self.reactor.deliver(ready);
        queued
    }
}

impl kiln_devices::NetworkInterface for Net {
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
        if buf.len() < self.max_frame() {
            return Poll::Ready(Err(NetError::BufferTooSmall {
                len: buf.len(),
                needed: self.max_frame(),
            }));
        }
        if let Some(queues) = self.exchange {
            // Frames come only from the cache the waits fill.
            if let Some(n) = queues.lock().as_mut().and_then(|ex| ex.take(buf)) {
                return Poll::Ready(Ok(n));
            }
            self.reactor.register(self.handle, cx.waker());
            return Poll::Pending;
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
        if let Some(queues) = self.exchange {
            let fill = &mut |data: &mut [u8]| data.copy_from_slice(frame);
            return Poll::Ready(self.queue(queues, frame.len(), fill));
        }
        // NETWRITE completes synchronously in the tender.
        Poll::Ready(sys::host::net_write(self.handle.raw(), frame).map_err(error))
    }

    /// With NET_EXCHANGE, frames are handed over where the tender wrote
    /// them (the RX cache or area): no copy into the stack's buffer. The
    /// exchange stays locked while `use_frame` runs, so no exchange can
    /// overwrite the frame meanwhile.
    fn receive_in_place(
        &self,
        cx: &mut Context<'_>,
        use_frame: &mut dyn FnMut(&mut [u8]),
    ) -> Option<Poll<Result<(), NetError>>> {
        let queues = self.exchange?;
        if queues
            .lock()
            .as_mut()
            .is_some_and(|ex| ex.take_in_place(use_frame))
        {
            return Some(Poll::Ready(Ok(())));
        }
        self.reactor.register(self.handle, cx.waker());
        Some(Poll::Pending)
    }

    /// With NET_EXCHANGE, frames are built in the TX queue the tender
    /// reads them from: no copy between the stack's buffer and the queue.
    fn send_in_place(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Option<Result<(), NetError>> {
        let queues = self.exchange?;
        if len > self.max_frame() {
            return None;
        }
        Some(self.queue(queues, len, fill))
    }
}
