//! The guest's side of kiln's NET_EXCHANGE extension on hvt
//! (`kiln_abi::hvt_ext`): a bounded queue of frames to send and a cache of
//! frames received, both preallocated, that one hypercall empties and
//! refills.
//!
//! Sending copies the frame into a free TX slot, or has it built there in
//! place ([`Exchange::queue_with`]); receiving copies the next cached frame
//! out. [`Exchange::prepare`] fills the hypercall's argument
//! and tables (every queued frame; every RX slot when the cache is empty,
//! none otherwise), the platform makes the hypercall, and
//! [`Exchange::complete`] takes its OUT fields: the queue is emptied
//! (frames the host refused are dropped, as a lossy link would), the cache
//! holds the frames read. Nothing here allocates after [`Exchange::new`].
//!
//! Under a tender with NET_EXCHANGE_AREA ([`Exchange::with_area`]) the
//! cache is one area the tender packs frames into (a length, the frame,
//! padding to 8 bytes each): as many as fit, whatever their size, instead
//! of one frame a slot.

use alloc::boxed::Box;
use alloc::vec;

use kiln_abi::hvt_ext::{
    EXCHANGE_AREA_MAX, EXCHANGE_AREA_RECORD_HEADER, EXCHANGE_MAX_FRAMES, ExchangeRx, ExchangeTx,
    HcNetExchange, HcNetExchangeArea, area_record_len,
};

use crate::reactor::Handle;

/// Frames the TX queue holds; a full queue is flushed with a zero-timeout
/// exchange.
pub const TX_SLOTS: usize = 64;
/// Frames one exchange may read into the RX cache.
pub const RX_SLOTS: usize = 64;

const _: () = assert!(TX_SLOTS as u64 <= EXCHANGE_MAX_FRAMES);
const _: () = assert!(RX_SLOTS as u64 <= EXCHANGE_MAX_FRAMES);

/// Segments of 64 KiB the TX queue holds with the virtio-net header in a
/// heap of at least [`LARGE_QUEUE_HEAP`]: a round of www's 1 MiB file to
/// 16 connections (each up to kiln-net's bulk send buffer of 128 KiB in
/// flight, 2 MiB in all) fits one exchange. With 16 segments (1 MiB) a
/// full queue cost an exit of its own in every such round: 1.10 exits per
/// response instead of 0.65, and 12-21% more of the tender's CPU per
/// response (docs/bulk.md, "A TX queue of 2 MiB on hvt").
pub const VNET_TX_SEGMENTS: usize = 32;

/// Segments of 64 KiB the TX queue holds with the header in a smaller
/// heap: the 2 MiB queue raised the smallest `--mem` www runs with on hvt
/// from 6 MiB to 8.
pub const VNET_TX_SEGMENTS_SMALL: usize = 16;

/// The smallest heap given the larger queue (16 times its 2 MiB).
pub const LARGE_QUEUE_HEAP: usize = 32 << 20;

/// RX slots (or area records) of the largest frame with the header.
const VNET_RX_FRAMES: usize = 8;

/// The TX queue's bytes and the RX frames of an exchange for frames of at
/// most `max_frame` bytes in a heap of `heap` bytes. 64 slots of 64 KiB
/// would be 8 MiB: with the header, [`VNET_TX_SEGMENTS`] segments of TX
/// queue (2 MiB; [`VNET_TX_SEGMENTS_SMALL`] in a heap below
/// [`LARGE_QUEUE_HEAP`]), or up to [`TX_SLOTS`] small frames (kiln-net
/// builds frames in it and keeps no 64 KiB buffers of its own), and room
/// for [`VNET_RX_FRAMES`] frames of 64 KiB; without, [`TX_SLOTS`] and
/// [`RX_SLOTS`] frames.
pub fn queue_sizes(vnet: bool, max_frame: usize, heap: usize) -> (usize, usize) {
    if !vnet {
        return (TX_SLOTS * max_frame, RX_SLOTS);
    }
    let segments = if heap >= LARGE_QUEUE_HEAP {
        VNET_TX_SEGMENTS
    } else {
        VNET_TX_SEGMENTS_SMALL
    };
    (segments * max_frame, VNET_RX_FRAMES)
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// Every TX slot holds a frame: flush first.
    #[error("the transmit queue holds {TX_SLOTS} frames already")]
    Full,
    /// The frame does not fit a slot.
    #[error("a frame of {len} bytes does not fit the {max}-byte slots of the transmit queue")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The slot size.
        max: usize,
    },
}

/// The TX queue, RX cache and hypercall argument of one net device.
pub struct Exchange {
    handle: Handle,
    /// Bytes per RX slot: the largest frame.
    slot: usize,
    /// Queued frames, packed one after the other.
    tx_data: Box<[u8]>,
    rx_data: Box<[u8]>,
    /// Each queued frame's address and length.
    tx: Box<[ExchangeTx; TX_SLOTS]>,
    /// Each RX slot's address and capacity (fixed) and frame length.
    rx: Box<[ExchangeRx; RX_SLOTS]>,
    arg: Box<HcNetExchange>,
    tx_count: usize,
    /// Bytes of `tx_data` the queued frames take.
    tx_used: usize,
    /// RX slots offered (at most [`RX_SLOTS`]).
    rx_slots: usize,
    rx_count: usize,
    rx_next: usize,
    /// Whether the exchange being made offered the RX slots.
    rx_offered: bool,
    tx_dropped: u64,
    /// With NET_EXCHANGE_AREA: its argument; `rx_data` is the area.
    area: Option<Box<HcNetExchangeArea>>,
    /// Bytes of the area the cached records take.
    rx_used: usize,
    /// Where the next cached record starts in the area.
    rx_at: usize,
}

impl Exchange {
    /// The queues of device `handle`, for frames of at most `slot` bytes:
    /// [`TX_SLOTS`] slots of TX queue and [`RX_SLOTS`] of RX cache.
    pub fn new(handle: Handle, slot: usize) -> Exchange {
        Exchange::with_sizes(handle, slot, TX_SLOTS * slot, RX_SLOTS)
    }

    /// The queues of device `handle` for frames of at most `slot` bytes,
    /// with `tx_bytes` of TX queue (frames packed, at most [`TX_SLOTS`] of
    /// them) and `rx_slots` RX slots (1 to [`RX_SLOTS`]): what a device
    /// with 64 KiB frames (virtio-net header, offloads) holds without
    /// taking 8 MiB.
    pub fn with_sizes(handle: Handle, slot: usize, tx_bytes: usize, rx_slots: usize) -> Exchange {
        let rx_slots = rx_slots.clamp(1, RX_SLOTS);
        let tx_data = vec![0u8; tx_bytes.max(slot)].into_boxed_slice();
        let rx_data = vec![0u8; rx_slots * slot].into_boxed_slice();
        // The tender takes guest addresses, which are the pointers' values
        // (guest memory is identity-mapped); the boxes never move.
        let rx_base = rx_data.as_ptr() as u64;
        let tx = Box::new([ExchangeTx::default(); TX_SLOTS]);
        let mut rx = Box::new([ExchangeRx::default(); RX_SLOTS]);
        for (i, entry) in rx.iter_mut().take(rx_slots).enumerate() {
            entry.data = rx_base + (i * slot) as u64;
            entry.cap = slot as u64;
        }
        Exchange {
            handle,
            slot,
            tx_data,
            rx_data,
            tx,
            rx,
            arg: Box::new(HcNetExchange::default()),
            tx_count: 0,
            tx_used: 0,
            rx_slots,
            rx_count: 0,
            rx_next: 0,
            rx_offered: false,
            tx_dropped: 0,
            area: None,
            rx_used: 0,
            rx_at: 0,
        }
    }

    /// The queues of device `handle` for frames of at most `slot` bytes
    /// under a tender with NET_EXCHANGE_AREA: `tx_bytes` of TX queue as
    /// in [`Exchange::with_sizes`], and an RX area of `area_bytes` (at
    /// least one record of `slot` bytes, at most the ABI's largest area)
    /// that the tender packs frames into.
    pub fn with_area(handle: Handle, slot: usize, tx_bytes: usize, area_bytes: usize) -> Exchange {
        let record = area_record_len(slot as u64) as usize;
        let area_bytes = area_bytes.clamp(record, EXCHANGE_AREA_MAX as usize);
        let mut ex = Exchange::with_sizes(handle, slot, tx_bytes, 1);
        ex.rx_data = vec![0u8; area_bytes].into_boxed_slice();
        // No table of buffers: its one entry named the slot just dropped.
        ex.rx_slots = 0;
        ex.rx[0] = ExchangeRx::default();
        ex.area = Some(Box::new(HcNetExchangeArea::default()));
        ex
    }

    /// Whether the exchanges go through NET_EXCHANGE_AREA
    /// ([`Exchange::prepare_area`]) rather than NET_EXCHANGE
    /// ([`Exchange::prepare`]).
    pub fn uses_area(&self) -> bool {
        self.area.is_some()
    }

    /// The device.
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// Copies `frame` into the TX queue.
    pub fn queue(&mut self, frame: &[u8]) -> Result<(), ExchangeError> {
        self.queue_with(frame.len(), &mut |data| data.copy_from_slice(frame))
    }

    /// Queues a frame of `len` bytes that `fill` writes in place, in the
    /// TX queue's next free bytes (which hold whatever an earlier frame
    /// left there: `fill` writes all of them). `fill` is called only when
    /// the frame is queued.
    pub fn queue_with(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), ExchangeError> {
        if len > self.slot {
            return Err(ExchangeError::TooLarge {
                len,
                max: self.slot,
            });
        }
        let (i, at) = (self.tx_count, self.tx_used);
        let base = self.tx_data.as_ptr() as u64;
        let (Some(entry), Some(data)) = (self.tx.get_mut(i), self.tx_data.get_mut(at..at + len))
        else {
            return Err(ExchangeError::Full);
        };
        fill(data);
        entry.data = base + at as u64;
        entry.len = len as u64;
        self.tx_count += 1;
        self.tx_used += len;
        Ok(())
    }

    /// Frames queued and not yet handed to the host.
    pub fn queued(&self) -> usize {
        self.tx_count
    }

    /// Whether the RX cache holds a frame.
    pub fn has_rx(&self) -> bool {
        self.rx_next < self.rx_count
    }

    /// Copies the next cached frame into `buf` (cut to its length) and
    /// returns its length, or `None` when the cache is empty.
    pub fn take(&mut self, buf: &mut [u8]) -> Option<usize> {
        let frame = self.next_frame()?;
        let n = frame.len().min(buf.len());
        let data = self.rx_data.get(frame.start..frame.start + n)?;
        buf.get_mut(..n)?.copy_from_slice(data);
        Some(n)
    }

    /// Hands the next cached frame to `use_frame` where it lies in the
    /// cache (no copy; it is not read again), cut as [`Exchange::take`]
    /// cuts it. Returns whether there was one.
    pub fn take_in_place(&mut self, use_frame: &mut dyn FnMut(&mut [u8])) -> bool {
        let Some(frame) = self.next_frame() else {
            return false;
        };
        match self.rx_data.get_mut(frame) {
            Some(data) => {
                use_frame(data);
                true
            }
            None => false,
        }
    }

    /// Where the next cached frame lies in `rx_data` (its length cut to
    /// the slot and to what the host said it wrote), past which the cache
    /// moves on; `None` when the cache is empty.
    fn next_frame(&mut self) -> Option<core::ops::Range<usize>> {
        if !self.has_rx() {
            return None;
        }
        if self.area.is_some() {
            return self.next_record();
        }
        let i = self.rx_next;
        self.rx_next += 1;
        let len = self.rx.get(i).map_or(0, |e| e.len as usize).min(self.slot);
        let start = i * self.slot;
        Some(start..start + len)
    }

    /// [`Exchange::next_frame`] from the area: the record at `rx_at`. A
    /// record the host could not have meant (past what it said it used)
    /// ends the cache; a length past the record's room is cut.
    fn next_record(&mut self) -> Option<core::ops::Range<usize>> {
        const HEADER: usize = EXCHANGE_AREA_RECORD_HEADER as usize;
        let at = self.rx_at;
        let header = at
            .checked_add(HEADER)
            .filter(|&end| end <= self.rx_used)
            .and_then(|end| self.rx_data.get(at..end))
            .and_then(|h| <[u8; HEADER]>::try_from(h).ok());
        let Some(header) = header else {
            self.rx_next = self.rx_count;
            return None;
        };
        self.rx_next += 1;
        let len = u64::from_le_bytes(header);
        let room = self.rx_used - at - HEADER;
        let n = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(room)
            .min(self.slot);
        self.rx_at = at.saturating_add(area_record_len(len) as usize);
        Some(at + HEADER..at + HEADER + n)
    }

    /// Frames the host refused so far (dropped).
    pub fn tx_dropped(&self) -> u64 {
        self.tx_dropped
    }

    /// The hypercall's argument for an exchange that waits at most
    /// `timeout_nsecs` when nothing arrives: every queued frame, and every
    /// RX slot if the cache is empty. With frames still cached it reads
    /// nothing and does not wait: they are work to do now.
    pub fn prepare(&mut self, timeout_nsecs: u64) -> &mut HcNetExchange {
        self.rx_offered = !self.has_rx();
        *self.arg = HcNetExchange {
            handle: self.handle.raw(),
            timeout_nsecs: if self.rx_offered { timeout_nsecs } else { 0 },
            tx: self.tx.as_ptr() as u64,
            tx_count: self.tx_count as u64,
            rx: self.rx.as_ptr() as u64,
            rx_count: if self.rx_offered {
                self.rx_slots as u64
            } else {
                0
            },
            ..HcNetExchange::default()
        };
        &mut self.arg
    }

    /// The argument of NET_EXCHANGE_AREA for an exchange that waits at
    /// most `timeout_nsecs`, as [`Exchange::prepare`] makes NET_EXCHANGE's:
    /// every queued frame, and the whole area if the cache is empty.
    /// `None` without an area ([`Exchange::uses_area`]).
    pub fn prepare_area(&mut self, timeout_nsecs: u64) -> Option<&mut HcNetExchangeArea> {
        self.rx_offered = !self.has_rx();
        let offered = self.rx_offered;
        let (tx, tx_count) = (self.tx.as_ptr() as u64, self.tx_count as u64);
        let (area, len) = (self.rx_data.as_ptr() as u64, self.rx_data.len() as u64);
        let arg = self.area.as_deref_mut()?;
        *arg = HcNetExchangeArea {
            handle: self.handle.raw(),
            timeout_nsecs: if offered { timeout_nsecs } else { 0 },
            tx,
            tx_count,
            rx_area: area,
            rx_area_len: if offered { len } else { 0 },
            rx_frame_cap: self.slot as u64,
            ..HcNetExchangeArea::default()
        };
        Some(arg)
    }

    /// Takes the OUT fields of the exchange [`Exchange::prepare`] set up
    /// (or [`Exchange::prepare_area`]) and returns the ready set to
    /// deliver: the host's, with this device in it while the cache holds
    /// frames. Values the host could not have meant (more frames than
    /// offered, lengths over a slot or past the area) are cut.
    pub fn complete(&mut self) -> u64 {
        let (tx_written, rx_read, ready_set, rx_used) = match self.area.as_deref() {
            Some(a) => (a.tx_written, a.rx_read, a.ready_set, a.rx_used),
            None => (self.arg.tx_written, self.arg.rx_read, self.arg.ready_set, 0),
        };
        let written = usize::try_from(tx_written)
            .unwrap_or(usize::MAX)
            .min(self.tx_count);
        self.tx_dropped += (self.tx_count - written) as u64;
        self.tx_count = 0;
        self.tx_used = 0;
        if self.rx_offered {
            self.rx_offered = false;
            self.rx_next = 0;
            let read = usize::try_from(rx_read).unwrap_or(usize::MAX);
            if self.area.is_some() {
                self.rx_at = 0;
                self.rx_used = usize::try_from(rx_used)
                    .unwrap_or(usize::MAX)
                    .min(self.rx_data.len());
                // Every record takes at least its header.
                self.rx_count = read.min(self.rx_used / EXCHANGE_AREA_RECORD_HEADER as usize);
            } else {
                self.rx_count = read.min(self.rx_slots);
            }
        }
        let own = 1u64 << self.handle.raw();
        let ready = ready_set & !own;
        if self.has_rx() { ready | own } else { ready }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const SLOT: usize = 1514;

    fn exchange() -> Exchange {
        Exchange::new(Handle::new(1).unwrap(), SLOT)
    }

    /// The `count` frames the TX table names, as a tender reads them.
    fn sent_frames(ex: &Exchange, count: u64) -> Vec<Vec<u8>> {
        let base = ex.tx_data.as_ptr() as u64;
        ex.tx[..count as usize]
            .iter()
            .map(|e| {
                let at = (e.data - base) as usize;
                ex.tx_data[at..at + e.len as usize].to_vec()
            })
            .collect()
    }

    /// What a tender does with the argument: takes the queued frames,
    /// fills RX slots with `incoming` (as many as offered), reports
    /// `ready`.
    fn tender(ex: &mut Exchange, incoming: &[&[u8]], ready: u64) -> Vec<Vec<u8>> {
        let arg = *ex.arg;
        let sent = sent_frames(ex, arg.tx_count);
        let n = incoming.len().min(arg.rx_count as usize);
        for (i, frame) in incoming[..n].iter().enumerate() {
            let at = (ex.rx[i].data - ex.rx_data.as_ptr() as u64) as usize;
            assert_eq!(ex.rx[i].cap, SLOT as u64);
            ex.rx_data[at..at + frame.len()].copy_from_slice(frame);
            ex.rx[i].len = frame.len() as u64;
        }
        ex.arg.tx_written = arg.tx_count;
        ex.arg.rx_read = n as u64;
        ex.arg.ready_set = ready;
        sent
    }

    #[test]
    fn queued_frames_leave_in_order_and_the_queue_empties() {
        let mut ex = exchange();
        ex.queue(b"first").unwrap();
        ex.queue(&[9u8; SLOT]).unwrap();
        assert_eq!(ex.queued(), 2);
        let arg = *ex.prepare(1000);
        assert_eq!((arg.handle, arg.timeout_nsecs), (1, 1000));
        assert_eq!((arg.tx_count, arg.rx_count), (2, RX_SLOTS as u64));
        let sent = tender(&mut ex, &[], 0);
        assert_eq!(sent, [b"first".to_vec(), [9u8; SLOT].to_vec()]);
        assert_eq!(ex.complete(), 0);
        assert_eq!(ex.queued(), 0);
        assert_eq!(ex.prepare(0).tx_count, 0);
    }

    #[test]
    fn a_full_queue_and_an_oversized_frame_are_refused() {
        let mut ex = exchange();
        for i in 0..TX_SLOTS {
            ex.queue(&[i as u8; 60]).unwrap();
        }
        assert_eq!(ex.queue(b"one more"), Err(ExchangeError::Full));
        assert_eq!(
            ex.queue(&[0u8; SLOT + 1]),
            Err(ExchangeError::TooLarge {
                len: SLOT + 1,
                max: SLOT
            })
        );
        ex.prepare(0);
        let sent = tender(&mut ex, &[], 0);
        assert_eq!(sent.len(), TX_SLOTS);
        assert_eq!(sent[TX_SLOTS - 1], [(TX_SLOTS - 1) as u8; 60]);
        ex.complete();
        ex.queue(b"room again").unwrap();
    }

    #[test]
    fn received_frames_are_served_from_the_cache_then_refilled() {
        let mut ex = exchange();
        let mut buf = [0u8; SLOT];
        assert_eq!(ex.take(&mut buf), None);
        ex.prepare(5);
        tender(&mut ex, &[b"one", b"two"], 1 << 1 | 1 << 3);
        // The device stays ready while frames are cached; others pass.
        assert_eq!(ex.complete(), 1 << 1 | 1 << 3);
        assert_eq!(ex.take(&mut buf), Some(3));
        assert_eq!(&buf[..3], b"one");
        // Cached frames left: the next exchange neither reads nor waits.
        let arg = *ex.prepare(5_000_000);
        assert_eq!((arg.rx_count, arg.timeout_nsecs), (0, 0));
        tender(&mut ex, &[b"not offered"], 0);
        assert_eq!(ex.complete(), 1 << 1);
        assert_eq!(ex.take(&mut buf), Some(3));
        assert_eq!(&buf[..3], b"two");
        assert_eq!(ex.take(&mut buf), None);
        // Empty: the device is not ready unless the host says so.
        ex.prepare(5);
        tender(&mut ex, &[], 0);
        assert_eq!(ex.complete(), 0);
    }

    #[test]
    fn a_short_buffer_gets_the_frame_cut() {
        let mut ex = exchange();
        ex.prepare(0);
        tender(&mut ex, &[b"a longer frame"], 0);
        ex.complete();
        let mut small = [0u8; 4];
        assert_eq!(ex.take(&mut small), Some(4));
        assert_eq!(&small, b"a lo");
    }

    #[test]
    fn impossible_host_answers_are_cut_and_refused_frames_counted() {
        let mut ex = exchange();
        ex.queue(b"x").unwrap();
        ex.queue(b"y").unwrap();
        ex.prepare(0);
        tender(&mut ex, &[b"z"], 0);
        ex.arg.tx_written = 1;
        ex.arg.rx_read = u64::MAX;
        ex.rx[0].len = u64::MAX;
        ex.complete();
        assert_eq!(ex.tx_dropped(), 1);
        assert_eq!(ex.queued(), 0);
        let mut buf = [0u8; SLOT + 10];
        // Every slot counts as read, each at most a slot long.
        let mut n = 0;
        while let Some(len) = ex.take(&mut buf) {
            assert!(len <= SLOT);
            n += 1;
        }
        assert_eq!(n, RX_SLOTS);
    }

    #[test]
    fn a_smaller_queue_packs_frames_and_offers_fewer_slots() {
        let mut ex = Exchange::with_sizes(Handle::new(1).unwrap(), SLOT, 2 * SLOT, 4);
        ex.queue(&[1u8; SLOT]).unwrap();
        ex.queue(&[2u8; 100]).unwrap();
        // The queue's bytes are full before its slots.
        assert_eq!(ex.queue(&[3u8; SLOT]), Err(ExchangeError::Full));
        ex.queue(&[4u8; SLOT - 100]).unwrap();
        assert_eq!(ex.tx[1].data - ex.tx[0].data, SLOT as u64);
        let arg = *ex.prepare(0);
        assert_eq!((arg.tx_count, arg.rx_count), (3, 4));
        let incoming: Vec<&[u8]> = vec![&b"x"[..]; 6];
        let sent = tender(&mut ex, &incoming, 0);
        assert_eq!(sent[1], [2u8; 100]);
        assert_eq!(sent[2], [4u8; SLOT - 100]);
        ex.complete();
        ex.queue(&[5u8; SLOT]).unwrap();
        let mut buf = [0u8; SLOT];
        let mut n = 0;
        while ex.take(&mut buf).is_some() {
            n += 1;
        }
        assert_eq!(n, 4);
    }

    /// What a tender does with NET_EXCHANGE_AREA's argument: takes the
    /// queued frames, packs `incoming` into the area while a whole frame
    /// of the cap fits, reports `ready`.
    fn area_tender(ex: &mut Exchange, incoming: &[&[u8]], ready: u64) -> (Vec<Vec<u8>>, usize) {
        let arg = **ex.area.as_ref().unwrap();
        let sent = sent_frames(ex, arg.tx_count);
        assert_eq!(arg.rx_area, ex.rx_data.as_ptr() as u64);
        let (mut used, mut read) = (0usize, 0usize);
        for frame in incoming {
            if (arg.rx_area_len as usize).saturating_sub(used) < 8 + arg.rx_frame_cap as usize {
                break;
            }
            ex.rx_data[used..used + 8].copy_from_slice(&(frame.len() as u64).to_le_bytes());
            ex.rx_data[used + 8..used + 8 + frame.len()].copy_from_slice(frame);
            used += area_record_len(frame.len() as u64) as usize;
            read += 1;
        }
        let out = ex.area.as_mut().unwrap();
        out.tx_written = arg.tx_count;
        out.rx_read = read as u64;
        out.rx_used = used as u64;
        out.ready_set = ready;
        (sent, read)
    }

    fn area_exchange(area: usize) -> Exchange {
        Exchange::with_area(Handle::new(1).unwrap(), SLOT, TX_SLOTS * SLOT, area)
    }

    #[test]
    fn an_area_caches_as_many_frames_as_fit_whatever_their_size() {
        let record = area_record_len(SLOT as u64) as usize;
        // The room of 8 slots: 8 full frames, or many more small ones.
        let mut ex = area_exchange(8 * record);
        assert!(ex.uses_area());
        ex.queue(b"out").unwrap();
        let arg = *ex.prepare_area(1000).unwrap();
        assert_eq!((arg.handle, arg.timeout_nsecs, arg.tx_count), (1, 1000, 1));
        assert_eq!(
            (arg.rx_area_len, arg.rx_frame_cap),
            ((8 * record) as u64, SLOT as u64)
        );
        let small: Vec<Vec<u8>> = (0..100u8)
            .map(|i| vec![i; 60 + usize::from(i % 7)])
            .collect();
        let refs: Vec<&[u8]> = small.iter().map(|f| &f[..]).collect();
        let (sent, read) = area_tender(&mut ex, &refs, 0);
        assert_eq!(sent, [b"out".to_vec()]);
        assert_eq!(read, 100, "all 100 small frames in one exchange");
        assert_eq!(ex.complete(), 1 << 1);
        let mut buf = [0u8; SLOT];
        for frame in &small {
            let n = ex.take(&mut buf).unwrap();
            assert_eq!(&buf[..n], &frame[..]);
        }
        assert_eq!(ex.take(&mut buf), None);
        assert_eq!(ex.complete(), 0);
        // Full frames: 8 per exchange, the rest in the next.
        let big: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; SLOT]).collect();
        let refs: Vec<&[u8]> = big.iter().map(|f| &f[..]).collect();
        ex.prepare_area(0).unwrap();
        assert_eq!(area_tender(&mut ex, &refs, 1 << 1).1, 8);
        ex.complete();
        // Frames cached: the next exchange offers no area and does not wait.
        let arg = *ex.prepare_area(5_000_000).unwrap();
        assert_eq!((arg.rx_area_len, arg.timeout_nsecs), (0, 0));
        area_tender(&mut ex, &refs, 0);
        assert_eq!(ex.complete(), 1 << 1);
        for frame in &big[..8] {
            let n = ex.take(&mut buf).unwrap();
            assert_eq!(&buf[..n], &frame[..]);
        }
        assert_eq!(ex.take(&mut buf), None);
    }

    /// An area of two records the host answered impossibly: "one", then
    /// "two" with a length past the record's room, and more frames and
    /// bytes than the area holds.
    fn area_with_impossible_answers() -> Exchange {
        let record = area_record_len(SLOT as u64) as usize;
        let mut ex = area_exchange(2 * record);
        ex.prepare_area(0).unwrap();
        area_tender(&mut ex, &[b"one", b"two"], 0);
        let out = ex.area.as_mut().unwrap();
        out.rx_read = u64::MAX;
        out.rx_used = u64::MAX;
        ex.rx_data[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        ex.complete();
        ex
    }

    #[test]
    fn impossible_area_answers_are_cut() {
        let mut ex = area_with_impossible_answers();
        let mut buf = [0u8; SLOT + 10];
        assert_eq!(ex.take(&mut buf), Some(3));
        assert_eq!(&buf[..3], b"one");
        // Cut to the slot, then the walk is past the area: empty.
        assert_eq!(ex.take(&mut buf), Some(SLOT));
        assert_eq!(ex.take(&mut buf), None);
        assert!(!ex.has_rx());
    }

    /// The next frame handed over in place, as bytes (`None`: the cache
    /// is empty and the closure was not called).
    fn lent(ex: &mut Exchange) -> Option<Vec<u8>> {
        let mut got = None;
        let taken = ex.take_in_place(&mut |f| got = Some(f.to_vec()));
        assert_eq!(taken, got.is_some());
        got
    }

    #[test]
    fn frames_lent_in_place_are_the_frames_the_host_wrote() {
        // NET_EXCHANGE's slots.
        let mut ex = exchange();
        assert_eq!(lent(&mut ex), None);
        ex.prepare(0);
        tender(&mut ex, &[b"one", b"two"], 0);
        ex.complete();
        assert_eq!(lent(&mut ex).as_deref(), Some(&b"one"[..]));
        let mut buf = [0u8; SLOT];
        assert_eq!(ex.take(&mut buf), Some(3), "in place and copies interleave");
        assert_eq!(&buf[..3], b"two");
        assert_eq!(lent(&mut ex), None);
        // The area: small frames and full ones, byte for byte.
        let mut ex = area_exchange(32 * area_record_len(SLOT as u64) as usize);
        ex.prepare_area(0).unwrap();
        let frames: Vec<Vec<u8>> = (0..20u8)
            .map(|i| (0..60 + usize::from(i) * 70).map(|j| j as u8 ^ i).collect())
            .chain([vec![9u8; SLOT]])
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        assert_eq!(area_tender(&mut ex, &refs, 0).1, frames.len());
        ex.complete();
        for frame in &frames {
            assert_eq!(lent(&mut ex).as_ref(), Some(frame));
        }
        assert_eq!(lent(&mut ex), None);
    }

    #[test]
    fn impossible_answers_are_cut_for_frames_lent_in_place() {
        let mut ex = area_with_impossible_answers();
        assert_eq!(lent(&mut ex).as_deref(), Some(&b"one"[..]));
        // Cut to the slot, within the area; then the walk is past it.
        assert_eq!(lent(&mut ex).map(|f| f.len()), Some(SLOT));
        assert_eq!(lent(&mut ex), None);
        assert!(!ex.has_rx());
        // NET_EXCHANGE: every slot counts as read, each at most a slot.
        let mut ex = exchange();
        ex.prepare(0);
        tender(&mut ex, &[b"z"], 0);
        ex.arg.rx_read = u64::MAX;
        ex.rx[0].len = u64::MAX;
        ex.complete();
        let mut n = 0;
        while let Some(f) = lent(&mut ex) {
            assert!(f.len() <= SLOT);
            n += 1;
        }
        assert_eq!(n, RX_SLOTS);
    }

    #[test]
    fn frames_filled_in_place_leave_like_copied_ones() {
        let mut ex = Exchange::with_sizes(Handle::new(1).unwrap(), SLOT, 2 * SLOT, 4);
        ex.queue(b"copied").unwrap();
        ex.queue_with(5, &mut |d| d.copy_from_slice(b"built"))
            .unwrap();
        let mut called = false;
        assert_eq!(
            ex.queue_with(2 * SLOT, &mut |_| called = true),
            Err(ExchangeError::TooLarge {
                len: 2 * SLOT,
                max: SLOT
            })
        );
        ex.queue_with(SLOT, &mut |d| d.fill(7)).unwrap();
        // No room: `fill` is not called and nothing is queued.
        assert_eq!(
            ex.queue_with(SLOT, &mut |_| called = true),
            Err(ExchangeError::Full)
        );
        assert!(!called);
        assert_eq!(ex.queued(), 3);
        ex.prepare(0);
        let sent = tender(&mut ex, &[], 0);
        assert_eq!(
            sent,
            [b"copied".to_vec(), b"built".to_vec(), [7u8; SLOT].to_vec()]
        );
        ex.complete();
        // The bytes a frame is built over are the queue's, reused.
        ex.queue_with(3, &mut |d| {
            assert_eq!(d, b"cop");
            d.copy_from_slice(b"new");
        })
        .unwrap();
        ex.prepare(0);
        assert_eq!(tender(&mut ex, &[], 0), [b"new".to_vec()]);
    }

    #[test]
    fn the_tables_name_fixed_slots() {
        let mut ex = exchange();
        ex.queue(&[0u8; SLOT]).unwrap();
        ex.queue(&[0u8; SLOT]).unwrap();
        assert_eq!(ex.tx[1].data - ex.tx[0].data, SLOT as u64);
        assert_eq!(ex.rx[RX_SLOTS - 1].cap, SLOT as u64);
        assert_eq!(
            ex.rx[RX_SLOTS - 1].data + SLOT as u64,
            ex.rx_data.as_ptr() as u64 + ex.rx_data.len() as u64
        );
    }

    use kiln_devices::net::{ETHERNET_HEADER_LEN, VNET_HEADER_LEN, VNET_MAX_FRAME};

    /// The largest frame with the header: a 64 KiB TCP segment.
    const SEGMENT: usize = VNET_HEADER_LEN + VNET_MAX_FRAME;

    /// How many frames of `len` bytes a fresh queue sized by
    /// [`queue_sizes`] for a heap of `heap` bytes takes before it is full.
    fn fits(vnet: bool, max_frame: usize, heap: usize, len: usize) -> usize {
        let (tx_bytes, rx_frames) = queue_sizes(vnet, max_frame, heap);
        let mut ex = Exchange::with_sizes(Handle::new(1).unwrap(), max_frame, tx_bytes, rx_frames);
        let frame = alloc::vec![0u8; len];
        let mut n = 0;
        while ex.queue(&frame) == Ok(()) {
            n += 1;
        }
        assert_eq!(ex.queue(&frame), Err(ExchangeError::Full));
        n
    }

    /// With the header and a heap of 32 MiB or more (the tenders' default
    /// is 512 MiB of guest memory), 16 connections' bulk send buffers of
    /// 128 KiB (2 MiB of 64 KiB segments) fit one exchange; the queue
    /// stays far below the 8 MiB of 64 slots of 64 KiB.
    #[test]
    fn a_queue_with_the_header_takes_two_mib_of_segments() {
        for heap in [LARGE_QUEUE_HEAP, 500 << 20] {
            assert_eq!(fits(true, SEGMENT, heap, SEGMENT), 32);
            let (tx_bytes, rx_frames) = queue_sizes(true, SEGMENT, heap);
            assert!(tx_bytes < 3 << 20, "{tx_bytes}");
            assert_eq!(rx_frames, 8);
            // Small frames: as many as the table names.
            assert_eq!(fits(true, SEGMENT, heap, 60), TX_SLOTS);
        }
    }

    /// A small heap keeps 1 MiB of queue: www still runs in 6 MiB of guest
    /// memory on hvt.
    #[test]
    fn a_small_heap_keeps_one_mib_of_segments() {
        for heap in [256 << 10, 4 << 20, LARGE_QUEUE_HEAP - 1] {
            assert_eq!(fits(true, SEGMENT, heap, SEGMENT), 16);
            assert_eq!(queue_sizes(true, SEGMENT, heap).1, 8);
            assert_eq!(fits(true, SEGMENT, heap, 60), TX_SLOTS);
        }
    }

    /// Without the header every slot holds a frame of the MTU, whatever
    /// the heap.
    #[test]
    fn a_queue_without_the_header_takes_a_frame_per_slot() {
        let frame = 1500 + ETHERNET_HEADER_LEN;
        for heap in [4 << 20, 500 << 20] {
            assert_eq!(fits(false, frame, heap, frame), TX_SLOTS);
            assert_eq!(queue_sizes(false, frame, heap).1, RX_SLOTS);
        }
    }
}
