//! The entry point: `_start`, called by the tender with the boot info's
//! address in RDI and RSP at the top of guest memory (Solo5 `hvt_abi.h`:
//! "a pointer to this structure is passed by the tender as the sole
//! argument to the guest entrypoint"), and the boot sequence that ends in
//! the unikernel's `main`.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::global_asm;
use core::fmt::Write;
use core::ops::Range;

use kiln_abi::hvt::{HVT_CMDLINE_SIZE, HvtBootInfo};
use kiln_abi::mft::{MFT_ENTRY_SIZE, MFT_HEADER_SIZE, MFT_MAX_ENTRIES};
use kiln_devices::ExitStatus;

use crate::console::BufferedWriter;
use crate::env::Env;
use crate::layout::{Layout, Sections};

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

unsafe extern "C" {
    static __kiln_text_start: u8;
    static __kiln_text_end: u8;
    static __kiln_rodata_start: u8;
    static __kiln_rodata_end: u8;
    static __kiln_data_start: u8;
    static __kiln_data_end: u8;
}

unsafe extern "Rust" {
    /// The unikernel's entry, defined by [`crate::main!`] in the
    /// generated crate.
    safe fn kiln_solo5_main(env: &'static Env) -> ExitStatus;
}

/// The image's sections, from the linker script's symbols.
fn sections() -> Sections {
    let addr = |s: *const u8| s as u64;
    Sections {
        text: addr(&raw const __kiln_text_start)..addr(&raw const __kiln_text_end),
        rodata: addr(&raw const __kiln_rodata_start)..addr(&raw const __kiln_rodata_end),
        data: addr(&raw const __kiln_data_start)..addr(&raw const __kiln_data_end),
    }
}

/// Prints why boot failed and aborts.
fn fail(what: &str, why: &dyn core::fmt::Display) -> ! {
    {
        let mut out = BufferedWriter::<_, 256>::new(super::hvt::puts);
        let _ = writeln!(out, "kiln: cannot boot: {what}: {why}");
    }
    super::hvt::abort(format_args!("cannot boot: {what}: {why}"))
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
    // SAFETY: first thing at boot, on the only vCPU.
    unsafe { super::cpu::init() };
    // At CPL 0: see `detect_extensions`.
    super::hvt::detect_extensions();

    if boot_info == 0 || !boot_info.is_multiple_of(8) {
        fail("boot info", &format_args!("bad address {boot_info:#x}"));
    }
    // SAFETY: the tender wrote the boot info at this (checked non-null,
    // aligned) address in the identity-mapped memory it gave us.
    let bi: HvtBootInfo = unsafe { (boot_info as *const HvtBootInfo).read_volatile() };

    // Leave CPL 0 after as few instructions as possible: some hypervisors
    // (KVM's PVM) emulate every guest-kernel instruction, ~1 us each, and
    // run CPL 3 on the CPU. The rest of boot builds the real page tables
    // at CPL 3.
    // SAFETY: at CPL 0, once, with the boot info's memory size; the
    // bootstrap map covers all of guest memory, as user pages.
    unsafe {
        super::paging::bootstrap(bi.mem_size, bi.kernel_end.max(sections().data.end));
        super::cpu::enter_user_mode();
    }
    super::cpu::install_handlers();

    // The command line and the manifest: where they are, how long.
    let cmdline_len = if bi.cmdline == 0 {
        0
    } else {
        // SAFETY: the tender terminates the command line within
        // HVT_CMDLINE_SIZE bytes of mapped memory.
        unsafe { c_strlen(bi.cmdline, HVT_CMDLINE_SIZE) }
    };
    let mft_len = if bi.mft == 0 {
        0
    } else {
        // SAFETY: the tender put a `struct mft` at this address; its
        // header is two u32s.
        let entries = unsafe { ((bi.mft + 4) as *const u32).read_volatile() } as usize;
        MFT_HEADER_SIZE + entries.min(MFT_MAX_ENTRIES) * MFT_ENTRY_SIZE
    };
    let range = |start: u64, len: usize| -> Range<u64> { start..start.saturating_add(len as u64) };
    let boot_data = [
        range(boot_info, size_of::<HvtBootInfo>()),
        range(bi.cmdline, cmdline_len + 1),
        range(bi.mft, mft_len),
    ];
    let layout = match Layout::new(bi.mem_size, bi.kernel_end, sections(), &boot_data) {
        Ok(layout) => layout,
        Err(e) => fail("memory layout", &e),
    };
    // SAFETY: the layout was checked; its tables region lies after the
    // image and any boot data, below the heap.
    unsafe { super::paging::init(&layout) };
    super::cpu::GUARD_PAGE.store(layout.guard_page, core::sync::atomic::Ordering::Relaxed);
    let (heap_start, heap_size) = (layout.heap_start as usize, layout.heap_size() as usize);
    // SAFETY: [heap_start, guard page) is mapped read-write and used by
    // nothing else; this is the only call.
    let heap = unsafe { super::heap::init(heap_start, heap_size) };
    if let Err(e) = heap {
        fail("heap", &e);
    }
    if let Err(e) = super::clock::init(bi.cpu_cycle_freq) {
        fail("clock", &e);
    }

    let cmdline: &[u8] = if cmdline_len == 0 {
        &[]
    } else {
        // SAFETY: checked above: `cmdline_len` readable bytes at a
        // non-null address.
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
    crate::exit(kiln_solo5_main(env))
}
