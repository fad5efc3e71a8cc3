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
const HUGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;

const EFER: u32 = 0xc000_0080;
const EFER_NXE: u64 = 1 << 11;
const CR0_WP: u64 = 1 << 16;

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
        Protection::ReadExecute => PRESENT,
        Protection::Read => PRESENT | NO_EXECUTE,
        Protection::ReadWrite => PRESENT | WRITABLE | NO_EXECUTE,
    }
}

/// Builds the page tables for `layout` in the memory from
/// `layout.tables_start` on and switches to them. Returns the end of the
/// memory used by the tables.
///
/// # Safety
///
/// Call once, at boot, with a layout checked by [`Layout::new`]; the
/// memory from `layout.tables_start` must be free and is used for
/// [`Layout::table_pages`] pages.
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
        unsafe { *pdpt.add(d as usize) = pd as u64 | PRESENT | WRITABLE };
        let first = d * ENTRIES;
        for i in 0..ENTRIES.min(large_pages - first) {
            let base = (first + i) * LARGE_PAGE;
            let entry = if layout.needs_small_pages(base, LARGE_PAGE) {
                let pt = frames.alloc();
                for j in 0..ENTRIES {
                    let page = base + j * PAGE;
                    let protection = if page >= mem {
                        Protection::None
                    } else {
                        layout.protection(page)
                    };
                    let f = flags(protection);
                    if f != 0 {
                        // SAFETY: j < 512, inside the page table.
                        unsafe { *pt.add(j as usize) = page | f };
                    }
                }
                pt as u64 | PRESENT | WRITABLE
            } else {
                base | HUGE | flags(layout.protection(base))
            };
            // SAFETY: i < 512, inside the page directory.
            unsafe { *pd.add(i as usize) = entry };
        }
    }
    // SAFETY: the PML4 has 512 entries; entry 0 covers the first 512 GiB.
    unsafe { *pml4 = pdpt as u64 | PRESENT | WRITABLE };

    // SAFETY: the new tables map everything the running code touches (the
    // image with its own permissions, the tender's boot area, the stack
    // and the tables themselves) at the same addresses as before. NXE is
    // set before tables using the NX bit are loaded, and WP only makes
    // read-only pages read-only for the kernel too.
    unsafe {
        let (lo, hi): (u32, u32);
        asm!("rdmsr", in("ecx") EFER, out("eax") lo, out("edx") hi, options(nomem, nostack));
        let efer = (u64::from(hi) << 32 | u64::from(lo)) | EFER_NXE;
        asm!("wrmsr", in("ecx") EFER, in("eax") efer as u32, in("edx") (efer >> 32) as u32,
             options(nomem, nostack));
        asm!("mov cr3, {}", in(reg) pml4 as u64, options(nostack));
        let cr0: u64;
        asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
        asm!("mov cr0, {}", in(reg) cr0 | CR0_WP, options(nostack));
    }
    frames.next
}
