//! The guest's memory map, computed at boot from the boot info and the
//! linker script's symbols, and the page protection of every address.
//!
//! ```text
//! 0                     null page, unmapped
//! 0x1000 .. image       the tender's area (boot info, command line,
//!                       manifest, its page tables): read-write
//! 0x100000              text (R+X), rodata (R), data + bss (R+W)
//! image end             boot data the tender placed after the image, if any
//!                       kiln's page tables
//! heap start .. guard   the heap
//! guard page            unmapped: a stack overflow faults here
//! mem - STACK_SIZE      the stack (the tender points RSP at its top)
//! ```

use core::ops::Range;

/// Size of a page.
pub const PAGE: u64 = 0x1000;
const LARGE_PAGE: u64 = 0x20_0000;

/// Room reserved for the stack at the top of memory.
pub const STACK_SIZE: u64 = 1024 * 1024;

/// Smallest heap kiln boots with.
pub const MIN_HEAP: u64 = 256 * 1024;

/// Largest guest memory the page tables cover (hypercall arguments are
/// 32-bit addresses anyway).
pub const MAX_MEMORY: u64 = 4 << 30;

/// How a page may be accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Not mapped.
    None,
    /// Code.
    ReadExecute,
    /// Read-only data.
    Read,
    /// Data.
    ReadWrite,
}

/// Why the memory the tender gave cannot hold kiln.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The memory size is beyond what the page tables cover.
    #[error(
        "guest memory of {mem_size} bytes exceeds the {MAX_MEMORY} bytes kiln supports; \
         hint: run with a smaller --mem"
    )]
    TooMuchMemory {
        /// Memory size from the boot info.
        mem_size: u64,
    },
    /// The boot info's kernel end lies before the end of the image.
    #[error(
        "boot info says the kernel ends at {kernel_end:#x}, inside the image ending at {image_end:#x}"
    )]
    KernelEndInsideImage {
        /// The boot info's value.
        kernel_end: u64,
        /// Where the linker put the end of the image.
        image_end: u64,
    },
    /// The tender put boot data where the image or the stack is.
    #[error("boot data at {start:#x}..{end:#x} overlaps the image or the stack")]
    BootDataMisplaced {
        /// Start of the data.
        start: u64,
        /// End of the data.
        end: u64,
    },
    /// Too little memory is left for the heap.
    #[error(
        "guest memory of {mem_size} bytes leaves {heap} bytes for the heap, less than the \
         {MIN_HEAP} needed; hint: give the guest more memory with --mem"
    )]
    TooLittleMemory {
        /// Memory size from the boot info.
        mem_size: u64,
        /// What is left for the heap.
        heap: u64,
    },
}

/// The image's sections, from the linker script's symbols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sections {
    /// Code.
    pub text: Range<u64>,
    /// Read-only data and the notes.
    pub rodata: Range<u64>,
    /// Data and bss.
    pub data: Range<u64>,
}

/// The memory map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Guest memory size, rounded down to a page.
    pub mem_size: u64,
    /// The image's sections.
    pub sections: Sections,
    /// First address after the image (and the tender's kernel end).
    pub image_end: u64,
    /// Where kiln's page tables start.
    pub tables_start: u64,
    /// Where the heap starts.
    pub heap_start: u64,
    /// The unmapped page below the stack.
    pub guard_page: u64,
}

const fn align_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

impl Layout {
    /// Computes the layout. `boot_data` are the ranges the tender's boot
    /// info points at (itself, the command line, the manifest): they must
    /// lie below the image or between the image and the stack, and are
    /// kept clear of the page tables and the heap.
    pub fn new(
        mem_size: u64,
        kernel_end: u64,
        sections: Sections,
        boot_data: &[Range<u64>],
    ) -> Result<Layout, LayoutError> {
        if mem_size > MAX_MEMORY {
            return Err(LayoutError::TooMuchMemory { mem_size });
        }
        let mem_size = mem_size / PAGE * PAGE;
        let image_start = sections.text.start;
        let image_end = align_up(sections.data.end, PAGE);
        if kernel_end < sections.data.end {
            return Err(LayoutError::KernelEndInsideImage {
                kernel_end,
                image_end: sections.data.end,
            });
        }
        let image_end = image_end.max(align_up(kernel_end, PAGE));
        let stack_bottom = mem_size.saturating_sub(STACK_SIZE);
        let guard_page = stack_bottom.saturating_sub(PAGE);
        let mut tables_start = image_end;
        for r in boot_data {
            let below_image = r.end <= image_start;
            let above_image = r.start >= image_end && r.end <= guard_page;
            if r.start > r.end || !(below_image || above_image) {
                return Err(LayoutError::BootDataMisplaced {
                    start: r.start,
                    end: r.end,
                });
            }
            if above_image {
                tables_start = tables_start.max(align_up(r.end, PAGE));
            }
        }
        let mut layout = Layout {
            mem_size,
            sections,
            image_end,
            tables_start,
            heap_start: 0,
            guard_page,
        };
        layout.heap_start = tables_start + layout.table_pages() * PAGE;
        let heap = guard_page.saturating_sub(layout.heap_start);
        if heap < MIN_HEAP {
            return Err(LayoutError::TooLittleMemory { mem_size, heap });
        }
        Ok(layout)
    }

    /// Bytes between the heap start and the guard page.
    pub fn heap_size(&self) -> u64 {
        self.guard_page - self.heap_start
    }

    /// The protection of the page at `addr`.
    pub fn protection(&self, addr: u64) -> Protection {
        let s = &self.sections;
        if addr < PAGE || (self.guard_page..self.guard_page + PAGE).contains(&addr) {
            Protection::None
        } else if s.text.contains(&addr) {
            Protection::ReadExecute
        } else if s.rodata.contains(&addr) {
            Protection::Read
        } else {
            Protection::ReadWrite
        }
    }

    /// Whether the 2 MiB region at `base` needs 4 KiB pages, because it
    /// holds the null page, part of the image or the guard page, or ends
    /// past the end of memory.
    pub fn needs_small_pages(&self, base: u64, len: u64) -> bool {
        let end = base + len;
        base < self.image_end || (base..end).contains(&self.guard_page) || end > self.mem_size
    }

    /// Page-table pages needed: PML4, PDPT, the page directories, and one
    /// page table per 2 MiB region that needs small pages.
    pub fn table_pages(&self) -> u64 {
        let large = self.mem_size.div_ceil(LARGE_PAGE);
        let directories = large.div_ceil(512);
        // Only the regions up to the image end, the guard page's and the
        // last one can need small pages: count those without a loop over
        // all of memory.
        let low = self.image_end.div_ceil(LARGE_PAGE).min(large);
        let guard = self.guard_page / LARGE_PAGE;
        let last = large - 1;
        let mut small = (0..low)
            .filter(|i| self.needs_small_pages(i * LARGE_PAGE, LARGE_PAGE))
            .count() as u64;
        for (region, seen) in [(guard, guard < low), (last, last < low || last == guard)] {
            if !seen && self.needs_small_pages(region * LARGE_PAGE, LARGE_PAGE) {
                small += 1;
            }
        }
        2 + directories + small
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn sections() -> Sections {
        Sections {
            text: 0x10_0000..0x11_0000,
            rodata: 0x11_0000..0x11_3000,
            data: 0x11_3000..0x11_8800,
        }
    }

    #[test]
    fn a_small_image_in_512_mib() {
        let mem = 512 << 20;
        let l = Layout::new(
            mem,
            0x11_9000,
            sections(),
            &[0x5000..0x5100, 0x6000..0x6010],
        )
        .unwrap();
        assert_eq!(l.image_end, 0x11_9000);
        assert_eq!(l.tables_start, 0x11_9000);
        assert_eq!(l.guard_page, mem - STACK_SIZE - PAGE);
        // PML4, PDPT, one directory, and page tables for the first and the
        // guard page's 2 MiB regions.
        assert_eq!(l.table_pages(), 5);
        assert_eq!(l.heap_start, 0x11_9000 + 5 * PAGE);
        assert_eq!(l.heap_size(), l.guard_page - l.heap_start);

        assert_eq!(l.protection(0), Protection::None);
        assert_eq!(l.protection(0xfff), Protection::None);
        assert_eq!(l.protection(0x5000), Protection::ReadWrite);
        assert_eq!(l.protection(0x10_0000), Protection::ReadExecute);
        assert_eq!(l.protection(0x11_0000), Protection::Read);
        assert_eq!(l.protection(0x11_3000), Protection::ReadWrite);
        assert_eq!(l.protection(l.guard_page), Protection::None);
        assert_eq!(l.protection(l.guard_page + PAGE), Protection::ReadWrite);
        assert!(l.needs_small_pages(0, LARGE_PAGE));
        assert!(!l.needs_small_pages(LARGE_PAGE, LARGE_PAGE));
    }

    #[test]
    fn memory_ending_inside_a_large_page_is_mapped_with_small_pages() {
        let mem = (8 << 20) + (1 << 20);
        let l = Layout::new(mem, 0x11_9000, sections(), &[]).unwrap();
        // Regions 0 (image), 3 (guard page at 7 MiB) and 4 (ends past
        // memory) need page tables; regions 1 and 2 do not.
        assert!(l.needs_small_pages(4 * LARGE_PAGE, LARGE_PAGE));
        assert!(!l.needs_small_pages(2 * LARGE_PAGE, LARGE_PAGE));
        assert_eq!(l.table_pages(), 2 + 1 + 3);
    }

    #[test]
    fn boot_data_after_the_image_moves_the_tables() {
        let l = Layout::new(64 << 20, 0x11_9000, sections(), &[0x11_a000..0x11_c001]).unwrap();
        assert_eq!(l.tables_start, 0x11_d000);
    }

    #[test]
    fn misplaced_boot_data_is_refused() {
        let inside = Layout::new(64 << 20, 0x11_9000, sections(), &[0x10_8000..0x10_9000]);
        assert!(matches!(inside, Err(LayoutError::BootDataMisplaced { .. })));
        let in_stack = Layout::new(
            64 << 20,
            0x11_9000,
            sections(),
            &[(63 << 20)..(63 << 20) + 8],
        );
        assert!(matches!(
            in_stack,
            Err(LayoutError::BootDataMisplaced { .. })
        ));
        let (start, end) = (0x6000, 0x5000);
        let inverted = Layout::new(64 << 20, 0x11_9000, sections(), &[start..end]);
        assert!(matches!(
            inverted,
            Err(LayoutError::BootDataMisplaced { .. })
        ));
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(matches!(
            Layout::new(8 << 30, 0x11_9000, sections(), &[]),
            Err(LayoutError::TooMuchMemory { .. })
        ));
        assert!(matches!(
            Layout::new(2 << 20, 0x11_9000, sections(), &[]),
            Err(LayoutError::TooLittleMemory { .. })
        ));
        assert!(matches!(
            Layout::new(0, 0, sections(), &[]),
            Err(LayoutError::KernelEndInsideImage { .. })
        ));
    }
}
