//! The spt boot sequence, from `_start` (`sys::start`, jumped to by
//! kiln-spt with the boot info's address in RDI and RSP near the top of
//! guest memory; Solo5 `spt_abi.h`) to the unikernel's `main`.
//!
//! An spt guest is a process: the host kernel owns the CPU tables and page
//! tables, and the tender already gave every segment its protection, so
//! boot only sets up the heap, the clock and the devices' descriptors. A
//! fault kills the process with a signal, which kiln-spt reports.

use kiln_abi::mft::MftType;
use kiln_abi::spt::{SPT_BOOT_INFO_BASE, SPT_CMDLINE_SIZE, SptBootInfo};
use kiln_abi::spt_ext::{SPT_EXT_BASE, SptExt};

use super::start::{BootArgs, fail, run_main};
use crate::layout::{MIN_HEAP, PAGE, STACK_SIZE};

/// Called by `_start` with the boot info's address.
pub(super) extern "C" fn kiln_solo5_boot(boot_info: u64) -> ! {
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
    // kiln-spt's extension block, if the boot info's pointers leave room
    // for it where this boot info is the ABI's (solo5-spt puts the command
    // line or the manifest there).
    if boot_info == SPT_BOOT_INFO_BASE && kiln_abi::spt_ext::may_follow(&bi) {
        // SAFETY: the block's 24 bytes lie between the boot info and the
        // manifest, both of which the tender mapped (checked by
        // `may_follow`).
        let ext: SptExt = unsafe { (SPT_EXT_BASE as *const SptExt).read_volatile() };
        if kiln_abi::spt_ext::present(&bi, &ext) {
            if ext.features & u64::from(kiln_abi::hvt_ext::KILN_FEATURE_STOP) != 0 {
                super::spt::offer_stop(ext.stop_ack);
            }
            if ext.features & u64::from(kiln_abi::hvt_ext::KILN_FEATURE_VNET_HDR) != 0 {
                super::spt::offer_vnet_header();
            }
        }
    }

    // SAFETY: the tender terminates the command line within
    // SPT_CMDLINE_SIZE bytes of mapped memory and put a `struct mft` at
    // `bi.mft`.
    let args = unsafe { BootArgs::find(bi.cmdline, SPT_CMDLINE_SIZE, bi.mft) };
    // SAFETY: the boot data stays mapped and the heap is up.
    let env = unsafe { args.env() };
    for d in env.devices().iter().filter(|d| d.attached) {
        let sector = match d.kind {
            MftType::BlockBasic => u32::from(d.info.block_size()),
            _ => 0,
        };
        super::spt::attach(d.handle, d.host_fd(), sector);
    }
    run_main(env)
}
