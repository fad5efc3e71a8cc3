//! Everything that needs `unsafe`: single instructions, the hypercalls,
//! the CPU tables, the page tables, the heap and the boot sequence. Only
//! built for `x86_64-unknown-none`.
#![allow(unsafe_code)]

pub mod arch;
pub mod boot;
pub mod clock;
pub mod cpu;
pub mod heap;
pub mod hvt;
pub mod paging;
