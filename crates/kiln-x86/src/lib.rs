//! kiln-x86: what kiln's two freestanding x86_64 platforms share.
//! kiln-solo5 (hvt, spt) and kiln-virtio (PVH) boot differently, reach
//! their host differently (hypercalls, system calls, legacy ports and
//! virtio) and keep their own CPU and page tables, but once in long mode
//! they run the same instructions over the same memory map. That common
//! part lives here, once, with what differs between them passed in: the
//! console sink and the abort routine (`puts`, `abort`), the exit routine,
//! the hint an out-of-memory message gives.
//!
//! # Modules
//!
//! - [`layout`], [`time`], [`trap`], [`console`]: logic, target-independent
//!   and unit-tested on the host: the memory map and page protections,
//!   TSC-to-nanosecond scaling, exception reports, buffered console output
//!   that does not allocate; [`exits`], the count of the times the
//!   unikernel handed control to its host (`kiln_exits_total`), by call;
//! - `arch` (only for `target_os = "none"`, with `cpu`, `heap` and `paging` the
//!   only modules with `unsafe`): single instructions (`rdtsc`, `cpuid`, `rdrand`,
//!   `rdseed`, `cr2`, `wrmsr`) and port I/O behind safe functions where
//!   the instruction cannot break memory safety;
//! - `cpu`: the GDT, the TSS (its I/O permission bitmap opening the ports
//!   a platform names), the IDT's gates, loading them at CPL 0, and the
//!   exception entry stubs as assembly text (`trap_stubs_asm!`, with a
//!   platform's extra `#UD` gates passed in) and the Rust side of an
//!   exception (the report, then abort);
//! - `paging`: kiln's page tables (W^X, null page and stack guard
//!   unmapped, optionally the device window above RAM mapped uncached),
//!   built at CPL 3 for the platform to load;
//! - `heap`: the `talc` allocator type each platform declares as its
//!   `#[global_allocator]`, aborting with a message when memory runs out;
//! - `random`: the random device, a ChaCha20 generator (`kiln-csprng`)
//!   seeded from RDSEED/RDRAND;
//! - `panic`: the report a platform's `#[panic_handler]` prints before it
//!   aborts.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod console;
pub mod exits;
pub mod heap_stats;
pub mod layout;
pub mod time;
pub mod trap;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod cpu;
#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
pub mod paging;
#[cfg(target_os = "none")]
pub mod panic;
#[cfg(target_os = "none")]
pub mod random;

/// Writes bytes to the platform's console.
pub type Puts = fn(&[u8]);
/// Ends the guest with the abort status after reporting `why` where the
/// platform can (the HALT cookie on hvt, the console elsewhere).
pub type Abort = fn(core::fmt::Arguments<'_>) -> !;
