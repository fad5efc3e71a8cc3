//! smoltcp's `Device` over a kiln `NetworkInterface`, for the length of one
//! poll of the driver task (it borrows that poll's `Context`).

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::task::{Context, Poll};

use kiln_devices::NetworkInterface;
use smoltcp::iface::PollIngressSingleResult;
use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium, PacketMeta};
use smoltcp::time::Instant;

use crate::guard::NdiscGuard;
use crate::retransmit::Tracker;
use crate::vnet::{self, VNET_HEADER_LEN, VNET_MAX_FRAME};

/// Frames smoltcp produced that the interface did not accept yet. While it
/// holds this many, `transmit` refuses and data waits in socket buffers.
const TX_QUEUE_LIMIT: usize = 64;

/// Spare frame buffers larger than [`SMALL_FRAME`] kept at most.
const LARGE_SPARES: usize = 8;

/// The largest frame buffer of an interface without offloads that is kept
/// without bound (a jumbo frame with a virtio-net header).
const SMALL_FRAME: usize = 16 * 1024;

/// Frames the neighbour-discovery filter may drop in one `receive` before
/// it returns and lets the driver run the rest of its round.
const FILTERED_PER_RECEIVE: usize = 256;

/// Counters of frames the interface refused or failed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames received and handed to smoltcp.
    pub rx_frames: u64,
    /// Frames handed to the interface.
    pub tx_frames: u64,
    /// Bytes of the frames in `rx_frames`.
    pub rx_bytes: u64,
    /// Bytes of the frames in `tx_frames`.
    pub tx_bytes: u64,
    /// Receive errors reported by the interface, and frames dropped for
    /// a malformed virtio-net header or a bad TCP checksum the interface
    /// did not vouch for (interfaces with offloads, see `vnet`).
    pub rx_errors: u64,
    /// Frames the interface refused with an error, or that were dropped
    /// because the transmit queue was full.
    pub tx_dropped: u64,
    /// Neighbour solicitations and advertisements dropped because they
    /// were not for us (see the `guard` module).
    pub ndisc_dropped: u64,
    /// Half-open connections dropped to make room for newer ones (a SYN
    /// flood, or clients that never complete their handshake).
    pub syn_dropped: u64,
    /// Connections refused because the stack held `max_connections`
    /// sockets: SYNs to a listener's address and port that no socket took
    /// (smoltcp answers them with a RST), and `connect` calls that failed.
    /// SYNs refused because a listener's accept queue is full
    /// (`--syn-backlog` connections wait for `accept`) are not counted.
    pub tcp_refused: u64,
    /// Driver rounds whose next deadline had already passed although the
    /// round did nothing; the driver then waits a millisecond instead of
    /// spinning. Stays 0 unless smoltcp reports a stale deadline.
    pub stale_deadlines: u64,
    /// TCP segments sent that carry sequence space sent before on their
    /// connection: retransmissions (see the `retransmit` module).
    pub tcp_retransmits: u64,
}

/// Frames waiting for the interface, spare buffers to build frames in,
/// and what each connection sent (to count retransmissions).
pub(crate) struct TxQueue {
    pending: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    sent: Tracker,
}

impl TxQueue {
    /// An empty queue for a stack of at most `connections` TCP
    /// connections.
    pub(crate) fn new(connections: usize) -> TxQueue {
        TxQueue {
            pending: VecDeque::new(),
            spare: Vec::new(),
            sent: Tracker::new(connections),
        }
    }

    /// Whether the interface is refusing frames right now.
    pub(crate) fn is_blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        buf
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        // Segments of up to 64 KiB (interfaces with offloads): a few
        // spares are enough, and 64 of them would keep 4 MiB.
        let large = buf.capacity() > SMALL_FRAME;
        if self.spare.len() < TX_QUEUE_LIMIT && !(large && self.spare.len() >= LARGE_SPARES) {
            self.spare.push(buf);
        }
    }

    /// Hands queued frames to the interface until it refuses one (which
    /// registers `cx` to be woken when it may accept more).
    pub(crate) fn flush<N: NetworkInterface + ?Sized>(
        &mut self,
        nic: &N,
        cx: &mut Context<'_>,
        stats: &mut DeviceStats,
    ) {
        while let Some(frame) = self.pending.front() {
            match nic.poll_send(cx, frame) {
                Poll::Pending => return,
                Poll::Ready(result) => {
                    match result {
                        Ok(()) => {
                            stats.tx_frames += 1;
                            stats.tx_bytes += frame.len() as u64;
                        }
                        Err(_) => stats.tx_dropped += 1,
                    }
                    if let Some(frame) = self.pending.pop_front() {
                        self.recycle(frame);
                    }
                }
            }
        }
    }

    fn send<N: NetworkInterface + ?Sized>(
        &mut self,
        nic: &N,
        cx: &mut Context<'_>,
        stats: &mut DeviceStats,
        frame: Vec<u8>,
    ) {
        if self.pending.is_empty() {
            match nic.poll_send(cx, &frame) {
                Poll::Ready(Ok(())) => {
                    stats.tx_frames += 1;
                    stats.tx_bytes += frame.len() as u64;
                    self.recycle(frame);
                }
                Poll::Ready(Err(_)) => {
                    stats.tx_dropped += 1;
                    self.recycle(frame);
                }
                Poll::Pending => self.pending.push_back(frame),
            }
        } else if self.pending.len() < TX_QUEUE_LIMIT * 2 {
            self.pending.push_back(frame);
        } else {
            stats.tx_dropped += 1;
        }
    }
}

/// The device smoltcp polls: the interface, the driver's `Context`, a
/// receive buffer of one frame and the transmit queue.
pub(crate) struct NicDevice<'a, 'b, N: ?Sized> {
    pub(crate) nic: &'a N,
    pub(crate) cx: &'a mut Context<'b>,
    pub(crate) rx: &'a mut [u8],
    pub(crate) tx: &'a mut TxQueue,
    pub(crate) stats: &'a mut DeviceStats,
    /// Largest frame, Ethernet header included.
    pub(crate) frame_len: usize,
    /// Frames carry a virtio-net header (`NetworkInterface::vnet_header`).
    pub(crate) vnet: bool,
    pub(crate) guard: &'a mut NdiscGuard,
    /// This poll's time.
    pub(crate) now: Instant,
    /// `receive` stopped with frames possibly left to read.
    pub(crate) more: bool,
}

pub(crate) struct RxToken<'a> {
    frame: &'a [u8],
}

pub(crate) struct TxToken<'a, 'b, N: ?Sized> {
    vnet: bool,
    meta: PacketMeta,
    nic: &'a N,
    cx: &'a mut Context<'b>,
    tx: &'a mut TxQueue,
    stats: &'a mut DeviceStats,
    guard: &'a mut NdiscGuard,
    now: Instant,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl<N: NetworkInterface + ?Sized> phy::TxToken for TxToken<'_, '_, N> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let TxToken {
            vnet,
            meta,
            nic,
            cx,
            tx,
            stats,
            guard,
            now,
        } = self;
        let head = if vnet { VNET_HEADER_LEN } else { 0 };
        let mut finish = |frame: &mut [u8], stats: &mut DeviceStats, sent: &mut Tracker| {
            finish_frame(frame, vnet, meta, stats, sent, guard, now)
        };
        // In the interface's own send buffer when it has one (and no frame
        // waits before this one): no copy of the frame, no zeroing.
        let mut f = Some(f);
        if !tx.is_blocked() {
            let mut r = None;
            let sent = nic.send_in_place(head + len, &mut |frame| {
                if let Some(f) = f.take() {
                    r = Some(f(&mut frame[head..]));
                    finish(frame, stats, &mut tx.sent);
                }
            });
            if let Some(r) = r {
                match sent {
                    Some(Ok(())) => {
                        stats.tx_frames += 1;
                        stats.tx_bytes += (head + len) as u64;
                    }
                    Some(Err(_)) => stats.tx_dropped += 1,
                    None => {}
                }
                return r;
            }
        }
        let Some(f) = f else {
            unreachable!("`f` is taken only together with setting `r`")
        };
        let mut frame = tx.buffer(head + len);
        let r = f(&mut frame[head..]);
        finish(&mut frame, stats, &mut tx.sent);
        tx.send(nic, cx, stats, frame);
        r
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.meta = meta;
    }
}

/// Past smoltcp's bytes of a frame (behind the virtio-net header when
/// `vnet`): the neighbour guard and the retransmission count look at it,
/// then the header goes first.
fn finish_frame(
    frame: &mut [u8],
    vnet: bool,
    meta: PacketMeta,
    stats: &mut DeviceStats,
    sent: &mut Tracker,
    guard: &mut NdiscGuard,
    now: Instant,
) {
    let head = if vnet { VNET_HEADER_LEN } else { 0 };
    guard.sent(&frame[head..], now);
    if sent.sent(&frame[head..]) {
        stats.tcp_retransmits += 1;
    }
    if vnet {
        vnet::send(frame, meta.segmentation_offload_size.map(|s| s.get()));
    }
}

/// Counts a received frame and checks it: its virtio-net header when
/// `vnet` (a malformed one, or a bad TCP checksum the host did not vouch
/// for, is an error), then the neighbour guard. Where smoltcp's part of
/// the frame starts, or why it is dropped (`true`: by the guard).
fn admit(
    frame: &mut [u8],
    vnet: bool,
    stats: &mut DeviceStats,
    guard: &mut NdiscGuard,
    now: Instant,
) -> Result<usize, bool> {
    stats.rx_frames += 1;
    let start = if vnet {
        let Some(start) = vnet::receive(frame) else {
            stats.rx_errors += 1;
            return Err(false);
        };
        start
    } else {
        0
    };
    stats.rx_bytes += (frame.len() - start) as u64;
    if guard.admit(&frame[start..], now) {
        Ok(start)
    } else {
        stats.ndisc_dropped += 1;
        Err(true)
    }
}

/// A device that holds one frame received in place (lent by
/// `NetworkInterface::receive_in_place` for the length of one
/// `poll_ingress_single`), and queues what smoltcp sends in answer to it
/// for the next transmit: the interface must not be called while it lends
/// the frame.
pub(crate) struct LentFrame<'a> {
    pub(crate) frame: Option<&'a [u8]>,
    pub(crate) tx: &'a mut TxQueue,
    pub(crate) stats: &'a mut DeviceStats,
    pub(crate) guard: &'a mut NdiscGuard,
    pub(crate) frame_len: usize,
    pub(crate) vnet: bool,
    pub(crate) now: Instant,
}

impl<'a> LentFrame<'a> {
    /// Checks `frame` as [`NicDevice`]'s receive does; `None` if dropped.
    pub(crate) fn admit(
        frame: &'a mut [u8],
        tx: &'a mut TxQueue,
        stats: &'a mut DeviceStats,
        guard: &'a mut NdiscGuard,
        frame_len: usize,
        vnet: bool,
        now: Instant,
    ) -> Option<LentFrame<'a>> {
        let start = admit(frame, vnet, stats, guard, now).ok()?;
        Some(LentFrame {
            frame: Some(&frame[start..]),
            tx,
            stats,
            guard,
            frame_len,
            vnet,
            now,
        })
    }
}

/// A frame smoltcp sends while a received frame is lent: built in a
/// kiln-net buffer and queued.
pub(crate) struct DeferredTx<'a> {
    vnet: bool,
    meta: PacketMeta,
    tx: &'a mut TxQueue,
    stats: &'a mut DeviceStats,
    guard: &'a mut NdiscGuard,
    now: Instant,
}

impl phy::TxToken for DeferredTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let head = if self.vnet { VNET_HEADER_LEN } else { 0 };
        let mut frame = self.tx.buffer(head + len);
        let r = f(&mut frame[head..]);
        finish_frame(
            &mut frame,
            self.vnet,
            self.meta,
            self.stats,
            &mut self.tx.sent,
            self.guard,
            self.now,
        );
        if self.tx.pending.len() < TX_QUEUE_LIMIT * 2 {
            self.tx.pending.push_back(frame);
        } else {
            self.stats.tx_dropped += 1;
        }
        r
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.meta = meta;
    }
}

impl phy::Device for LentFrame<'_> {
    type RxToken<'x>
        = RxToken<'x>
    where
        Self: 'x;
    type TxToken<'x>
        = DeferredTx<'x>
    where
        Self: 'x;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, DeferredTx<'_>)> {
        let frame = self.frame.take()?;
        let tx = DeferredTx {
            vnet: self.vnet,
            meta: PacketMeta::default(),
            tx: &mut *self.tx,
            stats: &mut *self.stats,
            guard: &mut *self.guard,
            now: self.now,
        };
        Some((RxToken { frame }, tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<DeferredTx<'_>> {
        if self.tx.pending.len() >= TX_QUEUE_LIMIT {
            return None;
        }
        Some(DeferredTx {
            vnet: self.vnet,
            meta: PacketMeta::default(),
            tx: &mut *self.tx,
            stats: &mut *self.stats,
            guard: &mut *self.guard,
            now: self.now,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.frame_len, self.vnet)
    }
}

impl<N: NetworkInterface + ?Sized> NicDevice<'_, '_, N> {
    /// Receives one frame in place when the interface lends its own
    /// buffer (`NetworkInterface::receive_in_place`) and runs `ingress`
    /// (smoltcp's `poll_ingress_single`) on it, checked as `receive`
    /// checks frames; what smoltcp sends meanwhile is queued. `None` when
    /// the interface has no such buffer (receive with `receive`);
    /// `Some(PollIngressSingleResult::None)` when no frame waits.
    pub(crate) fn receive_lent(
        &mut self,
        ingress: &mut dyn FnMut(&mut LentFrame<'_>) -> PollIngressSingleResult,
    ) -> Option<PollIngressSingleResult> {
        let NicDevice {
            nic,
            cx,
            tx,
            stats,
            guard,
            frame_len,
            vnet,
            now,
            ..
        } = self;
        let mut result = PollIngressSingleResult::PacketProcessed;
        let lent = nic.receive_in_place(cx, &mut |frame| {
            if let Some(mut lent) =
                LentFrame::admit(frame, tx, stats, guard, *frame_len, *vnet, *now)
            {
                result = ingress(&mut lent);
            }
        })?;
        Some(match lent {
            Poll::Ready(Ok(())) => result,
            Poll::Ready(Err(_)) => {
                stats.rx_errors += 1;
                PollIngressSingleResult::None
            }
            Poll::Pending => PollIngressSingleResult::None,
        })
    }
}

impl<'b, N: NetworkInterface + ?Sized> phy::Device for NicDevice<'_, 'b, N> {
    type RxToken<'x>
        = RxToken<'x>
    where
        Self: 'x;
    type TxToken<'x>
        = TxToken<'x, 'b, N>
    where
        Self: 'x;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_, 'b, N>)> {
        let mut filtered = 0;
        let (start, n) = loop {
            let n = match self.nic.poll_receive(self.cx, self.rx) {
                Poll::Ready(Ok(n)) => n.min(self.rx.len()),
                Poll::Ready(Err(_)) => {
                    self.stats.rx_errors += 1;
                    return None;
                }
                Poll::Pending => return None,
            };
            match admit(
                &mut self.rx[..n],
                self.vnet,
                self.stats,
                self.guard,
                self.now,
            ) {
                Ok(start) => break (start, n),
                Err(false) => continue,
                Err(true) => {}
            }
            filtered += 1;
            if filtered == FILTERED_PER_RECEIVE {
                self.more = true;
                return None;
            }
        };
        let rx = RxToken {
            frame: &self.rx[start..n],
        };
        let tx = TxToken {
            vnet: self.vnet,
            meta: PacketMeta::default(),
            nic: self.nic,
            cx: &mut *self.cx,
            tx: &mut *self.tx,
            stats: &mut *self.stats,
            guard: &mut *self.guard,
            now: self.now,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_, 'b, N>> {
        self.tx.flush(self.nic, self.cx, self.stats);
        if self.tx.pending.len() >= TX_QUEUE_LIMIT {
            return None;
        }
        Some(TxToken {
            vnet: self.vnet,
            meta: PacketMeta::default(),
            nic: self.nic,
            cx: &mut *self.cx,
            tx: &mut *self.tx,
            stats: &mut *self.stats,
            guard: &mut *self.guard,
            now: self.now,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.frame_len, self.vnet)
    }
}

/// What smoltcp may send on an interface whose frames (Ethernet header
/// included) are up to `frame_len` bytes, with offloads if `vnet`.
pub(crate) fn capabilities(frame_len: usize, vnet: bool) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = frame_len;
    if vnet {
        // The host completes TCP checksums and cuts segments of up to
        // an IPv4 packet's 64 KiB; `vnet` checks what it received.
        // IPv6 segments stay within the MTU: smoltcp (0.14) drops an
        // IPv6 packet larger than the MTU before it reaches the device,
        // whatever its segmentation metadata, and the connection then
        // stalls retransmitting it.
        caps.checksum.tcp = Checksum::None;
        caps.segmentation.tcpv4 = core::num::NonZeroUsize::new(VNET_MAX_FRAME - 40);
    }
    caps
}
