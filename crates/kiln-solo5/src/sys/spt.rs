//! The spt host interface (Solo5 `spt_abi.h`, version 2): raw Linux system
//! calls, no libc, and only those kiln-spt's seccomp filter allows: `write`
//! on fd 1 (console), `read`/`write` on a net device's fd,
//! `pread64`/`pwrite64`/`fdatasync` on a block device's fd (in the lengths
//! [`crate::split`] produces), `timerfd_settime` on the boot info's timer,
//! `epoll_pwait` on its epoll set, `clock_gettime` and `exit_group`. Any
//! other call kills the guest.
//!
//! The functions mirror the hvt hypercall layer (`sys::hvt`) one for one,
//! so that the devices above are shared.

use core::arch::asm;
use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

use kiln_abi::spt::SPT_INTERNAL_TIMERFD;
use kiln_abi::spt_ext::{KILN_SPT_STOP_EVENT, KILN_STOP_ACK};
use kiln_abi::status::EXIT_ABORT;

use crate::outcome::Failure;
use crate::reactor::MAX_HANDLES;

const SYS_READ: u64 = 0;
const SYS_WRITE: u64 = 1;
const SYS_PREAD64: u64 = 17;
const SYS_PWRITE64: u64 = 18;
const SYS_EXIT_GROUP: u64 = 231;
const SYS_CLOCK_GETTIME: u64 = 228;
const SYS_EPOLL_PWAIT: u64 = 281;
const SYS_TIMERFD_SETTIME: u64 = 286;
const SYS_FDATASYNC: u64 = 75;

const CLOCK_REALTIME: u64 = 0;
const CLOCK_MONOTONIC: u64 = 1;
const EAGAIN: i64 = 11;
const EINTR: i64 = 4;
/// `EIO`, for a transfer shorter than asked.
const EIO: i32 = 5;

/// The names of the system calls counted in `kiln_x86::exits`, by slot
/// ([`exit_slot`]).
pub const EXIT_NAMES: &[&str] = &[
    "read",
    "write",
    "pread64",
    "pwrite64",
    "fdatasync",
    "clock_gettime",
    "epoll_pwait",
    "timerfd_settime",
    "exit_group",
];

/// The slot of system call `nr` in [`EXIT_NAMES`].
const fn exit_slot(nr: u64) -> usize {
    match nr {
        SYS_READ => 0,
        SYS_WRITE => 1,
        SYS_PREAD64 => 2,
        SYS_PWRITE64 => 3,
        SYS_FDATASYNC => 4,
        SYS_CLOCK_GETTIME => 5,
        SYS_EPOLL_PWAIT => 6,
        SYS_TIMERFD_SETTIME => 7,
        SYS_EXIT_GROUP => 8,
        _ => kiln_x86::exits::SLOTS,
    }
}

/// Performs system call `nr` with up to six arguments; returns the raw
/// result (`-errno` on failure). Counted in `kiln_x86::exits`.
///
/// # Safety
///
/// Every pointer argument must be valid for what the call does with it.
unsafe fn syscall(nr: u64, a: [u64; 6]) -> i64 {
    kiln_x86::exits::count(exit_slot(nr));
    let ret: i64;
    // SAFETY: the `syscall` instruction clobbers rcx and r11 only (both
    // declared); memory effects are the caller's to justify.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as i64 => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        )
    };
    ret
}

/// The epoll set and timer from the boot info, and each handle's host
/// descriptor and sector size (set once at boot).
static EPOLL_FD: AtomicI32 = AtomicI32::new(-1);
static TIMER_FD: AtomicI32 = AtomicI32::new(-1);
static FDS: [AtomicI32; MAX_HANDLES] = [const { AtomicI32::new(-1) }; MAX_HANDLES];
static SECTORS: [AtomicU32; MAX_HANDLES] = [const { AtomicU32::new(0) }; MAX_HANDLES];

/// kiln's NET_EXCHANGE is an hvt extension: never offered on spt.
pub fn has_net_exchange() -> bool {
    false
}

/// Never called on spt ([`has_net_exchange`] is false): answers EINVAL
/// with nothing done.
pub fn net_exchange(arg: &mut kiln_abi::hvt_ext::HcNetExchange) {
    arg.tx_written = 0;
    arg.rx_read = 0;
    arg.ret = kiln_abi::status::Solo5Result::Einval as i32;
}

/// NET_EXCHANGE_AREA is an hvt extension: never offered on spt.
pub fn has_net_rx_area() -> bool {
    false
}

/// Never called on spt ([`has_net_rx_area`] is false): answers EINVAL
/// with nothing done.
pub fn net_exchange_area(arg: &mut kiln_abi::hvt_ext::HcNetExchangeArea) {
    arg.tx_written = 0;
    arg.rx_read = 0;
    arg.rx_used = 0;
    arg.ret = kiln_abi::status::Solo5Result::Einval as i32;
}

/// Whether every net device's frames carry a virtio-net header (kiln-spt
/// opened the taps with offloads for this image, whose note declared it);
/// set at boot.
static VNET_HEADER: AtomicBool = AtomicBool::new(false);

/// Records that kiln-spt's extension block offers the virtio-net header.
pub fn offer_vnet_header() {
    VNET_HEADER.store(true, Ordering::Relaxed);
}

/// Whether every net device's frames carry a virtio-net header.
pub fn has_vnet_header() -> bool {
    VNET_HEADER.load(Ordering::Relaxed)
}

/// kiln's BLOCK_EXCHANGE is an hvt extension: never offered on spt.
pub fn has_block_exchange() -> bool {
    false
}

/// Never called on spt ([`has_block_exchange`] is false): performs
/// nothing, which the caller reads as every request failed.
pub fn block_exchange(arg: &mut kiln_abi::hvt_ext::HcBlockExchange) {
    arg.done = 0;
}

/// Where the tender reads this guest's acknowledgement of kiln's stop
/// request (`kiln_abi::spt_ext`), 0 when it is not offered; set at boot.
static STOP_ACK: AtomicU64 = AtomicU64::new(0);
/// Whether the stop event came out of the epoll set.
static STOP_SEEN: AtomicBool = AtomicBool::new(false);

/// Records the stop acknowledgement word of kiln-spt's extension block.
pub fn offer_stop(ack: u64) {
    if ack != 0 && ack.is_multiple_of(8) {
        STOP_ACK.store(ack, Ordering::Relaxed);
    }
}

/// Tells the tender that this guest handles stop requests; returns
/// whether it offers them (under solo5-spt a stop signal ends the guest).
pub fn enable_stop() -> bool {
    let ack = STOP_ACK.load(Ordering::Relaxed);
    if ack == 0 {
        return false;
    }
    // SAFETY: the tender named this 8-aligned word of a page it mapped into
    // this process for its whole life (kiln_abi::spt_ext); volatile,
    // because the tender's process reads it.
    unsafe { (ack as *mut u64).write_volatile(KILN_STOP_ACK) };
    true
}

/// Whether the tender has asked this guest to stop.
pub fn stop_requested() -> bool {
    STOP_SEEN.load(Ordering::Acquire)
}

/// Records the boot info's descriptors.
pub fn init(epoll_fd: i32, timer_fd: i32) {
    EPOLL_FD.store(epoll_fd, Ordering::Relaxed);
    TIMER_FD.store(timer_fd, Ordering::Relaxed);
}

/// Records the host descriptor of device `handle` (and its sector size,
/// for block devices).
pub fn attach(handle: u64, fd: i32, sector_size: u32) {
    if let (Some(f), Some(s)) = (FDS.get(handle as usize), SECTORS.get(handle as usize)) {
        f.store(fd, Ordering::Relaxed);
        s.store(sector_size, Ordering::Relaxed);
    }
}

fn fd_of(handle: u64) -> Result<i32, Failure> {
    FDS.get(handle as usize)
        .map(|f| f.load(Ordering::Relaxed))
        .filter(|&fd| fd >= 0)
        .ok_or(Failure::Error(-9))
}

fn failure(ret: i64) -> Failure {
    if ret == -EAGAIN {
        Failure::Again
    } else {
        Failure::Error(ret as i32)
    }
}

/// Writes `bytes` to the console (the tender's standard output).
pub fn puts(bytes: &[u8]) {
    let mut rest = bytes;
    // Each round writes at least one byte or stops.
    while !rest.is_empty() {
        // SAFETY: `rest` is valid for reads of its length.
        let n = unsafe {
            syscall(
                SYS_WRITE,
                [1, rest.as_ptr() as u64, rest.len() as u64, 0, 0, 0],
            )
        };
        if n == -EINTR {
            continue;
        }
        match usize::try_from(n) {
            Ok(n) if n > 0 && n <= rest.len() => rest = &rest[n..],
            _ => break,
        }
    }
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

fn clock(id: u64) -> u64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is valid for writes of a `struct timespec`.
    let ret = unsafe { syscall(SYS_CLOCK_GETTIME, [id, &raw mut ts as u64, 0, 0, 0, 0]) };
    if ret < 0 {
        return 0;
    }
    (ts.sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.nsec as u64)
}

/// The host's monotonic clock, in nanoseconds.
pub fn monotonic_nanos() -> u64 {
    clock(CLOCK_MONOTONIC)
}

/// The host's real-time clock, in nanoseconds since the Unix epoch.
pub fn realtime_nanos() -> u64 {
    clock(CLOCK_REALTIME)
}

/// `struct epoll_event`, packed on x86_64.
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct EpollEvent {
    events: u32,
    data: u64,
}

#[repr(C)]
struct Itimerspec {
    interval: Timespec,
    value: Timespec,
}

/// Blocks for at most `timeout_nsecs` (at least
/// [`crate::FOREVER_NANOS`] means no limit) or until a device is ready;
/// returns the set of ready handles. As Solo5 does, the deadline is armed
/// on the internal timerfd (a zero value disarms it, which also clears a
/// past expiry), then `epoll_pwait` waits without a timeout of its own.
pub fn poll(timeout_nsecs: u64) -> u64 {
    let epoll_fd = EPOLL_FD.load(Ordering::Relaxed);
    let wait_ms: i64 = if timeout_nsecs == 0 {
        0
    } else {
        let value = if timeout_nsecs >= crate::FOREVER_NANOS {
            Timespec { sec: 0, nsec: 0 }
        } else {
            Timespec {
                sec: (timeout_nsecs / 1_000_000_000) as i64,
                nsec: (timeout_nsecs % 1_000_000_000) as i64,
            }
        };
        let spec = Itimerspec {
            interval: Timespec { sec: 0, nsec: 0 },
            value,
        };
        let timer_fd = TIMER_FD.load(Ordering::Relaxed);
        // SAFETY: `spec` is valid for reads; the old value is not asked for.
        unsafe {
            syscall(
                SYS_TIMERFD_SETTIME,
                [timer_fd as u64, 0, &raw const spec as u64, 0, 0, 0],
            )
        };
        -1
    };
    let mut events = [EpollEvent { events: 0, data: 0 }; MAX_HANDLES];
    // SAFETY: `events` has room for MAX_HANDLES entries; no signal mask.
    let n = unsafe {
        syscall(
            SYS_EPOLL_PWAIT,
            [
                epoll_fd as u64,
                events.as_mut_ptr() as u64,
                MAX_HANDLES as u64,
                wait_ms as u64,
                0,
                8,
            ],
        )
    };
    let n = usize::try_from(n).unwrap_or(0).min(MAX_HANDLES);
    let mut ready = 0u64;
    for ev in &events[..n] {
        let data = ev.data;
        if data == KILN_SPT_STOP_EVENT {
            STOP_SEEN.store(true, Ordering::Release);
        } else if data != SPT_INTERNAL_TIMERFD && data < MAX_HANDLES as u64 {
            ready |= 1 << data;
        }
    }
    ready
}

/// Reads one frame from interface `handle` into `buf`.
pub fn net_read(handle: u64, buf: &mut [u8]) -> Result<usize, Failure> {
    let fd = fd_of(handle)?;
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe {
        syscall(
            SYS_READ,
            [
                fd as u64,
                buf.as_mut_ptr() as u64,
                buf.len() as u64,
                0,
                0,
                0,
            ],
        )
    };
    if n < 0 {
        return Err(failure(n));
    }
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= buf.len())
        .ok_or(Failure::Error(EIO))
}

/// Sends one frame on interface `handle`.
pub fn net_write(handle: u64, frame: &[u8]) -> Result<(), Failure> {
    let fd = fd_of(handle)?;
    // SAFETY: `frame` is valid for reads of its length.
    let n = unsafe {
        syscall(
            SYS_WRITE,
            [
                fd as u64,
                frame.as_ptr() as u64,
                frame.len() as u64,
                0,
                0,
                0,
            ],
        )
    };
    match n {
        n if n < 0 => Err(failure(n)),
        n if n as usize == frame.len() => Ok(()),
        _ => Err(Failure::Error(EIO)),
    }
}

/// One `pread64`/`pwrite64` per piece the filter allows.
fn block_io(nr: u64, handle: u64, offset: u64, ptr: u64, len: usize) -> Result<(), Failure> {
    let fd = fd_of(handle)?;
    let sector = SECTORS
        .get(handle as usize)
        .map_or(0, |s| s.load(Ordering::Relaxed)) as usize;
    for (at, piece) in crate::split::pieces(len, sector) {
        // SAFETY: `[ptr + at, ptr + at + piece)` lies inside the caller's
        // buffer of `len` bytes (pieces never pass `len`).
        let n = unsafe {
            syscall(
                nr,
                [
                    fd as u64,
                    ptr + at as u64,
                    piece as u64,
                    offset + at as u64,
                    0,
                    0,
                ],
            )
        };
        if n < 0 {
            return Err(failure(n));
        }
        if n as usize != piece {
            return Err(Failure::Error(EIO));
        }
    }
    Ok(())
}

/// Reads `buf.len()` bytes at byte `offset` of block device `handle`.
pub fn block_read(handle: u64, offset: u64, buf: &mut [u8]) -> Result<(), Failure> {
    block_io(
        SYS_PREAD64,
        handle,
        offset,
        buf.as_mut_ptr() as u64,
        buf.len(),
    )
}

/// Writes `data` at byte `offset` of block device `handle`.
pub fn block_write(handle: u64, offset: u64, data: &[u8]) -> Result<(), Failure> {
    block_io(
        SYS_PWRITE64,
        handle,
        offset,
        data.as_ptr() as u64,
        data.len(),
    )
}

/// Makes the completed writes of block device `handle` durable.
pub fn block_flush(handle: u64) -> Result<(), Failure> {
    let fd = fd_of(handle)?;
    // SAFETY: no pointers.
    let ret = unsafe { syscall(SYS_FDATASYNC, [fd as u64, 0, 0, 0, 0, 0]) };
    if ret < 0 { Err(failure(ret)) } else { Ok(()) }
}

/// Ends the guest with `status`. There is no tender to hand a message to
/// on spt: callers print the full story on the console first.
pub fn halt(status: i32, _message: Option<&CStr>) -> ! {
    loop {
        // SAFETY: exit_group ends the process; it does not return.
        unsafe { syscall(SYS_EXIT_GROUP, [status as u64, 0, 0, 0, 0, 0]) };
    }
}

/// Ends the guest with the abort status (255). Callers print the full
/// story on the console first.
pub fn abort(_why: core::fmt::Arguments<'_>) -> ! {
    halt(EXIT_ABORT, None)
}
