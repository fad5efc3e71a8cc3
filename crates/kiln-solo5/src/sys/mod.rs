//! Everything that needs `unsafe`: single instructions, the hypercalls or
//! system calls, the CPU tables, the page tables, the heap and the boot
//! sequence. Only built for `x86_64-unknown-none`.
//!
//! [`host`] is the one small layer that differs per target: on hvt the
//! hypercalls (`hvt`), on spt the system calls the tender's filter allows
//! (`spt`). Both offer the same functions (`puts`, `poll`, `net_read`,
//! `net_write`, `block_read`, `block_write`, `block_flush`, `halt`,
//! `abort`, and `has_net_exchange`/`net_exchange` and
//! `has_block_exchange`/`block_exchange` for kiln's hvt extensions, never
//! offered on spt), so the console, net, block, clock and
//! platform code above is shared. Boot differs: hvt (`boot`) loads its own
//! GDT, IDT and page tables; spt (`spt_boot`) runs as a process and has
//! none. Both enter through `start`, which also reads the command line and
//! the manifest and calls the unikernel's `main`.
#![allow(unsafe_code)]

pub mod clock;
pub mod heap;
pub mod start;

#[cfg(not(feature = "spt"))]
pub use kiln_x86::arch;
#[cfg(not(feature = "spt"))]
pub mod boot;
#[cfg(not(feature = "spt"))]
pub mod cpu;
#[cfg(not(feature = "spt"))]
pub mod hvt;
#[cfg(not(feature = "spt"))]
pub mod paging;
#[cfg(not(feature = "spt"))]
pub use boot as target_boot;
#[cfg(not(feature = "spt"))]
pub use hvt as host;

#[cfg(feature = "spt")]
pub mod spt;
#[cfg(feature = "spt")]
pub mod spt_boot;
#[cfg(feature = "spt")]
pub use spt as host;
#[cfg(feature = "spt")]
pub use spt_boot as target_boot;
