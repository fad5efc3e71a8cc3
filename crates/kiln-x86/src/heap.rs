//! The global allocator: talc over the memory a platform hands it at boot
//! (between the image, with its page tables, and the stack). Each platform
//! declares one [`Heap`] as its `#[global_allocator]`, with its console,
//! its abort routine and the hint its out-of-memory messages give.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

use talc::TalcLock;
use talc::source::Manual;

use crate::console::BufferedWriter;
pub use crate::heap_stats::HeapStats;
use crate::{Abort, Puts};

/// The allocator: talc, behind a spin lock (kiln is single-threaded, so the
/// lock is never contended), aborting with a message when memory runs out.
pub struct Heap {
    talc: TalcLock<spin::mutex::SpinMutex<()>, Manual>,
    size: AtomicUsize,
    /// Bytes allocated now and at most: a relaxed load and store each
    /// (not a locked read-modify-write), as one thread allocates.
    in_use: AtomicUsize,
    peak: AtomicUsize,
    /// How to get more memory on this platform, e.g. "give the guest more
    /// memory (the tender's --mem=MB)".
    hint: &'static str,
    puts: Puts,
    abort: Abort,
}

/// Why the heap could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeapError {
    /// The region left for the heap is too small.
    #[error("only {size} bytes of memory are left for the heap at {base:#x}; hint: {hint}")]
    TooSmall {
        /// Start of the region.
        base: usize,
        /// Its size.
        size: usize,
        /// The platform's hint (see [`Heap::new`]).
        hint: &'static str,
    },
}

impl Heap {
    /// An empty heap. `hint` says how to give the guest more memory;
    /// `puts` and `abort` report running out of it.
    pub const fn new(hint: &'static str, puts: Puts, abort: Abort) -> Heap {
        Heap {
            talc: TalcLock::new(Manual),
            size: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            hint,
            puts,
            abort,
        }
    }

    /// Hands `[base, base + size)` to the allocator.
    ///
    /// # Safety
    ///
    /// The region must be mapped read-write, unused by anything else for
    /// the rest of the program, and `init` must be called once, before any
    /// allocation.
    pub unsafe fn init(&self, base: usize, size: usize) -> Result<(), HeapError> {
        // SAFETY: the caller guarantees that the region is ours for good.
        let claimed = unsafe { self.talc.lock().claim(base as *mut u8, size) };
        if claimed.is_none() {
            return Err(HeapError::TooSmall {
                base,
                size,
                hint: self.hint,
            });
        }
        self.size.store(size, Ordering::Relaxed);
        Ok(())
    }

    /// The heap's size and the bytes allocated now and at most.
    pub fn stats(&self) -> HeapStats {
        HeapStats {
            size: self.size.load(Ordering::Relaxed),
            in_use: self.in_use.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
        }
    }

    fn grew(&self, bytes: usize) {
        let now = self.in_use.load(Ordering::Relaxed).wrapping_add(bytes);
        self.in_use.store(now, Ordering::Relaxed);
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.store(now, Ordering::Relaxed);
        }
    }

    fn shrank(&self, bytes: usize) {
        let now = self.in_use.load(Ordering::Relaxed).saturating_sub(bytes);
        self.in_use.store(now, Ordering::Relaxed);
    }

    /// Prints what could not be allocated and aborts.
    fn out_of_memory(&self, layout: Layout) -> ! {
        let size = self.size.load(Ordering::Relaxed);
        {
            let mut out = BufferedWriter::<_, 256>::new(self.puts);
            let _ = writeln!(
                out,
                "kiln: out of memory: cannot allocate {} bytes (align {}) from a heap of {} bytes; \
                 hint: {}",
                layout.size(),
                layout.align(),
                size,
                self.hint
            );
        }
        (self.abort)(format_args!(
            "out of memory: cannot allocate {} bytes",
            layout.size()
        ))
    }
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
        self.grew(layout.size());
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded (see the impl).
        unsafe { self.talc.dealloc(ptr, layout) }
        self.shrank(layout.size());
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded (see the impl).
        let ptr = unsafe { self.talc.alloc_zeroed(layout) };
        if ptr.is_null() {
            self.out_of_memory(layout)
        }
        self.grew(layout.size());
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded (see the impl).
        let new = unsafe { self.talc.realloc(ptr, layout, new_size) };
        if new.is_null() {
            self.out_of_memory(Layout::from_size_align(new_size, layout.align()).unwrap_or(layout))
        }
        self.shrank(layout.size());
        self.grew(new_size);
        new
    }
}
