//! kiln's own page tables (built by `kiln_x86::paging`), replacing the
//! tender's all-writable identity map: the null page and a stack guard
//! page are unmapped, text is read-only and executable, read-only data is
//! read-only, everything else is writable and not executable (W^X). The
//! CPL 0 bootstrap here sets CR0.WP, which makes the kernel honour
//! read-only pages, and EFER.NXE, which enables the no-execute bit. See
//! Intel SDM vol. 3, chapter 4.5 (4-level paging).

use core::arch::asm;

use crate::layout::Layout;

const PAGE: u64 = 0x1000;
const LARGE_PAGE: u64 = 0x20_0000;
const ENTRIES: u64 = 512;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
/// Every mapping is a user page: the unikernel runs at CPL 3 (see
/// `cpu::enter_user_mode`).
const USER: u64 = 1 << 2;
const HUGE: u64 = 1 << 7;

const EFER: u32 = 0xc000_0080;
const EFER_NXE: u64 = 1 << 11;
const CR0_WP: u64 = 1 << 16;
/// Supervisor-mode execution and access prevention: off, since kiln's
/// exception handlers run at CPL 0 on user pages.
const CR4_SMEP_SMAP: u64 = (1 << 20) | (1 << 21);

/// Builds the page tables for `layout` (kiln-x86's, without a device
/// window) in the memory from `layout.tables_start` on and switches to
/// them. Returns the end of the memory used by the tables. Runs at CPL 3.
///
/// # Safety
///
/// Call once, at boot, after [`bootstrap`], with a layout checked by
/// [`Layout::new`]; the memory from `layout.tables_start` must be free and
/// is used for [`Layout::table_pages`] pages.
pub unsafe fn init(layout: &Layout) -> u64 {
    // SAFETY: the caller's: once, at boot, a checked layout, free memory
    // for the tables; no device window.
    let tables = unsafe { kiln_x86::paging::build(layout, None) };
    // SAFETY: the new tables map everything the running code touches (the
    // image with its own permissions, the tender's boot area, the stack
    // and the tables themselves) at the same addresses as the bootstrap
    // tables; NXE and WP were set by `bootstrap`.
    unsafe { super::cpu::load_page_tables(tables.pml4) };
    tables.end
}

/// Page-aligned room for the bootstrap tables: a PML4, a PDPT and four
/// page directories (4 GiB in 2 MiB pages).
#[repr(C, align(4096))]
struct BootstrapTables([[u64; ENTRIES as usize]; 6]);

static mut BOOTSTRAP: BootstrapTables = BootstrapTables([[0; ENTRIES as usize]; 6]);

/// How far above the image (and the tender's kernel end) the bootstrap
/// map reaches: room for the boot data the tender may put there (at most
/// a command line and a manifest, some KiB) and for kiln's page tables
/// (at most 8 pages plus one per 2 MiB of image).
const BOOTSTRAP_SLACK: u64 = 4 * LARGE_PAGE;

/// Maps, as read-write, executable user pages, what boot touches before
/// the real tables are loaded: memory from 0 to `image_end` (the image's
/// or the tender's kernel end, whichever is higher) plus some MiB, and the
/// stack at the top of memory; then switches to that map, with EFER.NXE
/// and CR0.WP set. These are the few instructions that let kiln drop to
/// CPL 3 at once and build its real tables there, where hypervisors that
/// emulate the guest kernel (KVM's PVM) run the code on the CPU: a handful
/// of 2 MiB entries, not one per 2 MiB of memory.
///
/// # Safety
///
/// Call once, at boot, at CPL 0, before [`init`], with the boot info's
/// memory size.
pub unsafe fn bootstrap(mem_size: u64, image_end: u64) {
    let tables = &raw mut BOOTSTRAP;
    let mem = mem_size.min(crate::layout::MAX_MEMORY);
    let low_end = image_end.saturating_add(BOOTSTRAP_SLACK).min(mem);
    let stack = mem.saturating_sub(crate::layout::STACK_SIZE + PAGE);
    let user_rwx = PRESENT | WRITABLE | USER;
    // SAFETY: boot runs alone; the bootstrap tables are used by nothing
    // else. Indices stay in bounds: memory is at most 4 GiB, so a large
    // page index is below 2048, its directory below 4.
    unsafe {
        let pml4 = (*tables).0[0].as_mut_ptr();
        let pdpt = (*tables).0[1].as_mut_ptr();
        *pml4 = pdpt as u64 | user_rwx;
        for d in 0..4 {
            *pdpt.add(d) = (*tables).0[2 + d].as_ptr() as u64 | user_rwx;
        }
        for region in [0..low_end, stack..mem] {
            for large in region.start / LARGE_PAGE..region.end.div_ceil(LARGE_PAGE) {
                let pd = (*tables).0[2 + (large / ENTRIES) as usize].as_mut_ptr();
                *pd.add((large % ENTRIES) as usize) = (large * LARGE_PAGE) | user_rwx | HUGE;
            }
        }
        let (lo, hi): (u32, u32);
        asm!("rdmsr", in("ecx") EFER, out("eax") lo, out("edx") hi, options(nomem, nostack));
        let efer = (u64::from(hi) << 32 | u64::from(lo)) | EFER_NXE;
        asm!("wrmsr", in("ecx") EFER, in("eax") efer as u32, in("edx") (efer >> 32) as u32,
             options(nomem, nostack));
        asm!("mov cr3, {}", in(reg) pml4 as u64, options(nostack));
        let cr0: u64;
        asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
        asm!("mov cr0, {}", in(reg) cr0 | CR0_WP, options(nostack));
        let cr4: u64;
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        if cr4 & CR4_SMEP_SMAP != 0 {
            asm!("mov cr4, {}", in(reg) cr4 & !CR4_SMEP_SMAP, options(nostack));
        }
    }
}
