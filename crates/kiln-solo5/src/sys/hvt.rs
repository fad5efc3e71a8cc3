//! The hvt hypercalls (Solo5 `hvt_abi.h`, version 2): each is a 32-bit
//! `out` to port `HVT_HYPERCALL_PIO_BASE + n` whose value is the guest
//! address of the call's argument structure. The tender reads the IN
//! fields, performs the call and writes the OUT fields before the guest
//! resumes. Also kiln's extension (`kiln_abi::hvt_ext`): its discovery
//! and the NET_EXCHANGE hypercall.

use core::arch::asm;
use core::ffi::CStr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kiln_abi::hvt::{
    HVT_HALT_COOKIE_MAX, HcBlockRead, HcBlockWrite, HcHalt, HcNetRead, HcNetWrite, HcPoll, HcPuts,
    HcWalltime, Hypercall,
};
use kiln_abi::hvt_ext::{
    HcBlockExchange, HcNetExchange, HcNetExchangeArea, HcStopEnable, KILN_BLOCK_EXCHANGE_PORT,
    KILN_CPUID_LEAF, KILN_FEATURE_BLOCK_EXCHANGE, KILN_FEATURE_NET_EXCHANGE,
    KILN_FEATURE_NET_RX_AREA, KILN_FEATURE_STOP, KILN_FEATURE_VNET_HDR,
    KILN_NET_EXCHANGE_AREA_PORT, KILN_NET_EXCHANGE_PORT, KILN_STOP_ENABLE_PORT,
};
use kiln_abi::status::EXIT_ABORT;

use crate::console::CStrBuffer;
use crate::outcome::{Failure, from_ret};

/// The names of the hypercalls counted in `kiln_x86::exits`: slot `n` is
/// hypercall number `n` (`Hypercall`, `HVT_HYPERCALL_PIO_BASE + n`), then
/// kiln's extensions.
pub const EXIT_NAMES: &[&str] = &[
    "",
    "walltime",
    "puts",
    "poll",
    "block_write",
    "block_read",
    "net_write",
    "net_read",
    "halt",
    "net_exchange",
    "stop_enable",
    "block_exchange",
];
const SLOT_NET_EXCHANGE: usize = 9;
const SLOT_STOP_ENABLE: usize = 10;
const SLOT_BLOCK_EXCHANGE: usize = 11;

/// Performs hypercall `call` with argument `arg`.
fn hypercall<T>(call: Hypercall, arg: &mut T) {
    out(call.port(), call as usize, arg);
}

/// The hypercall `out` to `port` with argument `arg`, counted in `slot`
/// of `kiln_x86::exits`.
fn out<T>(port: u16, slot: usize, arg: &mut T) {
    kiln_x86::exits::count(slot);
    // Guest memory is at most 4 GiB (checked at boot), so every address
    // fits the 32-bit port write.
    let addr = arg as *mut T as u64 as u32;
    // SAFETY: the tender reads and writes only `arg` and the buffers its
    // fields point at, which the callers keep borrowed for the call; the
    // asm is not `nomem`, so the compiler neither caches nor reorders
    // memory accesses across it.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") addr, options(nostack, preserves_flags))
    };
}

/// The kiln extensions the tender offers (`kiln_abi::hvt_ext` feature
/// bits) that this guest uses; set once at boot.
static EXTENSIONS: AtomicU32 = AtomicU32::new(0);

/// Looks for kiln's CPUID leaf. Called at boot, at CPL 0, where the
/// hypervisor answers `cpuid` from the vCPU's table (the tender's): on
/// KVM's PVM a `cpuid` at CPL 3 runs on the CPU and never sees the leaf.
pub fn detect_extensions() {
    let regs = super::arch::cpuid(KILN_CPUID_LEAF, 0);
    let features = kiln_abi::hvt_ext::features(regs)
        & (KILN_FEATURE_NET_EXCHANGE
            | KILN_FEATURE_BLOCK_EXCHANGE
            | KILN_FEATURE_NET_RX_AREA
            | KILN_FEATURE_STOP
            | KILN_FEATURE_VNET_HDR);
    EXTENSIONS.store(features, Ordering::Relaxed);
}

/// Whether the tender serves NET_EXCHANGE.
pub fn has_net_exchange() -> bool {
    EXTENSIONS.load(Ordering::Relaxed) & KILN_FEATURE_NET_EXCHANGE != 0
}

/// Whether every net device's frames carry a virtio-net header (the image
/// declared it and the tender negotiated the tap's offloads).
pub fn has_vnet_header() -> bool {
    EXTENSIONS.load(Ordering::Relaxed) & KILN_FEATURE_VNET_HDR != 0
}

/// NET_EXCHANGE with `arg`, whose tables and buffers the caller keeps
/// alive and unmoved for the call.
pub fn net_exchange(arg: &mut HcNetExchange) {
    out(KILN_NET_EXCHANGE_PORT, SLOT_NET_EXCHANGE, arg);
}

/// Whether the tender serves NET_EXCHANGE_AREA (NET_EXCHANGE into one
/// packed receive area).
pub fn has_net_rx_area() -> bool {
    let both = KILN_FEATURE_NET_EXCHANGE | KILN_FEATURE_NET_RX_AREA;
    EXTENSIONS.load(Ordering::Relaxed) & both == both
}

/// NET_EXCHANGE_AREA with `arg`, whose tables, frames and area the caller
/// keeps alive and unmoved for the call (counted as a net exchange).
pub fn net_exchange_area(arg: &mut HcNetExchangeArea) {
    out(KILN_NET_EXCHANGE_AREA_PORT, SLOT_NET_EXCHANGE, arg);
}

/// Whether the tender serves BLOCK_EXCHANGE.
pub fn has_block_exchange() -> bool {
    EXTENSIONS.load(Ordering::Relaxed) & KILN_FEATURE_BLOCK_EXCHANGE != 0
}

/// BLOCK_EXCHANGE with `arg`, whose table and buffers the caller keeps
/// alive and unmoved for the call.
pub fn block_exchange(arg: &mut HcBlockExchange) {
    out(KILN_BLOCK_EXCHANGE_PORT, SLOT_BLOCK_EXCHANGE, arg);
}

/// The word kiln-hvt sets when a stop was requested (STOP_ENABLE names
/// it); written by the tender while the vCPU is stopped in a hypercall.
static STOP_WORD: AtomicU64 = AtomicU64::new(0);

/// Tells the tender that this guest handles stop requests (kiln's STOP
/// extension); returns whether the tender offers it (under solo5-hvt, or
/// kiln-hvt with its extensions hidden, a stop ends the tender).
pub fn enable_stop() -> bool {
    if EXTENSIONS.load(Ordering::Relaxed) & KILN_FEATURE_STOP == 0 {
        return false;
    }
    let mut arg = HcStopEnable {
        word: STOP_WORD.as_ptr() as u64,
    };
    out(KILN_STOP_ENABLE_PORT, SLOT_STOP_ENABLE, &mut arg);
    true
}

/// Whether the tender has asked this guest to stop (checked after each
/// wait, which a stop request ends).
pub fn stop_requested() -> bool {
    STOP_WORD.load(Ordering::Acquire) != 0
}

/// Writes `bytes` to the tender's console.
pub fn puts(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let mut arg = HcPuts {
        data: bytes.as_ptr() as u64,
        len: bytes.len() as u64,
    };
    hypercall(Hypercall::Puts, &mut arg);
}

/// The host's time of day, in nanoseconds since the Unix epoch.
pub fn walltime() -> u64 {
    let mut arg = HcWalltime::default();
    hypercall(Hypercall::Walltime, &mut arg);
    arg.nsecs
}

/// Blocks for at most `timeout_nsecs` or until a device is ready; returns
/// the set of ready handles.
pub fn poll(timeout_nsecs: u64) -> u64 {
    let mut arg = HcPoll {
        timeout_nsecs,
        ..HcPoll::default()
    };
    hypercall(Hypercall::Poll, &mut arg);
    arg.ready_set
}

/// Reads one frame from interface `handle` into `buf`.
pub fn net_read(handle: u64, buf: &mut [u8]) -> Result<usize, Failure> {
    let mut arg = HcNetRead {
        handle,
        data: buf.as_mut_ptr() as u64,
        len: buf.len() as u64,
        ret: 0,
    };
    hypercall(Hypercall::NetRead, &mut arg);
    from_ret(arg.ret)?;
    // A tender claiming more than the buffer is treated as an error.
    usize::try_from(arg.len)
        .ok()
        .filter(|&n| n <= buf.len())
        .ok_or(Failure::Error(arg.ret))
}

/// Sends one frame on interface `handle`.
pub fn net_write(handle: u64, frame: &[u8]) -> Result<(), Failure> {
    let mut arg = HcNetWrite {
        handle,
        data: frame.as_ptr() as u64,
        len: frame.len() as u64,
        ret: 0,
    };
    hypercall(Hypercall::NetWrite, &mut arg);
    from_ret(arg.ret)
}

/// Reads `buf.len()` bytes at byte `offset` of block device `handle`.
pub fn block_read(handle: u64, offset: u64, buf: &mut [u8]) -> Result<(), Failure> {
    let mut arg = HcBlockRead {
        handle,
        offset,
        data: buf.as_mut_ptr() as u64,
        len: buf.len() as u64,
        ret: 0,
    };
    hypercall(Hypercall::BlockRead, &mut arg);
    from_ret(arg.ret)
}

/// Writes `data` at byte `offset` of block device `handle`.
pub fn block_write(handle: u64, offset: u64, data: &[u8]) -> Result<(), Failure> {
    let mut arg = HcBlockWrite {
        handle,
        offset,
        data: data.as_ptr() as u64,
        len: data.len() as u64,
        ret: 0,
    };
    hypercall(Hypercall::BlockWrite, &mut arg);
    from_ret(arg.ret)
}

/// The hvt ABI has no flush: the tender writes with `pwrite(2)` before
/// BLOCK_WRITE returns, so completed writes are in the host's page cache.
pub fn block_flush(_handle: u64) -> Result<(), Failure> {
    Ok(())
}

/// Ends the guest with `status`. With [`EXIT_ABORT`], `message` (at most
/// `HVT_HALT_COOKIE_MAX` bytes) is handed to the tender to print.
pub fn halt(status: i32, message: Option<&CStr>) -> ! {
    let mut arg = HcHalt {
        cookie: message.map_or(0, |m| m.as_ptr() as u64),
        exit_status: status,
    };
    hypercall(Hypercall::Halt, &mut arg);
    // The tender does not return from HALT; should one, stop here.
    super::arch::halt_forever()
}

/// Ends the guest with the abort status (255), handing the tender `why`
/// (truncated to `HVT_HALT_COOKIE_MAX` bytes) to print with its register
/// dump. Callers print the full story on the console first.
pub fn abort(why: core::fmt::Arguments<'_>) -> ! {
    use core::fmt::Write;
    // Built on the stack: abort may be reached from any state, and must
    // not allocate.
    let mut message = CStrBuffer::<HVT_HALT_COOKIE_MAX>::new();
    let _ = message.write_fmt(why);
    halt(EXIT_ABORT, Some(message.as_c_str()))
}
