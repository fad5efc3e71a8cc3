//! kiln's own page tables (built by `kiln_x86::paging`), replacing the
//! entry code's identity map of the first GiB: the null page and a stack
//! guard page are unmapped, text is read-only and executable, read-only
//! data is read-only, everything else is writable and not executable
//! (W^X); the addresses from the end of RAM to 4 GiB (where VMMs put
//! virtio-mmio windows, PCI BARs, the IOAPIC) are mapped uncached,
//! writable, not executable. CR0.WP and EFER.NXE were set by the entry
//! code. Built at CPL 3 as on hvt, with the device window added and no
//! CPL 0 bootstrap (the entry code's map is the bootstrap).

use core::sync::atomic::{AtomicU64, Ordering};

use kiln_x86::paging::DeviceDirectories;

use crate::layout::Layout;

/// Where the device window starts (the end of RAM, rounded up to 2 MiB),
/// once the tables are built.
static DEVICE_WINDOW_START: AtomicU64 = AtomicU64::new(1 << 32);

/// Where the device window starts: addresses from there to 4 GiB are
/// mapped uncached for devices.
pub fn device_window_start() -> u64 {
    DEVICE_WINDOW_START.load(Ordering::Relaxed)
}

/// Page directories for the part of the device window above the last
/// directory RAM needs (bss: not in the image file).
static mut DEVICE_DIRECTORIES: DeviceDirectories = DeviceDirectories::new();

/// Builds the page tables for `layout` in the memory from
/// `layout.tables_start` on and switches to them. Returns the end of the
/// memory used by the tables.
///
/// # Safety
///
/// Call once, at boot, at CPL 3, with a layout checked by
/// [`Layout::new`]; the memory from `layout.tables_start` must be free and
/// is used for [`Layout::table_pages`] pages.
pub unsafe fn init(layout: &Layout) -> u64 {
    let window = &raw mut DEVICE_DIRECTORIES;
    // SAFETY: the caller's: once, at boot, a checked layout, free memory
    // for the tables. The static directories are used only here, once.
    let tables = unsafe { kiln_x86::paging::build(layout, Some(&mut *window)) };
    if let Some(start) = tables.device_window_start {
        DEVICE_WINDOW_START.store(start, Ordering::Relaxed);
    }
    // SAFETY: the new tables map everything the running code touches (the
    // image with its own permissions, the VMM's boot data below the image,
    // the stacks and the tables themselves) at the same addresses as the
    // entry code's tables; NXE and WP were set by the entry code.
    unsafe { super::cpu::load_page_tables(tables.pml4) };
    tables.end
}
