//! Everything that needs `unsafe`: the PVH entry, single instructions and
//! port I/O, the CPU tables, the page tables, the heap, the clocks and the
//! boot sequence. Only built for `x86_64-unknown-none`.
#![allow(unsafe_code)]

pub use kiln_x86::arch;
pub mod boot;
pub mod clock;
pub mod cpu;
pub mod dma;
pub mod entry;
pub mod heap;
pub mod host;
pub mod idle;
pub mod paging;
pub mod ring;
pub mod virtio;
pub mod virtio_console;
