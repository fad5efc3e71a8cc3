//! kiln's own page tables, built at CPL 3 and shared by kiln-solo5 (hvt)
//! and kiln-virtio: the null page and a stack guard page are unmapped,
//! text is read-only and executable, read-only data is read-only,
//! everything else is writable and not executable (W^X); optionally, the
//! addresses from the end of RAM to 4 GiB (where VMMs put virtio-mmio
//! windows, PCI BARs, the IOAPIC) are mapped uncached, writable, not
//! executable. Each platform loads the tables itself (from CPL 3, through
//! its `#UD` gate) and has set CR0.WP and EFER.NXE before. See Intel SDM
//! vol. 3, chapter 4.5 (4-level paging).
#![allow(unsafe_code)]

use crate::layout::{Layout, Protection};

const PAGE: u64 = 0x1000;
const LARGE_PAGE: u64 = 0x20_0000;
const ENTRIES: u64 = 512;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
/// Every mapping is a user page: the unikernel runs at CPL 3 (see the
/// platforms' `cpu::enter_user_mode`).
const USER: u64 = 1 << 2;
const HUGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
/// Page-level write-through and cache disable: device registers.
const UNCACHED: u64 = (1 << 3) | (1 << 4);
/// Page directories covering 4 GiB.
const DIRECTORIES: usize = 4;

/// Page directories for the part of the device window above the last
/// directory RAM needs: a platform that maps the window keeps one in a
/// `static` (bss: not in the image file).
#[repr(C, align(4096))]
pub struct DeviceDirectories([[u64; ENTRIES as usize]; DIRECTORIES]);

impl DeviceDirectories {
    /// Zeroed directories.
    pub const fn new() -> DeviceDirectories {
        DeviceDirectories([[0; ENTRIES as usize]; DIRECTORIES])
    }
}

impl Default for DeviceDirectories {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`build`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    /// The PML4's address, for CR3.
    pub pml4: u64,
    /// The end of the memory the tables use.
    pub end: u64,
    /// Where the device window starts (the end of RAM, rounded up to
    /// 2 MiB), when one was mapped.
    pub device_window_start: Option<u64>,
}

/// Allocates zeroed page-table pages upwards from a page-aligned address.
struct Frames {
    next: u64,
}

impl Frames {
    fn alloc(&mut self) -> *mut u64 {
        let frame = self.next;
        self.next += PAGE;
        let table = frame as *mut u64;
        // SAFETY: `build`'s caller guarantees the memory from `next` on is
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
/// `layout.tables_start` on, without loading them. With `device_window`,
/// the addresses from the end of RAM to 4 GiB are mapped uncached for
/// devices, in `device_window`'s directories where RAM needs none. Runs at
/// CPL 3: the tables are written while no live table refers to them, so
/// even a shadow-paging hypervisor lets the writes run at full speed.
///
/// # Safety
///
/// Call once, at boot, with a layout checked by [`Layout::new`]; the
/// memory from `layout.tables_start` must be free and is used for
/// [`Layout::table_pages`] pages; `device_window` must be used by nothing
/// else for the rest of the program.
pub unsafe fn build(layout: &Layout, device_window: Option<&mut DeviceDirectories>) -> Tables {
    let mut frames = Frames {
        next: layout.tables_start,
    };
    let pml4 = frames.alloc();
    let pdpt = frames.alloc();
    let mem = layout.mem_size;
    let large_pages = mem.div_ceil(LARGE_PAGE);
    let directories = large_pages.div_ceil(ENTRIES);
    let mut pds = [core::ptr::null_mut::<u64>(); DIRECTORIES];
    for d in 0..directories {
        let pd = frames.alloc();
        pds[d as usize] = pd;
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
    // The device window: from the end of RAM to 4 GiB in large uncached
    // pages, in the directories above use the static ones.
    let mut device_window_start = None;
    if let Some(window) = device_window {
        let device = HUGE | PRESENT | WRITABLE | USER | NO_EXECUTE | UNCACHED;
        device_window_start = Some(large_pages * LARGE_PAGE);
        for large in large_pages..ENTRIES * DIRECTORIES as u64 {
            let d = (large / ENTRIES) as usize;
            if pds[d].is_null() {
                pds[d] = window.0[d].as_mut_ptr();
                // SAFETY: d < 4 is inside the PDPT.
                unsafe { *pdpt.add(d) = pds[d] as u64 | PRESENT | WRITABLE | USER };
            }
            // SAFETY: the index is below 512, inside the directory.
            unsafe { *pds[d].add((large % ENTRIES) as usize) = (large * LARGE_PAGE) | device };
        }
    }
    // SAFETY: the PML4 has 512 entries; entry 0 covers the first 512 GiB.
    unsafe { *pml4 = pdpt as u64 | PRESENT | WRITABLE | USER };
    Tables {
        pml4: pml4 as u64,
        end: frames.next,
        device_window_start,
    }
}
