//! Which bytes of a zeroed allocation the heap must write. Memory a tender
//! maps for its guest reads as zero until something writes it, and a
//! page nothing wrote is not resident in the tender: clearing it anyway
//! (as `alloc_zeroed` does by default) makes it resident for nothing. The
//! heap keeps a frontier, the end of the highest range it ever handed
//! out; above it only the allocator's own boundary tags were written (the
//! free chunk's header at the frontier and its tail at the arena's end),
//! so a zeroed allocation there clears its first page past the frontier
//! and the arena's last page, and leaves the pages between alone.
//!
//! kiln's socket buffers are the large zeroed allocations (192 KiB for a
//! bulk TCP socket, docs/bulk.md): a connection that only carries small
//! requests and responses touches the first pages of each, and only those
//! count in the tender's resident set.

use core::ops::Range;

/// The granule of residency.
pub const PAGE: usize = 4096;

/// The heap's frontier over an arena that read as zero when it was
/// handed to the heap; all of it is dirty (cleared on every zeroed
/// allocation) when the arena was not known to be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frontier {
    /// Bytes at and above this address were never handed out.
    pub start: usize,
    /// The arena's end.
    pub end: usize,
}

impl Frontier {
    /// No fresh memory: every zeroed allocation is cleared in full.
    pub const fn dirty() -> Frontier {
        Frontier { start: 0, end: 0 }
    }

    /// An arena `[base, base + size)` that reads as zero.
    pub const fn zeroed(base: usize, size: usize) -> Frontier {
        Frontier {
            start: base,
            end: base.saturating_add(size),
        }
    }

    /// Records that `[ptr, ptr + len)` was handed out (any allocation,
    /// zeroed or not, and the new range of a reallocation).
    pub fn handed_out(&mut self, ptr: usize, len: usize) {
        self.start = self.start.max(ptr.saturating_add(len));
    }

    /// The parts of `[ptr, ptr + len)`, about to be handed out zeroed,
    /// that must be cleared: everything but the whole pages above the
    /// frontier's page, below the arena's last page. Records the range
    /// as handed out.
    pub fn to_clear(&mut self, ptr: usize, len: usize) -> [Range<usize>; 2] {
        let end = ptr.saturating_add(len);
        // The page the frontier lies in holds the free chunk's header
        // (and was touched writing it): cleared, and the next one too if
        // the header straddles.
        let lo = round_up(ptr.max(self.start)).saturating_add(PAGE).min(end);
        // The arena's last page holds the free chunk's tail.
        let hi = (self.end & !(PAGE - 1)).saturating_sub(PAGE).min(end);
        self.handed_out(ptr, len);
        if lo >= hi {
            return [ptr..end, end..end];
        }
        [ptr..lo, hi..end]
    }
}

fn round_up(addr: usize) -> usize {
    addr.saturating_add(PAGE - 1) & !(PAGE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: usize = 0x10_0000;
    const SIZE: usize = 0x40_0000;

    #[test]
    fn dirty_heaps_clear_everything() {
        let mut f = Frontier::dirty();
        assert_eq!(
            f.to_clear(BASE, 0x3_0000),
            [BASE..BASE + 0x3_0000, BASE + 0x3_0000..BASE + 0x3_0000]
        );
    }

    #[test]
    fn fresh_pages_between_the_frontier_and_the_arena_end_are_left_alone() {
        let mut f = Frontier::zeroed(BASE, SIZE);
        // The allocator's metadata lies at the base; the first allocation
        // starts above it.
        let ptr = BASE + 0x48;
        let [a, b] = f.to_clear(ptr, 0x3_0000);
        assert_eq!(a, ptr..BASE + 0x2000);
        assert_eq!(b, ptr + 0x3_0000..ptr + 0x3_0000);
        assert_eq!(f.start, ptr + 0x3_0000);
        // The next one, just above: its first page past the frontier is
        // cleared (the free chunk's header was written there).
        let next = ptr + 0x3_0020;
        let [a, _] = f.to_clear(next, 0x1_0000);
        assert_eq!(a, next..round_up(ptr + 0x3_0000) + PAGE);
        // Below the frontier nothing is fresh any more.
        let [a, b] = f.to_clear(ptr, 0x3_0000);
        assert_eq!((a, b.is_empty()), (ptr..ptr + 0x3_0000, true));
    }

    #[test]
    fn the_arena_end_and_small_allocations_are_cleared() {
        let mut f = Frontier::zeroed(BASE, SIZE);
        let top = BASE + SIZE;
        let ptr = top - 0x5_0000;
        let [a, b] = f.to_clear(ptr, 0x5_0000);
        assert_eq!(a, ptr..ptr + PAGE);
        assert_eq!(b, top - PAGE..top);
        // A small allocation above the frontier: all of it.
        let mut f = Frontier::zeroed(BASE, SIZE);
        let [a, b] = f.to_clear(BASE + 0x100, 64);
        assert_eq!((a, b.is_empty()), (BASE + 0x100..BASE + 0x140, true));
    }
}
