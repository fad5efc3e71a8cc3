//! The net module: attaches a tap interface (`--net:NAME=IFACE`) or an
//! inherited descriptor (`--net:NAME=@FD`) to each `NET_BASIC` manifest
//! entry, and serves the net read and write hypercalls and kiln's
//! NET_EXCHANGE extension (`kiln_abi::hvt_ext`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use kiln_abi::hvt::{HcNetRead, HcNetWrite, Hypercall};
use kiln_abi::hvt_ext::{
    EXCHANGE_AREA_MAX, EXCHANGE_AREA_RECORD_HEADER, EXCHANGE_MAX_FRAMES, ExchangeRx, ExchangeTx,
    HcNetExchange, HcNetExchangeArea, KILN_FEATURE_NET_EXCHANGE, KILN_FEATURE_NET_RX_AREA,
    KILN_FEATURE_VNET_HDR, VNET_HEADER_LEN, VNET_MAX_FRAME, area_record_len,
};
use kiln_abi::mft::MftDeviceInfo;
use kiln_abi::note::KILN_GUEST_VNET_HDR;
use kiln_abi::status::Solo5Result;
use kiln_tender::net::{Inherited, NetFlags};
use std::mem::{offset_of, size_of};
use zerocopy::{FromBytes, IntoBytes};

use crate::guest::{GuestMemory, set_out};
use crate::hypercall::HypercallError;
use crate::module::{FdSyscall, Module, ModuleError};
use crate::sys::Epoll;

pub use kiln_tender::net::MTU;

/// Largest frame accepted from the guest on an interface of MTU
/// [`MTU`] (the bound grows with a tap's larger MTU): MTU plus an Ethernet
/// header with
/// a VLAN tag.
const MAX_FRAME: u64 = MTU as u64 + 18;

/// Most entries of an exchange table, as a `usize`.
const MAX_ENTRIES: usize = EXCHANGE_MAX_FRAMES as usize;

/// The net module.
#[derive(Debug, Default)]
pub struct Net {
    flags: NetFlags,
    /// Attached devices in the order of their flags: (order, handle, tap);
    /// the ring's I/O thread shares the taps.
    attached: Vec<(usize, u64, Arc<File>)>,
    /// Whether NET_EXCHANGE is served.
    exchange: bool,
    /// The largest MTU of an attached device, 0 before any.
    mtu: u16,
    /// Whether the guest declared it reads virtio-net headers: taps are
    /// opened with offloads.
    offloads: bool,
    /// The names of the devices whose tap took the offloads (frames carry
    /// the header), in the order attached.
    vnet_names: Vec<(u64, String)>,
    /// Whether every device's frames carry the header (the guest was told
    /// so: `KILN_FEATURE_VNET_HDR`).
    vnet: bool,
    /// Frames the guest sent with a malformed virtio-net header, refused.
    pub(crate) bad_headers: u64,
}

/// `flags` of a virtio-net header: the checksum from `csum_start` is
/// partial.
const VNET_F_NEEDS_CSUM: u8 = 1;
/// `gso_type` values a guest may send: none, TCP over IPv4, TCP over IPv6.
const VNET_GSO_NONE: u8 = 0;
const VNET_GSO_TCPV4: u8 = 1;
const VNET_GSO_TCPV6: u8 = 4;

/// Checks the virtio-net header in front of a frame a guest sends (`buf`:
/// header, then the Ethernet frame) against what the tap was negotiated
/// for, so that only headers the kernel is asked to act on and that point
/// inside the frame reach it: flags `NEEDS_CSUM` or none; a checksum
/// (`csum_start` + `csum_offset` + 2) inside the frame; `gso_type` none
/// (the frame then at most `max_plain` bytes), TCPv4 or TCPv6 (then with
/// `NEEDS_CSUM`, a non-zero `gso_size`, `hdr_len` past `csum_start` and
/// before the frame's end, and the matching EtherType). Returns why a
/// header is refused.
pub(crate) fn check_vnet_header(buf: &[u8], max_plain: u64) -> Result<(), &'static str> {
    let Some((h, frame)) = buf.split_at_checked(VNET_HEADER_LEN as usize) else {
        return Err("shorter than a virtio-net header");
    };
    let field = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
    let (flags, gso_type) = (h[0], h[1]);
    let (hdr_len, gso_size, csum_start, csum_offset) = (field(2), field(4), field(6), field(8));
    if frame.len() < 14 {
        return Err("the frame is shorter than an Ethernet header");
    }
    if flags & !VNET_F_NEEDS_CSUM != 0 {
        return Err("flags other than NEEDS_CSUM");
    }
    let csum = flags & VNET_F_NEEDS_CSUM != 0;
    if csum && usize::from(csum_start) + usize::from(csum_offset) + 2 > frame.len() {
        return Err("csum_start + csum_offset is outside the frame");
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    match gso_type {
        VNET_GSO_NONE => {
            if frame.len() as u64 > max_plain {
                return Err("a frame longer than the MTU without segmentation");
            }
        }
        VNET_GSO_TCPV4 | VNET_GSO_TCPV6 => {
            if !csum {
                return Err("segmentation without NEEDS_CSUM");
            }
            if gso_size == 0 {
                return Err("segmentation with gso_size 0");
            }
            if hdr_len <= csum_start || usize::from(hdr_len) >= frame.len() {
                return Err("hdr_len is not between csum_start and the frame's end");
            }
            let want = if gso_type == VNET_GSO_TCPV4 {
                0x0800
            } else {
                0x86dd
            };
            if ethertype != want {
                return Err("gso_type does not match the frame's EtherType");
            }
        }
        _ => return Err("a gso_type other than none, TCPv4 or TCPv6"),
    }
    Ok(())
}

/// Says on stderr, once per tender, that a guest sent a malformed
/// virtio-net header; every one is counted (`Net::bad_headers`).
fn report_bad_header(why: &str) {
    static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !REPORTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!(
            "kiln-hvt: refused a frame from the guest: malformed virtio-net header: {why} (frames are dropped and counted; later ones are not reported)"
        );
    }
}

/// The checked frames of one exchange to send: (address, length) each.
struct TxTable {
    frames: [(u64, u64); MAX_ENTRIES],
    count: usize,
}

/// Where one exchange puts the frames it reads, checked.
// One lives on the stack per exchange, like the tables before it; boxing
// the slots would allocate on every exit.
#[allow(clippy::large_enum_variant)]
enum Rx {
    /// NET_EXCHANGE: one buffer each, (address, capacity), and the length
    /// of the frame read into it.
    Slots {
        bufs: [(u64, u64); MAX_ENTRIES],
        count: usize,
        lens: [u64; MAX_ENTRIES],
    },
    /// NET_EXCHANGE_AREA: records packed into the `len` bytes at `base`,
    /// frames cut to `cap`; `used` bytes taken so far.
    Area {
        base: u64,
        len: u64,
        cap: u64,
        used: u64,
    },
}

impl Rx {
    /// Whether the guest offered room for any frame.
    fn offered(&self) -> bool {
        match self {
            Rx::Slots { count, .. } => *count > 0,
            Rx::Area { len, .. } => *len > 0,
        }
    }
}

/// How a run of reads ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drain {
    /// The device had no more frames.
    Empty,
    /// Every buffer was filled; more frames may wait.
    Full,
    /// A read failed.
    Failed,
}

/// Says on stderr, once per tender, why reading a tap failed. The guest is
/// told only `SOLO5_R_EUNSPEC`, as Solo5's tenders tell it; the operator
/// learns the cause without a line per frame.
pub(crate) fn report_read_error(e: &io::Error) {
    static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !REPORTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!(
            "kiln-hvt: reading a net device failed: {e}; the guest gets SOLO5_R_EUNSPEC (later failures are not reported)"
        );
    }
}

fn exchange_error(what: impl Into<String>, value: u64, why: impl Into<String>) -> HypercallError {
    HypercallError::Exchange {
        what: what.into(),
        value,
        why: why.into(),
    }
}

/// The exchange's count `n` (field `what`), at most
/// [`EXCHANGE_MAX_FRAMES`].
fn count(n: u64, what: &str) -> Result<usize, HypercallError> {
    if n > EXCHANGE_MAX_FRAMES {
        return Err(exchange_error(
            what,
            n,
            format!("more than the {EXCHANGE_MAX_FRAMES} an exchange may name"),
        ));
    }
    // At most 64.
    Ok(n as usize)
}

/// Reads and checks the frames an exchange sends (`tx_count` entries at
/// `tx`), before anything is sent: every entry through the checked
/// accessor.
fn tx_table(
    tx: u64,
    tx_count: u64,
    mem: &GuestMemory,
    max_frame: u64,
) -> Result<TxTable, HypercallError> {
    const TX_SIZE: u64 = size_of::<ExchangeTx>() as u64;
    let mut t = TxTable {
        frames: [(0, 0); MAX_ENTRIES],
        count: count(tx_count, "tx_count")?,
    };
    let table = mem
        .slice(tx, t.count as u64 * TX_SIZE)
        .map_err(|source| HypercallError::memory("net exchange", "tx table", source))?;
    for (i, (entry, slot)) in table
        .chunks_exact(TX_SIZE as usize)
        .zip(t.frames.iter_mut())
        .enumerate()
    {
        // A whole entry: `chunks_exact` of its size.
        let ExchangeTx { data, len } = ExchangeTx::read_from_bytes(entry).unwrap_or_default();
        if len == 0 {
            return Err(exchange_error(
                format!("tx[{i}].len"),
                len,
                "a frame cannot be empty",
            ));
        }
        if len > max_frame {
            return Err(exchange_error(
                format!("tx[{i}].len"),
                len,
                format!("more than the {max_frame} bytes of a frame"),
            ));
        }
        mem.checked(data, len)
            .map_err(|source| HypercallError::ExchangeMemory {
                table: "tx",
                index: i as u64,
                source,
            })?;
        *slot = (data, len);
    }
    Ok(t)
}

/// Reads and checks NET_EXCHANGE's buffer table (`rx_count` entries at
/// `rx`).
fn rx_slots(rx: u64, rx_count: u64, mem: &GuestMemory) -> Result<Rx, HypercallError> {
    const RX_SIZE: u64 = size_of::<ExchangeRx>() as u64;
    let mut bufs = [(0, 0); MAX_ENTRIES];
    let n = count(rx_count, "rx_count")?;
    let table = mem
        .slice(rx, n as u64 * RX_SIZE)
        .map_err(|source| HypercallError::memory("net exchange", "rx table", source))?;
    for (i, (entry, slot)) in table
        .chunks_exact(RX_SIZE as usize)
        .zip(bufs.iter_mut())
        .enumerate()
    {
        // A whole entry: `chunks_exact` of its size.
        let ExchangeRx { data, cap, .. } = ExchangeRx::read_from_bytes(entry).unwrap_or_default();
        if cap == 0 {
            return Err(exchange_error(
                format!("rx[{i}].cap"),
                cap,
                "a buffer cannot be empty",
            ));
        }
        mem.checked(data, cap)
            .map_err(|source| HypercallError::ExchangeMemory {
                table: "rx",
                index: i as u64,
                source,
            })?;
        *slot = (data, cap);
    }
    Ok(Rx::Slots {
        bufs,
        count: n,
        lens: [0; MAX_ENTRIES],
    })
}

/// Checks NET_EXCHANGE_AREA's receive area: at most
/// [`EXCHANGE_AREA_MAX`] bytes of writable guest memory, holding at least
/// one record of `cap` bytes (`cap` non-zero), or empty (nothing read).
fn rx_area(arg: &HcNetExchangeArea, mem: &mut GuestMemory) -> Result<Rx, HypercallError> {
    let (base, len, cap) = (arg.rx_area, arg.rx_area_len, arg.rx_frame_cap);
    if len > EXCHANGE_AREA_MAX {
        return Err(exchange_error(
            "rx_area_len",
            len,
            format!("more than the {EXCHANGE_AREA_MAX} bytes an area may have"),
        ));
    }
    if len > 0 {
        if cap == 0 {
            return Err(exchange_error(
                "rx_frame_cap",
                cap,
                "a frame cannot be empty",
            ));
        }
        if cap > len.saturating_sub(EXCHANGE_AREA_RECORD_HEADER) {
            return Err(exchange_error(
                "rx_frame_cap",
                cap,
                format!("more than the area of {len} bytes holds after a record's header"),
            ));
        }
        // Writable guest memory, checked whole before anything is sent.
        mem.slice_mut(base, len)
            .map_err(|source| HypercallError::memory("net exchange", "rx area", source))?;
    }
    Ok(Rx::Area {
        base,
        len,
        cap,
        used: 0,
    })
}

/// Reads frames from `tap` into `rx`, counting them in `*read`, until the
/// device is empty or `rx` is full.
fn drain(
    mut tap: &File,
    mem: &mut GuestMemory,
    rx: &mut Rx,
    read: &mut usize,
) -> Result<Drain, HypercallError> {
    loop {
        // Where the next frame goes, its room, and where its length is
        // recorded in the area (slots record it after the call).
        let (data, cap, header) = match rx {
            Rx::Slots { bufs, count, .. } => match bufs.get(..*count).and_then(|b| b.get(*read)) {
                Some(&(data, cap)) => (data, cap, None),
                None => return Ok(Drain::Full),
            },
            Rx::Area {
                base,
                len,
                cap,
                used,
            } => {
                if len.saturating_sub(*used) < EXCHANGE_AREA_RECORD_HEADER + *cap {
                    return Ok(Drain::Full);
                }
                let at = *base + *used;
                (at + EXCHANGE_AREA_RECORD_HEADER, *cap, Some(at))
            }
        };
        let buf = mem
            .slice_mut(data, cap)
            .map_err(|source| HypercallError::ExchangeMemory {
                table: if header.is_some() { "rx_area" } else { "rx" },
                index: *read as u64,
                source,
            })?;
        let n = match tap.read(buf) {
            Ok(n) => n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Drain::Empty),
            Err(e) => {
                report_read_error(&e);
                return Ok(Drain::Failed);
            }
        };
        match rx {
            Rx::Slots { lens, .. } => {
                if let Some(len) = lens.get_mut(*read) {
                    *len = n;
                }
            }
            Rx::Area { used, .. } => {
                if let Some(at) = header {
                    mem.write(at, &n.to_le_bytes()).map_err(|source| {
                        HypercallError::ExchangeMemory {
                            table: "rx_area",
                            index: *read as u64,
                            source,
                        }
                    })?;
                }
                *used += area_record_len(n);
            }
        }
        *read += 1;
    }
}

/// What one exchange did, for its OUT fields.
struct Done {
    ret: Solo5Result,
    written: usize,
    read: usize,
    ready: u64,
}

impl Net {
    /// The largest frame the guest may send: the largest MTU plus an
    /// Ethernet header with a VLAN tag.
    fn max_frame(&self) -> u64 {
        let plain = self.max_plain();
        if self.vnet {
            VNET_HEADER_LEN + VNET_MAX_FRAME.max(plain)
        } else {
            plain
        }
    }

    /// The largest frame without segmentation: the largest MTU plus an
    /// Ethernet header with a VLAN tag.
    fn max_plain(&self) -> u64 {
        MAX_FRAME.max(u64::from(self.mtu) + 18)
    }

    /// Whether `frame`, to be written to a device, may go: always without
    /// the header; with it, when [`check_vnet_header`] passes (else it is
    /// counted and reported).
    fn frame_ok(&mut self, frame: &[u8]) -> bool {
        if !self.vnet {
            return true;
        }
        match check_vnet_header(frame, self.max_plain()) {
            Ok(()) => true,
            Err(why) => {
                self.bad_headers += 1;
                report_bad_header(why);
                false
            }
        }
    }

    fn device(&mut self, handle: u64) -> Option<&File> {
        self.attached
            .iter()
            .find(|(_, h, _)| *h == handle)
            .map(|(_, _, f)| &**f)
    }

    fn write(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        const CALL: &str = "net write";
        let size = size_of::<HcNetWrite>() as u64;
        let HcNetWrite {
            handle, data, len, ..
        } = mem
            .read(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        let frame = mem
            .slice(data, len)
            .map_err(|source| HypercallError::memory(CALL, "frame", source))?;
        let ret = if len > self.max_frame() {
            Solo5Result::Einval
        } else if self.device(handle).is_some() && !self.frame_ok(frame) {
            // A malformed virtio-net header: refused, counted.
            Solo5Result::Einval
        } else {
            match self.device(handle) {
                None => Solo5Result::Einval,
                Some(mut tap) => match tap.write(frame) {
                    Ok(n) if n as u64 == len => Solo5Result::Ok,
                    _ => Solo5Result::Eunspec,
                },
            }
        };
        let out = mem
            .slice_mut(gpa, size)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        set_out(out, offset_of!(HcNetWrite, ret), ret as i32);
        Ok(())
    }

    /// NET_EXCHANGE: send, receive into one buffer a frame, and wait like
    /// POLL when nothing came.
    fn net_exchange(
        &mut self,
        gpa: u64,
        mem: &mut GuestMemory,
        epoll: &Epoll,
    ) -> Result<(), HypercallError> {
        const CALL: &str = "net exchange";
        let size = size_of::<HcNetExchange>() as u64;
        let arg: HcNetExchange = mem
            .read(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        let tx = tx_table(arg.tx, arg.tx_count, mem, self.max_frame())?;
        let mut rx = rx_slots(arg.rx, arg.rx_count, mem)?;
        let done = self.serve(arg.handle, arg.timeout_nsecs, &tx, &mut rx, mem, epoll)?;
        if let Rx::Slots { lens, .. } = &rx {
            let entry = size_of::<ExchangeRx>() as u64;
            for (i, &len) in lens.iter().take(done.read).enumerate() {
                let at = arg.rx + i as u64 * entry + offset_of!(ExchangeRx, len) as u64;
                mem.write(at, len.as_bytes())
                    .map_err(|source| HypercallError::memory(CALL, "rx table", source))?;
            }
        }
        let out = mem
            .slice_mut(gpa, size)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        set_out(
            out,
            offset_of!(HcNetExchange, tx_written),
            done.written as u64,
        );
        set_out(out, offset_of!(HcNetExchange, rx_read), done.read as u64);
        set_out(out, offset_of!(HcNetExchange, ready_set), done.ready);
        set_out(out, offset_of!(HcNetExchange, ret), done.ret as i32);
        Ok(())
    }

    /// NET_EXCHANGE_AREA: NET_EXCHANGE with the frames read packed into
    /// one area.
    fn net_exchange_area(
        &mut self,
        gpa: u64,
        mem: &mut GuestMemory,
        epoll: &Epoll,
    ) -> Result<(), HypercallError> {
        const CALL: &str = "net exchange";
        let size = size_of::<HcNetExchangeArea>() as u64;
        let arg: HcNetExchangeArea = mem
            .read(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        let tx = tx_table(arg.tx, arg.tx_count, mem, self.max_frame())?;
        let mut rx = rx_area(&arg, mem)?;
        let done = self.serve(arg.handle, arg.timeout_nsecs, &tx, &mut rx, mem, epoll)?;
        let used = match rx {
            Rx::Area { used, .. } => used,
            Rx::Slots { .. } => 0,
        };
        let out = mem
            .slice_mut(gpa, size)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        set_out(
            out,
            offset_of!(HcNetExchangeArea, tx_written),
            done.written as u64,
        );
        set_out(
            out,
            offset_of!(HcNetExchangeArea, rx_read),
            done.read as u64,
        );
        set_out(out, offset_of!(HcNetExchangeArea, rx_used), used);
        set_out(out, offset_of!(HcNetExchangeArea, ready_set), done.ready);
        set_out(out, offset_of!(HcNetExchangeArea, ret), done.ret as i32);
        Ok(())
    }

    /// The work of both exchanges once their tables are checked: sends
    /// `tx` on device `handle`, reads into `rx`, and waits like POLL at
    /// most `timeout` when nothing was read.
    fn serve(
        &mut self,
        handle: u64,
        timeout: u64,
        tx: &TxTable,
        rx: &mut Rx,
        mem: &mut GuestMemory,
        epoll: &Epoll,
    ) -> Result<Done, HypercallError> {
        const CALL: &str = "net exchange";
        let mut done = Done {
            ret: Solo5Result::Ok,
            written: 0,
            read: 0,
            ready: 0,
        };
        let (vnet, max_plain) = (self.vnet, self.max_plain());
        let mut bad_headers = 0u64;
        let Some(mut tap) = self.device(handle) else {
            done.ret = Solo5Result::Einval;
            return Ok(done);
        };
        for &(data, len) in tx.frames.iter().take(tx.count) {
            let frame = mem
                .slice(data, len)
                .map_err(|source| HypercallError::ExchangeMemory {
                    table: "tx",
                    index: done.written as u64,
                    source,
                })?;
            if vnet && let Err(why) = check_vnet_header(frame, max_plain) {
                // Dropped as a NIC drops a malformed descriptor: counted,
                // and the frames after it still go.
                bad_headers += 1;
                report_bad_header(why);
                done.written += 1;
                continue;
            }
            match tap.write(frame) {
                Ok(n) if n as u64 == len => done.written += 1,
                _ => {
                    done.ret = Solo5Result::Eunspec;
                    break;
                }
            }
        }
        let offered = rx.offered();
        let mut drained = drain(tap, mem, rx, &mut done.read)?;
        let wait = |timeout| {
            epoll
                .wait(timeout)
                .map_err(|source| HypercallError::Wait { call: CALL, source })
        };
        let own = 1u64.checked_shl(handle as u32).filter(|_| handle < 64);
        let own = own.unwrap_or(0);
        if done.read == 0 && timeout != 0 {
            done.ready = wait(timeout)?;
            if done.ready & own != 0 && offered {
                drained = drain(tap, mem, rx, &mut done.read)?;
            }
        } else if epoll.handles() & !own != 0 || !offered {
            // Other devices, or this one unread: look without waiting.
            done.ready = wait(0)?;
        }
        if offered {
            // What the reads found is the device's state now.
            done.ready &= !own;
            if drained == Drain::Full {
                done.ready |= own;
            }
        }
        if drained == Drain::Failed {
            done.ret = Solo5Result::Eunspec;
        }
        self.bad_headers += bad_headers;
        Ok(done)
    }

    fn read(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        const CALL: &str = "net read";
        let size = size_of::<HcNetRead>() as u64;
        let HcNetRead {
            handle, data, len, ..
        } = mem
            .read(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        // Check the buffer before reading anything into it.
        mem.checked(data, len)
            .map_err(|source| HypercallError::memory(CALL, "buffer", source))?;
        let mut got = 0u64;
        let ret = match self.device(handle) {
            None => Solo5Result::Einval,
            Some(mut tap) => {
                let buf = mem
                    .slice_mut(data, len)
                    .map_err(|source| HypercallError::memory(CALL, "buffer", source))?;
                match tap.read(buf) {
                    Ok(n) => {
                        got = n as u64;
                        Solo5Result::Ok
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Solo5Result::Again,
                    Err(e) => {
                        report_read_error(&e);
                        Solo5Result::Eunspec
                    }
                }
            }
        };
        let out = mem
            .slice_mut(gpa, size)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        if ret == Solo5Result::Ok {
            set_out(out, offset_of!(HcNetRead, len), got);
        }
        set_out(out, offset_of!(HcNetRead, ret), ret as i32);
        Ok(())
    }
}

kiln_tender::with_flags!(Net, NetFlags);

/// How kiln-hvt takes `--net:NAME=@FD`, with `taken` the descriptors
/// other devices hold.
fn inherited(taken: &[RawFd]) -> Inherited<'_> {
    Inherited {
        min_fd: 0,
        expected: "--net:NAME=@FD with FD a descriptor number",
        taken,
    }
}

/// The taps opened with offloads get them cleared as the tender ends
/// (while its seccomp filter is on, which allows exactly that ioctl on
/// them, and the read that waits for their guards): Solo5's tenders, which
/// open taps plain, may come next. The stopped guards are not reaped (the
/// filter has no `wait4`): the tender is ending.
impl Drop for Net {
    fn drop(&mut self) {
        for (_, _, tap) in &self.attached {
            let _ = kiln_tender::net::release(tap.as_fd());
        }
    }
}

impl Module for Net {
    fn attach(&mut self, handle: u64, name: &str) -> Result<MftDeviceInfo, ModuleError> {
        // One descriptor given to two devices would be owned, and closed,
        // twice.
        let taken: Vec<RawFd> = self
            .attached
            .iter()
            .map(|(_, _, f)| f.as_raw_fd())
            .collect();
        let offloads = if self.offloads {
            kiln_tender::net::TCP_OFFLOADS
        } else {
            0
        };
        let opened = self.flags.open(name, inherited(&taken), offloads)?;
        if opened.vnet_header {
            self.vnet_names.push((handle, name.to_string()));
        }
        self.attached
            .push((opened.order, handle, Arc::new(File::from(opened.fd))));
        self.attached.sort_by_key(|(order, _, _)| *order);
        self.mtu = self.mtu.max(opened.mtu);
        Ok(MftDeviceInfo::net(opened.mac, opened.mtu))
    }

    fn serves(&self, hc: Hypercall) -> bool {
        matches!(hc, Hypercall::NetRead | Hypercall::NetWrite)
    }

    fn hypercall(
        &mut self,
        hc: Hypercall,
        gpa: u64,
        mem: &mut GuestMemory,
    ) -> Result<(), HypercallError> {
        match hc {
            Hypercall::NetWrite => self.write(gpa, mem),
            Hypercall::NetRead => self.read(gpa, mem),
            other => Err(HypercallError::Unserved { call: other.name() }),
        }
    }

    fn guest_features(&mut self, features: u32) {
        self.offloads = features & KILN_GUEST_VNET_HDR != 0;
    }

    fn enable_extensions(&mut self) -> u32 {
        self.exchange = true;
        self.vnet = self.flags.header_for_all(
            "kiln-hvt",
            inherited(&[]),
            &mut self.attached,
            &mut self.vnet_names,
            |fd| Arc::new(File::from(fd)),
        );
        let exchanges = KILN_FEATURE_NET_EXCHANGE | KILN_FEATURE_NET_RX_AREA;
        if self.vnet {
            exchanges | KILN_FEATURE_VNET_HDR
        } else {
            exchanges
        }
    }

    fn serves_exchange(&self) -> bool {
        self.exchange
    }

    fn exchange(
        &mut self,
        gpa: u64,
        mem: &mut GuestMemory,
        epoll: &Epoll,
    ) -> Result<(), HypercallError> {
        self.net_exchange(gpa, mem, epoll)
    }

    fn exchange_area(
        &mut self,
        gpa: u64,
        mem: &mut GuestMemory,
        epoll: &Epoll,
    ) -> Result<(), HypercallError> {
        self.net_exchange_area(gpa, mem, epoll)
    }

    fn ring_devices(&self) -> Option<crate::ring::RingDevices> {
        // A guest that reads virtio-net headers is kiln's, which uses
        // NET_EXCHANGE; the ring's thread does not check headers.
        (!self.attached.is_empty() && !self.vnet).then(|| crate::ring::RingDevices {
            taps: self
                .attached
                .iter()
                .map(|(_, h, f)| (*h, f.clone()))
                .collect(),
            max_frame: self.max_frame(),
        })
    }

    fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, u64)> {
        self.attached
            .iter()
            .map(|(_, h, f)| (f.as_fd(), *h))
            .collect()
    }

    fn syscalls(&self) -> Vec<FdSyscall> {
        self.attached
            .iter()
            .flat_map(|(_, _, f)| {
                let fd = f.as_raw_fd();
                [
                    FdSyscall {
                        nr: libc::SYS_read,
                        name: "read",
                        fd,
                    },
                    FdSyscall {
                        nr: libc::SYS_write,
                        name: "write",
                        fd,
                    },
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    use super::*;

    const MEM: u64 = 0x20_0000;
    const ARG: u64 = 0x1000;
    const TX: u64 = 0x2000;
    const RX: u64 = 0x3000;
    const FRAMES: u64 = 0x1_0000;
    const BUFS: u64 = 0x8_0000;
    const HANDLE: u64 = 1;

    /// A net module with one device (handle 1) whose host end is a
    /// datagram socket, the guest memory, and the epoll set POLL uses.
    struct Rig {
        net: Net,
        host: UnixDatagram,
        mem: GuestMemory,
        epoll: Epoll,
    }

    impl Rig {
        fn new() -> Rig {
            let (host, guest) = UnixDatagram::pair().unwrap();
            guest.set_nonblocking(true).unwrap();
            host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut net = Net::default();
            assert_eq!(
                net.enable_extensions(),
                KILN_FEATURE_NET_EXCHANGE | KILN_FEATURE_NET_RX_AREA
            );
            net.attached.push((
                0,
                HANDLE,
                Arc::new(File::from(std::os::fd::OwnedFd::from(guest))),
            ));
            let epoll = Epoll::new().unwrap();
            for (fd, handle) in net.poll_fds() {
                epoll.add(fd, handle).unwrap();
            }
            Rig {
                net,
                host,
                mem: GuestMemory::new(MEM).unwrap(),
                epoll,
            }
        }

        /// Writes the argument: `frames` to send (each placed in guest
        /// memory), `bufs` receive buffers of `cap` bytes.
        fn arg(&mut self, handle: u64, timeout: u64, frames: &[&[u8]], bufs: u64, cap: u64) {
            let mut tx = Vec::new();
            let mut at = FRAMES;
            for f in frames {
                self.mem.write(at, f).unwrap();
                tx.extend_from_slice(&at.to_le_bytes());
                tx.extend_from_slice(&(f.len() as u64).to_le_bytes());
                at += 0x800;
            }
            self.mem.write(TX, &tx).unwrap();
            let mut rx = Vec::new();
            for i in 0..bufs {
                rx.extend_from_slice(&(BUFS + i * 0x800).to_le_bytes());
                rx.extend_from_slice(&cap.to_le_bytes());
                rx.extend_from_slice(&u64::MAX.to_le_bytes());
            }
            self.mem.write(RX, &rx).unwrap();
            let words = [
                handle,
                timeout,
                TX,
                frames.len() as u64,
                RX,
                bufs,
                u64::MAX,
                u64::MAX,
                u64::MAX,
            ];
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            self.mem.write(ARG, &bytes).unwrap();
            self.mem.write(ARG + 72, &[0xee; 8]).unwrap();
        }

        fn set(&mut self, at: u64, value: u64) {
            self.mem.write(at, &value.to_le_bytes()).unwrap();
        }

        fn run(&mut self) -> Result<(), HypercallError> {
            self.net.exchange(ARG, &mut self.mem, &self.epoll)
        }

        fn out(&self, field: fn(&HcNetExchange) -> u64) -> u64 {
            field(&self.mem.read(ARG).unwrap())
        }

        fn ret(&self) -> i32 {
            self.mem.read::<HcNetExchange>(ARG).unwrap().ret
        }

        /// The OUT length of receive buffer `i`.
        fn rx_len(&self, i: u64) -> u64 {
            self.mem.read::<ExchangeRx>(RX + i * 24).unwrap().len
        }

        /// The frame in receive buffer `i`, by its OUT length.
        fn received(&self, i: u64) -> Vec<u8> {
            let len = self.rx_len(i);
            self.mem.slice(BUFS + i * 0x800, len).unwrap().to_vec()
        }
    }

    const WRITTEN: fn(&HcNetExchange) -> u64 = |a| a.tx_written;
    const READ: fn(&HcNetExchange) -> u64 = |a| a.rx_read;
    const READY: fn(&HcNetExchange) -> u64 = |a| a.ready_set;

    #[test]
    fn an_exchange_sends_then_reads_what_waits() {
        let mut rig = Rig::new();
        rig.host.send(b"in one").unwrap();
        rig.host.send(b"in two").unwrap();
        rig.arg(HANDLE, 5_000_000_000, &[b"out one", b"out two!"], 4, 1514);
        rig.run().unwrap();
        assert_eq!(rig.ret(), 0);
        assert_eq!(rig.out(WRITTEN), 2);
        assert_eq!(rig.out(READ), 2);
        // Drained: the device is not ready.
        assert_eq!(rig.out(READY), 0);
        assert_eq!(rig.received(0), b"in one");
        assert_eq!(rig.received(1), b"in two");
        // Buffers not filled keep their length.
        assert_eq!(rig.rx_len(2), u64::MAX);
        let mut got = [0u8; 64];
        let n = rig.host.recv(&mut got).unwrap();
        assert_eq!(&got[..n], b"out one");
        let n = rig.host.recv(&mut got).unwrap();
        assert_eq!(&got[..n], b"out two!");
    }

    #[test]
    fn full_buffers_leave_the_device_ready() {
        let mut rig = Rig::new();
        for f in [b"a", b"b", b"c"] {
            rig.host.send(f).unwrap();
        }
        rig.arg(HANDLE, 0, &[], 2, 1514);
        rig.run().unwrap();
        assert_eq!((rig.out(READ), rig.out(READY)), (2, 1 << HANDLE));
        assert_eq!(rig.received(1), b"b");
        rig.arg(HANDLE, 0, &[], 2, 1514);
        rig.run().unwrap();
        assert_eq!((rig.out(READ), rig.out(READY)), (1, 0));
        assert_eq!(rig.received(0), b"c");
        // No buffers: the device's readiness as POLL sees it.
        rig.host.send(b"d").unwrap();
        rig.arg(HANDLE, 0, &[], 0, 1514);
        rig.run().unwrap();
        assert_eq!((rig.out(READ), rig.out(READY)), (0, 1 << HANDLE));
    }

    #[test]
    fn with_nothing_read_it_waits_like_poll_then_reads() {
        let mut rig = Rig::new();
        // Nothing arrives: the whole timeout passes.
        rig.arg(HANDLE, 20_000_000, &[b"ping"], 4, 1514);
        let start = Instant::now();
        rig.run().unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!((rig.out(WRITTEN), rig.out(READ), rig.out(READY)), (1, 0, 0));
        // A zero timeout does not wait.
        rig.arg(HANDLE, 0, &[], 4, 1514);
        let start = Instant::now();
        rig.run().unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(rig.out(READ), 0);
        // A frame that arrives during the wait is read by the same call.
        let host = rig.host.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            host.send(b"late").unwrap();
        });
        rig.arg(HANDLE, 5_000_000_000, &[], 4, 1514);
        rig.run().unwrap();
        sender.join().unwrap();
        assert_eq!((rig.out(READ), rig.out(READY)), (1, 0));
        assert_eq!(rig.received(0), b"late");
    }

    #[test]
    fn a_frame_longer_than_its_buffer_is_cut() {
        let mut rig = Rig::new();
        rig.host.send(&[7u8; 100]).unwrap();
        rig.arg(HANDLE, 0, &[], 1, 10);
        rig.run().unwrap();
        assert_eq!(rig.out(READ), 1);
        assert_eq!(rig.received(0), [7u8; 10]);
    }

    #[test]
    fn an_unknown_handle_is_einval_with_nothing_done() {
        let mut rig = Rig::new();
        rig.host.send(b"stay").unwrap();
        rig.arg(7, 5_000_000_000, &[b"never"], 1, 1514);
        rig.run().unwrap();
        assert_eq!(rig.ret(), Solo5Result::Einval as i32);
        assert_eq!((rig.out(WRITTEN), rig.out(READ)), (0, 0));
        rig.host.set_nonblocking(true).unwrap();
        assert!(rig.host.recv(&mut [0u8; 16]).is_err());
    }

    #[test]
    fn a_refused_write_stops_sending_and_is_eunspec() {
        let mut rig = Rig::new();
        // The device's peer is gone: writes fail.
        let (gone, guest) = UnixDatagram::pair().unwrap();
        drop(gone);
        guest.set_nonblocking(true).unwrap();
        rig.net.attached.clear();
        rig.net.attached.push((
            0,
            HANDLE,
            Arc::new(File::from(std::os::fd::OwnedFd::from(guest))),
        ));
        rig.arg(HANDLE, 0, &[b"one", b"two"], 1, 1514);
        rig.run().unwrap();
        assert_eq!(rig.ret(), Solo5Result::Eunspec as i32);
        assert_eq!(rig.out(WRITTEN), 0);
    }

    /// A frame of `len` bytes after a virtio-net header: IPv4, TCP from
    /// byte 34 with its checksum at 34 + 16, headers 54 bytes long.
    fn vnet_frame(len: usize, flags: u8, gso_type: u8, gso_size: u16) -> Vec<u8> {
        let mut f = vec![0u8; 10 + len];
        f[0] = flags;
        f[1] = gso_type;
        f[2..4].copy_from_slice(&54u16.to_le_bytes());
        f[4..6].copy_from_slice(&gso_size.to_le_bytes());
        f[6..8].copy_from_slice(&34u16.to_le_bytes());
        f[8..10].copy_from_slice(&16u16.to_le_bytes());
        f[10 + 12..10 + 14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    #[test]
    fn virtio_net_headers_are_checked_against_the_frame() {
        const PLAIN: u64 = 1518;
        let good = [
            ("no offload", vnet_frame(60, 0, 0, 0)),
            ("checksum", vnet_frame(60, 1, 0, 0)),
            ("checksum, largest plain frame", vnet_frame(1518, 1, 0, 0)),
            ("TSO over IPv4", vnet_frame(65_000, 1, 1, 1448)),
        ];
        for (name, f) in good {
            assert_eq!(check_vnet_header(&f, PLAIN), Ok(()), "{name}");
        }
        let mut v6_as_v4 = vnet_frame(3000, 1, 4, 1448);
        v6_as_v4[10 + 13] = 0;
        let mut hdr_len_zero = vnet_frame(3000, 1, 1, 1448);
        hdr_len_zero[2..4].copy_from_slice(&0u16.to_le_bytes());
        let mut hdr_len_past = vnet_frame(3000, 1, 1, 1448);
        hdr_len_past[2..4].copy_from_slice(&3000u16.to_le_bytes());
        let mut csum_past = vnet_frame(60, 1, 0, 0);
        csum_past[8..10].copy_from_slice(&25u16.to_le_bytes());
        let mut csum_huge = vnet_frame(60, 1, 0, 0);
        csum_huge[6..10].copy_from_slice(&[0xff; 4]);
        let bad = [
            (
                "shorter than the header",
                vec![0u8; 9],
                "shorter than a virtio-net header",
            ),
            (
                "no Ethernet header",
                vec![0u8; 10 + 13],
                "shorter than an Ethernet header",
            ),
            (
                "DATA_VALID",
                vnet_frame(60, 2, 0, 0),
                "flags other than NEEDS_CSUM",
            ),
            ("checksum past the end", csum_past, "outside the frame"),
            (
                "checksum offsets overflowing u16",
                csum_huge,
                "outside the frame",
            ),
            (
                "unknown gso_type",
                vnet_frame(3000, 1, 3, 1448),
                "a gso_type other than",
            ),
            (
                "ECN bit",
                vnet_frame(3000, 1, 0x81, 1448),
                "a gso_type other than",
            ),
            (
                "TSO without checksum",
                vnet_frame(3000, 0, 1, 1448),
                "without NEEDS_CSUM",
            ),
            ("gso_size 0", vnet_frame(3000, 1, 1, 0), "gso_size 0"),
            ("hdr_len 0", hdr_len_zero, "hdr_len"),
            ("hdr_len past the frame", hdr_len_past, "hdr_len"),
            ("TCPv6 on an IPv4 frame", v6_as_v4, "EtherType"),
            (
                "long frame without TSO",
                vnet_frame(1519, 1, 0, 0),
                "longer than the MTU",
            ),
        ];
        for (name, f, why) in bad {
            let err = check_vnet_header(&f, PLAIN).expect_err(name);
            assert!(err.contains(why), "{name}: {err}");
        }
    }

    /// A guest with the header on: a malformed header drops its frame
    /// (counted), the frames after it still go, and the tender goes on;
    /// frames of up to 64 KiB plus the header pass the table checks.
    #[test]
    fn an_exchange_drops_frames_with_malformed_headers_and_goes_on() {
        let mut rig = Rig::new();
        rig.net.vnet = true;
        let bad = vnet_frame(60, 1, 0x33, 0);
        let good = vnet_frame(60, 1, 0, 0);
        rig.arg(HANDLE, 0, &[&bad, &good, &bad], 1, 1514);
        rig.run().unwrap();
        assert_eq!(rig.ret(), 0);
        assert_eq!(rig.out(WRITTEN), 3);
        assert_eq!(rig.net.bad_headers, 2);
        rig.host.set_nonblocking(true).unwrap();
        let mut got = [0u8; 128];
        let n = rig.host.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &good[..]);
        assert!(rig.host.recv(&mut got).is_err(), "a malformed frame went");
        // The largest segment and header fit; one byte more is refused.
        let max = (VNET_HEADER_LEN + VNET_MAX_FRAME) as usize;
        let big = vnet_frame(max - 10, 1, 1, 1448);
        let mut rig = Rig::new();
        rig.net.vnet = true;
        rig.mem.write(FRAMES, &big).unwrap();
        rig.arg(HANDLE, 0, &[], 0, 1514);
        rig.mem
            .write(
                TX,
                &[FRAMES.to_le_bytes(), (max as u64).to_le_bytes()].concat(),
            )
            .unwrap();
        rig.set(ARG + 24, 1);
        rig.run().unwrap();
        assert_eq!(
            (rig.ret(), rig.out(WRITTEN), rig.net.bad_headers),
            (0, 1, 0)
        );
        rig.set(TX + 8, max as u64 + 1);
        let err = rig.run().expect_err("one byte more");
        assert!(crate::report(&err).contains("more than the"), "{err}");
        // Without the header the bound is the plain frame's.
        rig.net.vnet = false;
        rig.set(TX + 8, 1519);
        assert!(rig.run().is_err());
    }

    /// Writes NET_EXCHANGE_AREA's argument at [`ARG`]: `frames` to send
    /// (as [`Rig::arg`] places them), an area of `len` bytes at [`BUFS`],
    /// frames cut to `cap`.
    fn area_arg(rig: &mut Rig, frames: &[&[u8]], len: u64, cap: u64) {
        rig.arg(HANDLE, 5_000_000_000, frames, 0, 0);
        let words = [
            HANDLE,
            5_000_000_000,
            TX,
            frames.len() as u64,
            BUFS,
            len,
            cap,
            u64::MAX,
            u64::MAX,
            u64::MAX,
            u64::MAX,
            u64::MAX,
        ];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        rig.mem.write(ARG, &bytes).unwrap();
    }

    fn area_out(rig: &Rig) -> HcNetExchangeArea {
        rig.mem.read(ARG).unwrap()
    }

    /// The frames of the records NET_EXCHANGE_AREA wrote, walked as a
    /// guest walks them.
    fn records(rig: &Rig, count: u64) -> Vec<Vec<u8>> {
        let mut at = BUFS;
        (0..count)
            .map(|_| {
                let len = u64::from_le_bytes(rig.mem.read_array(at).unwrap());
                let frame = rig.mem.slice(at + 8, len).unwrap().to_vec();
                at += area_record_len(len);
                frame
            })
            .collect()
    }

    #[test]
    fn an_area_takes_many_small_frames_in_one_exchange() {
        let mut rig = Rig::new();
        // More frames than a table of buffers may name (64).
        let sent: Vec<Vec<u8>> = (0..100u8)
            .map(|i| vec![i; 60 + usize::from(i % 5)])
            .collect();
        for f in &sent {
            rig.host.send(f).unwrap();
        }
        area_arg(&mut rig, &[b"out one", b"out two!"], 0x1_0000, 1514);
        rig.net
            .exchange_area(ARG, &mut rig.mem, &rig.epoll)
            .unwrap();
        let out = area_out(&rig);
        assert_eq!((out.ret, out.tx_written, out.rx_read), (0, 2, 100));
        let used: u64 = sent.iter().map(|f| area_record_len(f.len() as u64)).sum();
        assert_eq!(out.rx_used, used);
        // Drained: the device is not ready.
        assert_eq!(out.ready_set, 0);
        assert_eq!(records(&rig, 100), sent);
        let mut buf = [0u8; 16];
        let n = rig.host.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"out one");
    }

    #[test]
    fn an_area_reads_a_frame_only_while_a_whole_one_fits() {
        let mut rig = Rig::new();
        for i in 0..3u8 {
            rig.host.send(&[i; 1514]).unwrap();
        }
        // Room for two records of 1,514 bytes and a little more.
        let len = 2 * area_record_len(1514) + 100;
        area_arg(&mut rig, &[], len, 1514);
        rig.net
            .exchange_area(ARG, &mut rig.mem, &rig.epoll)
            .unwrap();
        let out = area_out(&rig);
        assert_eq!(
            (out.ret, out.rx_read, out.rx_used),
            (0, 2, 2 * area_record_len(1514))
        );
        // Full: the third frame waits, and the device says so.
        assert_eq!(out.ready_set, 1 << HANDLE);
        assert_eq!(records(&rig, 2), [vec![0u8; 1514], vec![1u8; 1514]]);
        // The next exchange gets it; a longer frame is cut to the cap.
        rig.host.send(&[9u8; 1000]).unwrap();
        area_arg(&mut rig, &[], len, 600);
        rig.net
            .exchange_area(ARG, &mut rig.mem, &rig.epoll)
            .unwrap();
        let out = area_out(&rig);
        assert_eq!((out.rx_read, out.ready_set), (2, 0));
        assert_eq!(records(&rig, 2), [vec![2u8; 600], vec![9u8; 600]]);
        // An empty area reads nothing and leaves the device ready.
        rig.host.send(b"later").unwrap();
        area_arg(&mut rig, &[], 0, 0);
        rig.net
            .exchange_area(ARG, &mut rig.mem, &rig.epoll)
            .unwrap();
        let out = area_out(&rig);
        assert_eq!((out.ret, out.rx_read, out.rx_used), (0, 0, 0));
        assert_eq!(out.ready_set, 1 << HANDLE);
    }

    /// Hostile areas stop the guest with an error naming the field, before
    /// any frame is sent or read.
    #[test]
    fn hostile_areas_are_refused_before_anything_is_sent() {
        let record = area_record_len(1514);
        let cases: [(&str, u64, u64, u64, &str); 7] = [
            (
                "area over the bound",
                BUFS,
                EXCHANGE_AREA_MAX + 1,
                1514,
                "rx_area_len is 4194305, more than the 4194304 bytes",
            ),
            ("frame cap 0", BUFS, record, 0, "rx_frame_cap is 0"),
            (
                "frame cap past the area",
                BUFS,
                1000,
                993,
                "rx_frame_cap is 993, more than the area of 1000 bytes holds",
            ),
            (
                "area outside memory",
                MEM - 100,
                record,
                1514,
                "bad rx area address",
            ),
            (
                "area overflowing",
                u64::MAX - 8,
                record,
                1514,
                "bad rx area address",
            ),
            (
                "all of memory, read-only part included",
                0,
                MEM,
                1514,
                "bad rx area address",
            ),
            (
                "area in read-only memory",
                RO,
                record,
                1514,
                "bad rx area address",
            ),
        ];
        const RO: u64 = 0x10_0000;
        for (name, area, len, cap, message) in cases {
            let mut rig = Rig::new();
            rig.mem.protect(RO, RO + 0x1_0000).unwrap();
            rig.host.send(b"waiting").unwrap();
            area_arg(&mut rig, &[b"one", b"two"], len, cap);
            rig.set(ARG + 32, area);
            let err = rig
                .net
                .exchange_area(ARG, &mut rig.mem, &rig.epoll)
                .expect_err(name);
            let text = crate::report(&err);
            assert!(text.contains(message), "{name}: {text}");
            rig.host.set_nonblocking(true).unwrap();
            assert!(
                rig.host.recv(&mut [0u8; 16]).is_err(),
                "{name}: a frame was sent"
            );
        }
        // The tables are NET_EXCHANGE's, checked the same way.
        let mut rig = Rig::new();
        area_arg(&mut rig, &[b"one"], record, 1514);
        rig.set(ARG + 24, EXCHANGE_MAX_FRAMES + 1);
        let err = rig
            .net
            .exchange_area(ARG, &mut rig.mem, &rig.epoll)
            .expect_err("tx_count");
        assert!(crate::report(&err).contains("tx_count is 65"), "{err}");
        // The argument itself outside memory.
        let err = rig
            .net
            .exchange_area(MEM - 8, &mut rig.mem, &rig.epoll)
            .expect_err("argument");
        assert!(
            crate::report(&err).contains("net exchange hypercall: bad argument address"),
            "{err}"
        );
    }

    /// Hostile arguments stop the guest with an error naming the field,
    /// before any frame is sent.
    #[test]
    fn hostile_exchanges_are_refused_before_anything_is_sent() {
        let cases: [(&str, u64, u64, &str); 10] = [
            (
                "tx_count over the bound",
                ARG + 24,
                EXCHANGE_MAX_FRAMES + 1,
                "tx_count is 65, more than the 64 an exchange may name",
            ),
            (
                "rx_count huge",
                ARG + 40,
                u64::MAX,
                "rx_count is 18446744073709551615, more than the 64",
            ),
            (
                "empty frame",
                TX + 16 + 8,
                0,
                "tx[1].len is 0, a frame cannot be empty",
            ),
            (
                "frame over the MTU",
                TX + 8,
                MAX_FRAME + 1,
                "tx[0].len is 1519, more than the 1518 bytes of a frame",
            ),
            (
                "frame outside memory",
                TX + 16,
                MEM - 2,
                "bad tx[1] address",
            ),
            (
                "frame address overflowing",
                TX,
                u64::MAX - 2,
                "bad tx[0] address",
            ),
            (
                "tx table outside memory",
                ARG + 16,
                MEM - 16,
                "bad tx table address",
            ),
            (
                "rx table overflowing",
                ARG + 32,
                u64::MAX - 8,
                "bad rx table address",
            ),
            (
                "empty buffer",
                RX + 24 + 8,
                0,
                "rx[1].cap is 0, a buffer cannot be empty",
            ),
            (
                "buffer outside memory",
                RX + 8,
                u64::MAX,
                "bad rx[0] address",
            ),
        ];
        for (name, at, value, message) in cases {
            let mut rig = Rig::new();
            rig.host.send(b"waiting").unwrap();
            rig.arg(HANDLE, 5_000_000_000, &[b"one", b"two"], 2, 1514);
            rig.set(at, value);
            let err = rig.run().expect_err(name);
            let text = crate::report(&err);
            assert!(text.contains(message), "{name}: {text}");
            rig.host.set_nonblocking(true).unwrap();
            assert!(
                rig.host.recv(&mut [0u8; 16]).is_err(),
                "{name}: a frame was sent"
            );
        }
        // The argument itself outside memory.
        let mut rig = Rig::new();
        let err = rig
            .net
            .exchange(MEM - 8, &mut rig.mem, &rig.epoll)
            .expect_err("argument");
        assert!(
            crate::report(&err).contains("net exchange hypercall: bad argument address"),
            "{err}"
        );
    }
}
