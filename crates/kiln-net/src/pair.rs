//! Two network interfaces joined by an in-memory wire: what one sends, the
//! other receives. For tests and simulations of several unikernels in one
//! process.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::task::{Context, Poll, Waker};

use kiln_devices::net::ETHERNET_HEADER_LEN;
use kiln_devices::{MacAddress, NetError, NetworkInterface};

/// Frames in flight per direction; a sender waits when its peer holds this
/// many unread.
const WIRE_CAPACITY: usize = 256;

/// The frames travelling towards one end.
#[derive(Default)]
struct Wire {
    frames: VecDeque<Vec<u8>>,
    /// The receiving end, waiting for a frame.
    receiver: Option<Waker>,
    /// The sending end, waiting for room.
    sender: Option<Waker>,
    delivered: u64,
}

/// One end of [`pair`].
pub struct PairEnd {
    mac: MacAddress,
    mtu: usize,
    /// Frames for this end.
    inbound: Rc<RefCell<Wire>>,
    /// Frames for the other end.
    outbound: Rc<RefCell<Wire>>,
}

/// Two ends of one wire, with MTU 1500 and the given MAC addresses.
pub fn pair(a: MacAddress, b: MacAddress) -> (PairEnd, PairEnd) {
    let ab = Rc::new(RefCell::new(Wire::default()));
    let ba = Rc::new(RefCell::new(Wire::default()));
    (
        PairEnd {
            mac: a,
            mtu: 1500,
            inbound: ba.clone(),
            outbound: ab.clone(),
        },
        PairEnd {
            mac: b,
            mtu: 1500,
            inbound: ab,
            outbound: ba,
        },
    )
}

impl PairEnd {
    /// Frames this end has received so far.
    pub fn received(&self) -> u64 {
        self.inbound.borrow().delivered
    }
}

impl NetworkInterface for PairEnd {
    fn mac(&self) -> MacAddress {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn poll_receive(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>> {
        let needed = self.mtu + ETHERNET_HEADER_LEN;
        if buf.len() < needed {
            return Poll::Ready(Err(NetError::BufferTooSmall {
                len: buf.len(),
                needed,
            }));
        }
        let mut wire = self.inbound.borrow_mut();
        match wire.frames.pop_front() {
            Some(frame) => {
                let n = frame.len().min(buf.len());
                buf[..n].copy_from_slice(&frame[..n]);
                wire.delivered += 1;
                if let Some(w) = wire.sender.take() {
                    w.wake();
                }
                Poll::Ready(Ok(n))
            }
            None => {
                wire.receiver = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn poll_send(&self, cx: &mut Context<'_>, frame: &[u8]) -> Poll<Result<(), NetError>> {
        let max = self.mtu + ETHERNET_HEADER_LEN;
        if frame.len() > max {
            return Poll::Ready(Err(NetError::FrameTooLarge {
                len: frame.len(),
                max,
            }));
        }
        let mut wire = self.outbound.borrow_mut();
        if wire.frames.len() >= WIRE_CAPACITY {
            wire.sender = Some(cx.waker().clone());
            return Poll::Pending;
        }
        wire.frames.push_back(frame.to_vec());
        if let Some(w) = wire.receiver.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}
