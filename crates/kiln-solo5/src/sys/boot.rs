//! The hvt boot sequence, from `_start` (`sys::start`, entered by the
//! tender with the boot info's address in RDI and RSP at the top of guest
//! memory; Solo5 `hvt_abi.h`: "a pointer to this structure is passed by the
//! tender as the sole argument to the guest entrypoint") to the
//! unikernel's `main`.

use kiln_abi::hvt::{HVT_CMDLINE_SIZE, HvtBootInfo};

use super::start::{BootArgs, fail, run_main};
use crate::layout::{Layout, Sections};

unsafe extern "C" {
    static __kiln_text_start: u8;
    static __kiln_text_end: u8;
    static __kiln_rodata_start: u8;
    static __kiln_rodata_end: u8;
    static __kiln_data_start: u8;
    static __kiln_data_end: u8;
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

/// Called by `_start` with the boot info's address.
pub(super) extern "C" fn kiln_solo5_boot(boot_info: u64) -> ! {
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
    // SAFETY: the tender terminates the command line within
    // HVT_CMDLINE_SIZE bytes of mapped memory and put a `struct mft` at
    // `bi.mft`.
    let args = unsafe { BootArgs::find(bi.cmdline, HVT_CMDLINE_SIZE, bi.mft) };
    let [cmdline, mft] = args.ranges();
    let boot_data = [
        boot_info..boot_info.saturating_add(size_of::<HvtBootInfo>() as u64),
        cmdline,
        mft,
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

    // SAFETY: the boot data is mapped (the layout keeps it out of the
    // heap and the tables) and the heap is up.
    let env = unsafe { args.env() };
    run_main(env)
}
