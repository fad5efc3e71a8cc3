//! The spt entry point: `_start`, jumped to by kiln-spt with the boot
//! info's address in RDI and RSP near the top of guest memory (Solo5
//! `spt_abi.h`), and the boot sequence that ends in the unikernel's `main`.
//!
//! An spt guest is a process: the host kernel owns the CPU tables and page
//! tables, and the tender already gave every segment its protection, so
//! boot only sets up the heap, the clock and the devices' descriptors. A
//! fault kills the process with a signal, which kiln-spt reports.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::global_asm;
use core::fmt::Write;

use kiln_abi::mft::{MFT_ENTRY_SIZE, MFT_HEADER_SIZE, MFT_MAX_ENTRIES, MftType};
use kiln_abi::spt::{SPT_CMDLINE_SIZE, SptBootInfo};
use kiln_devices::ExitStatus;

use crate::console::BufferedWriter;
use crate::env::Env;
use crate::layout::{MIN_HEAP, PAGE, STACK_SIZE};

// Clear the direction flag and the frame pointer (the end of backtraces),
// align the stack as the SysV ABI expects at a call, and enter Rust with
// the boot info pointer still in RDI.
global_asm!(
    r#"
    .section .text.kiln_start, "ax"
    .global _start
    .type _start, @function
    _start:
        cld
        xor ebp, ebp
        and rsp, -16
        call {boot}
        ud2
    "#,
    boot = sym kiln_solo5_boot,
);

unsafe extern "Rust" {
    /// The unikernel's entry, defined by [`crate::main!`] in the
    /// generated crate.
    safe fn kiln_solo5_main(env: &'static Env) -> ExitStatus;
}

/// Prints why boot failed and aborts.
fn fail(what: &str, why: &dyn core::fmt::Display) -> ! {
    {
        let mut out = BufferedWriter::<_, 256>::new(super::spt::puts);
        let _ = writeln!(out, "kiln: cannot boot: {what}: {why}");
    }
    super::spt::abort(format_args!("cannot boot: {what}: {why}"))
}

/// The length of the NUL-terminated string at `addr`, at most `max - 1`.
///
/// # Safety
///
/// `max` bytes from `addr` must be readable, or the string terminated
/// before the first unreadable byte.
unsafe fn c_strlen(addr: u64, max: usize) -> usize {
    let p = addr as *const u8;
    (0..max.saturating_sub(1))
        // SAFETY: reads stop at the terminator, within what the caller
        // guarantees readable.
        .find(|&i| unsafe { p.add(i).read_volatile() } == 0)
        .unwrap_or(max.saturating_sub(1))
}

extern "C" fn kiln_solo5_boot(boot_info: u64) -> ! {
    if boot_info == 0 || !boot_info.is_multiple_of(8) {
        fail("boot info", &format_args!("bad address {boot_info:#x}"));
    }
    // SAFETY: the tender wrote the boot info at this (checked non-null,
    // aligned) address in the guest memory it mapped for us.
    let bi: SptBootInfo = unsafe { (boot_info as *const SptBootInfo).read_volatile() };

    // The heap: from the end of the image to the stack. There is no guard
    // page: the filter allows no mprotect, and the tender does not know the
    // stack's size.
    let heap_start = bi.kernel_end.div_ceil(PAGE) * PAGE;
    let heap_end = bi.mem_size.saturating_sub(STACK_SIZE);
    if heap_end < heap_start.saturating_add(MIN_HEAP) {
        fail(
            "memory layout",
            &format_args!(
                "{} bytes of memory leave no heap above the image (ends at {:#x}); \
                 hint: give the guest more memory (kiln-spt --mem=MB)",
                bi.mem_size, bi.kernel_end
            ),
        );
    }
    // SAFETY: [heap_start, heap_end) lies between the image and the stack
    // in read-write guest memory, used by nothing else; this is the only
    // call.
    let heap = unsafe { super::heap::init(heap_start as usize, (heap_end - heap_start) as usize) };
    if let Err(e) = heap {
        fail("heap", &e);
    }
    super::clock::init();
    super::spt::init(bi.epollfd, bi.timerfd);

    let cmdline_len = if bi.cmdline == 0 {
        0
    } else {
        // SAFETY: the tender terminates the command line within
        // SPT_CMDLINE_SIZE bytes of mapped memory.
        unsafe { c_strlen(bi.cmdline, SPT_CMDLINE_SIZE) }
    };
    let mft_len = if bi.mft == 0 {
        0
    } else {
        // SAFETY: the tender put a `struct mft` at this address; its
        // header is two u32s.
        let entries = unsafe { ((bi.mft + 4) as *const u32).read_volatile() } as usize;
        MFT_HEADER_SIZE + entries.min(MFT_MAX_ENTRIES) * MFT_ENTRY_SIZE
    };
    let cmdline: &[u8] = if cmdline_len == 0 {
        &[]
    } else {
        // SAFETY: `cmdline_len` readable bytes at a non-null address.
        unsafe { core::slice::from_raw_parts(bi.cmdline as *const u8, cmdline_len) }
    };
    let cmdline = match core::str::from_utf8(cmdline) {
        Ok(s) => String::from(s),
        Err(e) => fail("command line", &e),
    };
    let manifest: Vec<u8> = if mft_len == 0 {
        Vec::new()
    } else {
        // SAFETY: the tender's copy of the manifest spans `mft_len` bytes
        // (its header's entry count, capped).
        unsafe { core::slice::from_raw_parts(bi.mft as *const u8, mft_len) }.to_vec()
    };
    let env = match Env::new(
        Box::leak(cmdline.into_boxed_str()),
        Box::leak(manifest.into_boxed_slice()),
    ) {
        Ok(env) => Box::leak(Box::new(env)),
        Err(e) => fail("manifest", &e),
    };
    for d in env.devices().iter().filter(|d| d.attached) {
        let sector = match d.kind {
            MftType::BlockBasic => u32::from(d.info.block_size()),
            _ => 0,
        };
        super::spt::attach(d.handle, d.host_fd(), sector);
    }
    crate::exit(kiln_solo5_main(env))
}
