//! The heap's fresh-memory rule against talc itself: over an arena that
//! starts zero, every zeroed allocation reads zero although only
//! `Frontier::to_clear`'s ranges are written, whatever was allocated,
//! scribbled over, freed and reallocated before; and a large one leaves
//! the pages in between alone.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

use kiln_x86::heap_fresh::{Frontier, PAGE};
use talc::TalcLock;
use talc::source::Manual;

type Talc = TalcLock<spin::mutex::SpinMutex<()>, Manual>;

const ARENA: usize = 8 << 20;

/// A zeroed, page-aligned arena handed to talc.
struct Arena {
    base: *mut u8,
    talc: Talc,
    frontier: Frontier,
}

impl Arena {
    fn new() -> Arena {
        let layout = Layout::from_size_align(ARENA, PAGE).unwrap();
        // SAFETY: a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!base.is_null());
        let talc = Talc::new(Manual);
        // SAFETY: the arena is ours until the test ends (leaked).
        unsafe { talc.lock().claim(base, ARENA) }.unwrap();
        Arena {
            base,
            talc,
            frontier: Frontier::zeroed(base as usize, ARENA),
        }
    }

    /// What `Heap::alloc_zeroed` does; also returns how many bytes it
    /// wrote.
    fn alloc_zeroed(&mut self, layout: Layout) -> (*mut u8, usize) {
        // SAFETY: a non-zero size.
        let ptr = unsafe { self.talc.alloc(layout) };
        assert!(!ptr.is_null(), "arena full");
        let mut written = 0;
        for r in self.frontier.to_clear(ptr as usize, layout.size()) {
            assert!(r.start >= ptr as usize && r.end <= ptr as usize + layout.size());
            // SAFETY: within the allocation.
            unsafe { std::ptr::write_bytes(r.start as *mut u8, 0, r.end - r.start) };
            written += r.end - r.start;
        }
        (ptr, written)
    }

    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: a non-zero size.
        let ptr = unsafe { self.talc.alloc(layout) };
        assert!(!ptr.is_null(), "arena full");
        self.frontier.handed_out(ptr as usize, layout.size());
        ptr
    }

    fn free(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: allocated here with this layout.
        unsafe { self.talc.dealloc(ptr, layout) }
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn zeroed_allocations_read_zero_whatever_came_before() {
    let mut arena = Arena::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<(*mut u8, Layout)> = Vec::new();
    // Sizes like a stack's: frames, headers, socket buffers of 16 KiB to
    // 192 KiB; some page-aligned.
    let sizes = [24, 100, 1514, 4096, 16 << 10, 32 << 10, 64 << 10, 128 << 10];
    for round in 0..4000 {
        let r = rng.next();
        if r.is_multiple_of(3) && !live.is_empty() {
            let (ptr, layout) = live.swap_remove((r >> 8) as usize % live.len());
            arena.free(ptr, layout);
            continue;
        }
        let size = sizes[(r >> 16) as usize % sizes.len()] + (r >> 40) as usize % 64;
        let align = if r & 0x100 == 0 { 8 } else { PAGE };
        let layout = Layout::from_size_align(size, align).unwrap();
        let zeroed = r & 0x200 != 0;
        if live.iter().map(|(_, l)| l.size()).sum::<usize>() + size > ARENA / 2 {
            continue;
        }
        let ptr = if zeroed {
            let (ptr, _) = arena.alloc_zeroed(layout);
            // SAFETY: `size` bytes just allocated.
            let bytes = unsafe { std::slice::from_raw_parts(ptr, size) };
            if let Some(at) = bytes.iter().position(|b| *b != 0) {
                panic!(
                    "round {round}: byte {at} of a zeroed allocation of {size} is {:#x}",
                    bytes[at]
                );
            }
            ptr
        } else {
            arena.alloc(layout)
        };
        // Used: every byte written.
        // SAFETY: `size` bytes just allocated.
        unsafe { std::ptr::write_bytes(ptr, 0xa5, size) };
        live.push((ptr, layout));
    }
}

#[test]
fn large_zeroed_allocations_leave_fresh_pages_alone() {
    let mut arena = Arena::new();
    let base = arena.base as usize;
    // A few small allocations first, as at boot.
    for _ in 0..10 {
        let p = arena.alloc(Layout::from_size_align(200, 8).unwrap());
        // SAFETY: 200 bytes just allocated.
        unsafe { std::ptr::write_bytes(p, 0xff, 200) };
    }
    let layout = Layout::from_size_align(192 << 10, 8).unwrap();
    let (ptr, written) = arena.alloc_zeroed(layout);
    assert!(ptr as usize > base);
    assert!(written <= 2 * PAGE, "{written} bytes written of 192 KiB");
    // The same size again, after freeing: below the frontier, cleared.
    arena.free(ptr, layout);
    let (_, again) = arena.alloc_zeroed(layout);
    assert!(again >= 192 << 10, "reused memory cleared: {again} bytes");
}

#[test]
fn a_zeroed_allocation_up_to_the_arena_end_reads_zero() {
    for slack in [0usize, 8, 16, 24, 32, 48, 64, 100, 128, 256, 4096] {
        let mut arena = Arena::new();
        let first = arena.alloc(Layout::from_size_align(1000, 8).unwrap());
        // SAFETY: 1000 bytes just allocated.
        unsafe { std::ptr::write_bytes(first, 0xff, 1000) };
        // The largest block that fits, less `slack`: it reaches the
        // arena's last page, where the free chunk's tail lies.
        let mut size = ARENA - 1000;
        let ptr = loop {
            let layout = Layout::from_size_align(size.saturating_sub(slack), 8).unwrap();
            // SAFETY: a non-zero size.
            let p = unsafe { arena.talc.alloc(layout) };
            if !p.is_null() {
                // SAFETY: just allocated with this layout.
                unsafe { arena.talc.dealloc(p, layout) };
                break arena.alloc_zeroed(layout).0;
            }
            size -= 8;
        };
        let len = size.saturating_sub(slack);
        assert!(ptr as usize + len + PAGE > arena.base as usize + ARENA);
        // SAFETY: `len` bytes just allocated.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        if let Some(at) = bytes.iter().rposition(|b| *b != 0) {
            panic!("slack {slack}: byte {at} of {len} is {:#x}", bytes[at]);
        }
    }
}
