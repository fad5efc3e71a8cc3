//! The global allocator: kiln-x86's talc heap over the memory between the
//! image (and its page tables) and the stack, reporting through this
//! platform's console and abort routine.

use kiln_x86::heap::Heap;
pub use kiln_x86::heap::{HeapError, HeapStats};

#[global_allocator]
static HEAP: Heap = Heap::new(
    "give the guest more memory (the tender's --mem=MB)",
    super::host::puts,
    super::host::abort,
);

/// Hands `[base, base + size)` to the allocator.
///
/// # Safety
///
/// The region must be mapped read-write, unused by anything else for the
/// rest of the program, and `init` must be called once, before any
/// allocation.
pub unsafe fn init(base: usize, size: usize) -> Result<(), HeapError> {
    // SAFETY: the caller's.
    unsafe { HEAP.init(base, size) }
}

/// The heap's size and the bytes allocated now and at most.
pub fn stats() -> HeapStats {
    HEAP.stats()
}

/// Registers the heap's gauges (`kiln_heap_*`) with the metrics registry
/// for the rest of the program.
pub fn register_metrics() {
    let registration = kiln_metrics::register(|out: &mut kiln_metrics::Exposition| {
        kiln_x86::heap_stats::write_metrics(&stats(), out)
    });
    core::mem::forget(registration);
}
