//! virtio-drivers' `Hal` for kiln: guest memory is identity-mapped, so a
//! buffer's physical address is its address; DMA pages come from the heap.

use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

/// kiln's `Hal`.
pub struct KilnHal;

fn page_layout(pages: usize) -> core::alloc::Layout {
    // A page count the drivers ask for is small (queues of at most a few
    // pages); an impossible one aborts like an out-of-memory.
    match core::alloc::Layout::from_size_align(pages.saturating_mul(PAGE_SIZE), PAGE_SIZE) {
        Ok(layout) => layout,
        Err(_) => super::host::abort(format_args!("DMA allocation of {pages} pages")),
    }
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned heap memory owned by the
// caller until `dma_dealloc`; every address is identity-mapped (kiln's page
// tables map all RAM at its physical address), so `share` returns the
// buffer's address and `unshare` has nothing to copy; MMIO addresses are
// in the device window kiln's tables map uncached.
unsafe impl Hal for KilnHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = page_layout(pages);
        // SAFETY: the layout has a non-zero size (drivers ask for at least
        // one page); the global allocator aborts instead of returning null.
        let ptr = unsafe { alloc::alloc::alloc_zeroed(layout) };
        match NonNull::new(ptr) {
            Some(p) => (ptr as u64, p),
            None => super::host::abort(format_args!("out of memory for DMA")),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes back what `dma_alloc` returned, with
        // the same page count, so the layout matches.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), page_layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // A PCI BAR the firmware put outside kiln's device window (above
        // 4 GiB, or in RAM) cannot be reached: stop with the reason.
        let end = paddr.checked_add(size as u64);
        let window = super::paging::device_window_start();
        if paddr < window || end.is_none_or(|e| e > 1 << 32) {
            super::host::abort(format_args!(
                "a device's registers at {paddr:#x} (+{size:#x}) lie outside kiln's device window {window:#x}..4 GiB"
            ));
        }
        match NonNull::new(paddr as *mut u8) {
            Some(p) => p,
            None => super::host::abort(format_args!("MMIO at address 0")),
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.cast::<u8>().as_ptr() as u64
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
