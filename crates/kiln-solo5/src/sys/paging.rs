//! kiln's own page tables, replacing the tender's all-writable identity
//! map: the null page and a stack guard page are unmapped, text is
//! read-only and executable, read-only data is read-only, everything else
//! is writable and not executable (W^X). CR0.WP makes the kernel honour
//! read-only pages and EFER.NXE enables the no-execute bit. See Intel SDM
//! vol. 3, chapter 4.5 (4-level paging).

use core::arch::asm;

use crate::layout::{Layout, Protection};

const PAGE: u64 = 0x1000;
const LARGE_PAGE: u64 = 0x20_0000;
const ENTRIES: u64 = 512;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
/// Every mapping is a user page: the unikernel runs at CPL 3 (see
/// `cpu::enter_user_mode`).
const USER: u64 = 1 << 2;
const HUGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;

const EFER: u32 = 0xc000_0080;
const EFER_NXE: u64 = 1 << 11;
const CR0_WP: u64 = 1 << 16;
/// Supervisor-mode execution and access prevention: off, since kiln's
/// exception handlers run at CPL 0 on user pages.
const CR4_SMEP_SMAP: u64 = (1 << 20) | (1 << 21);

/// Allocates zeroed page-table pages upwards from a page-aligned address.
struct Frames {
    next: u64,
}

impl Frames {
    fn alloc(&mut self) -> *mut u64 {
        let frame = self.next;
        self.next += PAGE;
        let table = frame as *mut u64;
        // SAFETY: `init`'s caller guarantees the memory from `next` on is
        // free, mapped and writable; each frame is handed out once.
        unsafe { table.write_bytes(0, ENTRIES as usize) };
        table
    }
}

fn flags(protection: Protection) -> u64 {
    match protection {
        Protection::None => 0,
        Protection::ReadExecute => PRESENT | USER,
        Protection::Read => PRESENT | USER | NO_EXECUTE,
        Protection::ReadWrite => PRESENT | USER | WRITABLE | NO_EXECUTE,
    }
}

/// A page table mapping the 2 MiB region at `base` with small pages.
fn small_pages(frames: &mut Frames, layout: &Layout, base: u64) -> *mut u64 {
    let pt = frames.alloc();
    let rw = flags(Protection::ReadWrite);
    let end = layout.mem_size.min(base + LARGE_PAGE);
    let mapped = end.saturating_sub(base) / PAGE;
    // Four entries per iteration: fewer instructions to emulate.
    let mut entry = base | rw;
    let mut j = 0;
    while j + 4 <= mapped {
        // SAFETY: j + 3 < mapped <= 512, inside the page table.
        unsafe {
            let p = pt.add(j as usize);
            *p = entry;
            *p.add(1) = entry + PAGE;
            *p.add(2) = entry + 2 * PAGE;
            *p.add(3) = entry + 3 * PAGE;
        }
        entry += 4 * PAGE;
        j += 4;
    }
    while j < mapped {
        // SAFETY: j < mapped <= 512, inside the page table.
        unsafe { *pt.add(j as usize) = entry };
        entry += PAGE;
        j += 1;
    }
    let set = |range: core::ops::Range<u64>, f: u64| {
        let from = range.start.max(base);
        let to = range.end.min(end);
        let mut page = from & !(PAGE - 1);
        while page < to {
            let j = (page - base) / PAGE;
            // SAFETY: base <= page < base + 2 MiB, so j < 512.
            unsafe { *pt.add(j as usize) = if f == 0 { 0 } else { page | f } };
            page += PAGE;
        }
    };
    let s = &layout.sections;
    set(s.text.clone(), flags(Protection::ReadExecute));
    set(s.rodata.clone(), flags(Protection::Read));
    set(0..PAGE, 0);
    set(layout.guard_page..layout.guard_page + PAGE, 0);
    pt
}

/// Builds the page tables for `layout` in the memory from
/// `layout.tables_start` on and switches to them. Returns the end of the
/// memory used by the tables. Runs at CPL 3: the tables are written while
/// no live table refers to them, so even a shadow-paging hypervisor lets
/// the writes run at full speed.
///
/// # Safety
///
/// Call once, at boot, after [`bootstrap`], with a layout checked by
/// [`Layout::new`]; the memory from `layout.tables_start` must be free and
/// is used for [`Layout::table_pages`] pages.
pub unsafe fn init(layout: &Layout) -> u64 {
    let mut frames = Frames {
        next: layout.tables_start,
    };
    let pml4 = frames.alloc();
    let pdpt = frames.alloc();
    let mem = layout.mem_size;
    let large_pages = mem.div_ceil(LARGE_PAGE);
    let directories = large_pages.div_ceil(ENTRIES);
    for d in 0..directories {
        let pd = frames.alloc();
        // SAFETY: d < 4 (Layout caps memory at 4 GiB), inside the PDPT.
        unsafe { *pdpt.add(d as usize) = pd as u64 | PRESENT | WRITABLE | USER };
        let first = d * ENTRIES;
        let count = ENTRIES.min(large_pages - first);
        // Large read-write pages everywhere first, in a loop short enough
        // for hypervisors that emulate the guest kernel instruction by
        // instruction; then the few regions that need small pages.
        let large = HUGE | flags(Protection::ReadWrite);
        for i in 0..count {
            // SAFETY: i < 512, inside the page directory.
            unsafe { *pd.add(i as usize) = ((first + i) * LARGE_PAGE) | large };
        }
        let low = layout.image_end.div_ceil(LARGE_PAGE);
        let guard = layout.guard_page / LARGE_PAGE;
        let last = large_pages - 1;
        let guard = (guard >= low).then_some(guard);
        let last = (last >= low && Some(last) != guard).then_some(last);
        for region in (0..low).chain(guard).chain(last) {
            if region < first || region >= first + count {
                continue;
            }
            let base = region * LARGE_PAGE;
            if !layout.needs_small_pages(base, LARGE_PAGE) {
                continue;
            }
            let pt = small_pages(&mut frames, layout, base);
            // SAFETY: first <= region < first + count <= first + 512.
            unsafe { *pd.add((region - first) as usize) = pt as u64 | PRESENT | WRITABLE | USER };
        }
    }
    // SAFETY: the PML4 has 512 entries; entry 0 covers the first 512 GiB.
    unsafe { *pml4 = pdpt as u64 | PRESENT | WRITABLE | USER };

    // SAFETY: the new tables map everything the running code touches (the
    // image with its own permissions, the tender's boot area, the stack
    // and the tables themselves) at the same addresses as the bootstrap
    // tables; NXE and WP were set by `bootstrap`.
    unsafe { super::cpu::load_page_tables(pml4 as u64) };
    frames.next
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
