//! What both targets' boot sequences share: `_start`, the boot-failure
//! report, the command line and manifest found through the boot info, and
//! the call into the unikernel's `main`.
//!
//! hvt (Solo5 `hvt_abi.h`) and spt (`spt_abi.h`) enter `_start` alike: RDI
//! holds the boot info's address, RSP points near the top of guest memory.
//! Each target's boot info differs, so `boot` and `spt_boot` read their own
//! and call [`BootArgs::find`] with its command-line and manifest fields.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::global_asm;
use core::fmt::Write;

use kiln_abi::mft::{MFT_ENTRY_SIZE, MFT_HEADER_SIZE, MFT_MAX_ENTRIES, MftHeader};
use kiln_devices::ExitStatus;

use crate::console::BufferedWriter;
use crate::env::Env;

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
    boot = sym super::target_boot::kiln_solo5_boot,
);

unsafe extern "Rust" {
    /// The unikernel's entry, defined by [`crate::main!`] in the
    /// generated crate.
    safe fn kiln_solo5_main(env: &'static Env) -> ExitStatus;
}

/// Runs the unikernel with `env` and halts with the status it returns.
pub fn run_main(env: &'static Env) -> ! {
    super::heap::register_metrics();
    crate::exit(kiln_solo5_main(env))
}

/// Prints why boot failed and aborts.
pub fn fail(what: &str, why: &dyn core::fmt::Display) -> ! {
    {
        let mut out = BufferedWriter::<_, 256>::new(super::host::puts);
        let _ = writeln!(out, "kiln: cannot boot: {what}: {why}");
    }
    super::host::abort(format_args!("cannot boot: {what}: {why}"))
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

/// Where the tender put the command line and its copy of the manifest, and
/// how long each is (0 where the boot info's pointer is null).
pub struct BootArgs {
    cmdline: u64,
    cmdline_len: usize,
    mft: u64,
    mft_len: usize,
}

impl BootArgs {
    /// Measures the command line at `cmdline` (terminated within
    /// `cmdline_size` bytes) and the manifest at `mft` (its length from its
    /// header's entry count, capped at `MFT_MAX_ENTRIES`).
    ///
    /// # Safety
    ///
    /// A non-null `cmdline` is terminated within `cmdline_size` bytes of
    /// readable memory; a non-null `mft` points at a readable `struct mft`
    /// header.
    pub unsafe fn find(cmdline: u64, cmdline_size: usize, mft: u64) -> Self {
        let cmdline_len = if cmdline == 0 {
            0
        } else {
            // SAFETY: the caller guarantees the terminator within
            // `cmdline_size` readable bytes.
            unsafe { c_strlen(cmdline, cmdline_size) }
        };
        let mft_len = if mft == 0 {
            0
        } else {
            // SAFETY: the tender put a `struct mft` at this address
            // (aligned for it); its header is two u32s.
            let header = unsafe { (mft as *const MftHeader).read_volatile() };
            MFT_HEADER_SIZE + (header.entries as usize).min(MFT_MAX_ENTRIES) * MFT_ENTRY_SIZE
        };
        Self {
            cmdline,
            cmdline_len,
            mft,
            mft_len,
        }
    }

    /// The memory the command line (with its terminator) and the manifest
    /// occupy, which hvt's memory layout keeps out of the heap.
    #[cfg(not(feature = "spt"))]
    pub fn ranges(&self) -> [core::ops::Range<u64>; 2] {
        let range = |start: u64, len: usize| start..start.saturating_add(len as u64);
        [
            range(self.cmdline, self.cmdline_len + 1),
            range(self.mft, self.mft_len),
        ]
    }

    /// Copies the command line and the manifest to the heap and makes the
    /// unikernel's [`Env`] of them; a failure aborts boot.
    ///
    /// # Safety
    ///
    /// The memory [`BootArgs::find`] measured is still readable and
    /// unchanged, and the heap is up.
    pub unsafe fn env(&self) -> &'static Env {
        let cmdline: &[u8] = if self.cmdline_len == 0 {
            &[]
        } else {
            // SAFETY: measured by `find`: `cmdline_len` readable bytes at a
            // non-null address.
            unsafe { core::slice::from_raw_parts(self.cmdline as *const u8, self.cmdline_len) }
        };
        let cmdline = match core::str::from_utf8(cmdline) {
            Ok(s) => String::from(s),
            Err(e) => fail("command line", &e),
        };
        let manifest: Vec<u8> = if self.mft_len == 0 {
            Vec::new()
        } else {
            // SAFETY: the tender's copy of the manifest spans `mft_len`
            // bytes (its header's entry count, capped).
            unsafe { core::slice::from_raw_parts(self.mft as *const u8, self.mft_len) }.to_vec()
        };
        match Env::new(
            Box::leak(cmdline.into_boxed_str()),
            Box::leak(manifest.into_boxed_slice()),
        ) {
            Ok(env) => Box::leak(Box::new(env)),
            Err(e) => fail("manifest", &e),
        }
    }
}
