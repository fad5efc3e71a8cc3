//! The global allocator: talc over the memory between the image (and its
//! page tables) and the stack.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

use talc::TalcLock;
use talc::source::Manual;

use crate::console::BufferedWriter;

/// The allocator: talc, behind a spin lock (kiln is single-threaded, so the
/// lock is never contended), aborting with a message when memory runs out.
struct Heap {
    talc: TalcLock<spin::mutex::SpinMutex<()>, Manual>,
    size: AtomicUsize,
}

#[global_allocator]
static HEAP: Heap = Heap {
    talc: TalcLock::new(Manual),
    size: AtomicUsize::new(0),
};

/// Why the heap could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeapError {
    /// The region left for the heap is too small.
    #[error(
        "only {size} bytes of memory are left for the heap at {base:#x}; \
         hint: give the guest more memory (kiln run --mem=MB, the VMM's memory size)"
    )]
    TooSmall {
        /// Start of the region.
        base: usize,
        /// Its size.
        size: usize,
    },
}

/// Hands `[base, base + size)` to the allocator.
///
/// # Safety
///
/// The region must be mapped read-write, unused by anything else for the
/// rest of the program, and `init` must be called once, before any
/// allocation.
pub unsafe fn init(base: usize, size: usize) -> Result<(), HeapError> {
    // SAFETY: the caller guarantees that the region is ours for good.
    let claimed = unsafe { HEAP.talc.lock().claim(base as *mut u8, size) };
    if claimed.is_none() {
        return Err(HeapError::TooSmall { base, size });
    }
    HEAP.size.store(size, Ordering::Relaxed);
    Ok(())
}

// SAFETY: every method forwards to talc's GlobalAlloc implementation with
// the caller's arguments unchanged.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded (see the impl).
        let ptr = unsafe { self.talc.alloc(layout) };
        if ptr.is_null() {
            self.out_of_memory(layout)
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded (see the impl).
        unsafe { self.talc.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded (see the impl).
        let ptr = unsafe { self.talc.alloc_zeroed(layout) };
        if ptr.is_null() {
            self.out_of_memory(layout)
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded (see the impl).
        let new = unsafe { self.talc.realloc(ptr, layout, new_size) };
        if new.is_null() {
            self.out_of_memory(Layout::from_size_align(new_size, layout.align()).unwrap_or(layout))
        }
        new
    }
}

impl Heap {
    /// Prints what could not be allocated and aborts.
    fn out_of_memory(&self, layout: Layout) -> ! {
        let size = self.size.load(Ordering::Relaxed);
        {
            let mut out = BufferedWriter::<_, 256>::new(super::host::puts);
            let _ = writeln!(
                out,
                "kiln: out of memory: cannot allocate {} bytes (align {}) from a heap of {} bytes; \
                 hint: give the guest more memory (kiln run --mem=MB, the VMM's memory size)",
                layout.size(),
                layout.align(),
                size
            );
        }
        super::host::abort(format_args!(
            "out of memory: cannot allocate {} bytes",
            layout.size()
        ))
    }
}
