//! Guest memory and the one checked accessor through which the tender
//! writes it (in the manner of Solo5's `HVT_CHECKED_GPA_P`).
//!
//! spt guest addresses are host addresses: guest memory is `[0, mem_size)`,
//! of which the tender maps `[SPT_HOST_MEM_BASE, mem_size)` (Linux keeps the
//! lowest pages unmappable, so the null page faults). Every range the
//! tender writes, from the image or its own layout, goes through
//! [`checked`]; nothing else indexes the mapping.

use std::io;
use std::ops::Range;

use kiln_abi::spt::SPT_HOST_MEM_BASE;
use thiserror::Error;

use crate::elf::{Image, PAGE_SIZE, Protection};
use crate::sys::Mapping;

/// Why a guest memory operation was refused or failed.
#[derive(Debug, Error)]
pub enum GuestMemError {
    /// The range wraps around the address space.
    #[error("guest address {addr:#x} + length {len:#x} overflows")]
    Overflow {
        /// Start of the range.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// The range is not inside mapped guest memory.
    #[error(
        "guest address range {addr:#x}..{end:#x} is outside guest memory ({SPT_HOST_MEM_BASE:#x}..{mem_size:#x})"
    )]
    OutOfBounds {
        /// Start of the range.
        addr: u64,
        /// End of the range.
        end: u64,
        /// Size of guest memory.
        mem_size: u64,
    },
    /// The host could not map guest memory at its fixed address.
    #[error(
        "cannot map {size:#x} bytes of guest memory at {SPT_HOST_MEM_BASE:#x}; hint: something else is mapped there, or --mem is too large for this host"
    )]
    Map {
        /// The size asked for.
        size: u64,
        /// What the host said.
        #[source]
        source: io::Error,
    },
    /// Setting page protections failed.
    #[error("cannot protect guest pages {addr:#x}..{end:#x}")]
    Protect {
        /// Start.
        addr: u64,
        /// End.
        end: u64,
        /// What the host said.
        #[source]
        source: io::Error,
    },
}

/// THE checked accessor: the offset range in the mapping of guest range
/// `[addr, addr + len)`, refusing overflow and anything outside
/// `[SPT_HOST_MEM_BASE, mem_size)`.
pub fn checked(addr: u64, len: u64, mem_size: u64) -> Result<Range<usize>, GuestMemError> {
    let end = addr
        .checked_add(len)
        .ok_or(GuestMemError::Overflow { addr, len })?;
    if addr < SPT_HOST_MEM_BASE || end > mem_size {
        return Err(GuestMemError::OutOfBounds {
            addr,
            end,
            mem_size,
        });
    }
    let start = usize::try_from(addr - SPT_HOST_MEM_BASE)
        .map_err(|_| GuestMemError::Overflow { addr, len })?;
    let end = usize::try_from(end - SPT_HOST_MEM_BASE)
        .map_err(|_| GuestMemError::Overflow { addr, len })?;
    Ok(start..end)
}

/// The guest's memory, mapped at its fixed address in this process.
#[derive(Debug)]
pub struct GuestMemory {
    mapping: Mapping,
    size: u64,
}

impl GuestMemory {
    /// Maps guest memory of `size` bytes (page-aligned, above
    /// `SPT_HOST_MEM_BASE`), zeroed and read-write: anonymous, or the
    /// memory file `file` (`--dumpcore`, [`crate::sys::memory_file`]).
    pub fn new(size: u64, file: Option<std::os::fd::RawFd>) -> Result<Self, GuestMemError> {
        let map_err = |source| GuestMemError::Map { size, source };
        let len = size
            .checked_sub(SPT_HOST_MEM_BASE)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| map_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
        let mapping = Mapping::fixed(SPT_HOST_MEM_BASE, len, file).map_err(map_err)?;
        Ok(Self { mapping, size })
    }

    /// Copies `bytes` to guest address `addr`.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), GuestMemError> {
        let range = checked(addr, bytes.len() as u64, self.size)?;
        self.mapping.as_mut_slice()[range].copy_from_slice(bytes);
        Ok(())
    }

    /// Asks for the pages of guest range `[addr, end)` to be backed now
    /// (advice: out-of-range or refused requests are ignored).
    fn populate(&mut self, addr: u64, end: u64) {
        let start = addr & !(PAGE_SIZE - 1);
        let end = end.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if let Ok(range) = checked(start, end.saturating_sub(start), self.size) {
            self.mapping.populate(range.start, range.len());
        }
    }

    /// Sets the protection of the page-aligned guest range `[addr, end)`;
    /// `None` makes it inaccessible.
    pub fn protect(
        &mut self,
        addr: u64,
        end: u64,
        prot: Option<Protection>,
    ) -> Result<(), GuestMemError> {
        let range = checked(addr, end.saturating_sub(addr), self.size)?;
        if !addr.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
            return Err(GuestMemError::Protect {
                addr,
                end,
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        }
        self.mapping
            .protect(range.start, range.len(), prot)
            .map_err(|source| GuestMemError::Protect { addr, end, source })
    }

    /// Copies the image's segments in and gives each its protection; the
    /// low memory (boot info, manifest, command line) becomes read-only.
    /// Everything else stays read-write and never executable, but with
    /// `exec_heap` (`--x-exec-heap`, as solo5-spt maps it) the heap and
    /// stack, from the page after the image to the top of memory, are
    /// executable too.
    pub fn load(
        &mut self,
        image: &Image<'_>,
        low: &[u8],
        low_at: u64,
        exec_heap: bool,
    ) -> Result<(), GuestMemError> {
        // The pages about to be written, populated in one go: the low
        // memory and each segment's file bytes.
        let low_end = low_at.saturating_add(low.len() as u64);
        self.populate(low_at, low_end);
        for s in &image.segments {
            self.populate(s.vaddr, s.vaddr.saturating_add(s.file.len() as u64));
        }
        for s in &image.segments {
            self.write(s.vaddr, s.file)?;
        }
        self.write(low_at, low)?;
        for s in &image.segments {
            let (start, end) = s.pages();
            self.protect(start, end, Some(s.prot))?;
        }
        if exec_heap {
            self.make_executable(image.kernel_end.div_ceil(PAGE_SIZE) * PAGE_SIZE, self.size)?;
        }
        let low_end = (low_at + low.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        self.protect(SPT_HOST_MEM_BASE, low_end, Some(Protection::Read))
    }

    /// Makes the page-aligned guest range `[addr, end)` readable, writable
    /// and executable; an empty range is left alone.
    fn make_executable(&mut self, addr: u64, end: u64) -> Result<(), GuestMemError> {
        if addr >= end {
            return Ok(());
        }
        let range = checked(addr, end - addr, self.size)?;
        self.mapping
            .protect_rwx(range.start, range.len())
            .map_err(|source| GuestMemError::Protect { addr, end, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_inside_memory_are_offsets_from_the_base() {
        assert_eq!(checked(0x10000, 16, 1 << 20).unwrap(), 0..16);
        assert_eq!(checked(0x11000, 0x1000, 1 << 20).unwrap(), 0x1000..0x2000);
    }

    #[test]
    fn ranges_outside_memory_are_refused() {
        assert!(matches!(
            checked(0, 8, 1 << 20),
            Err(GuestMemError::OutOfBounds { .. })
        ));
        assert!(matches!(
            checked((1 << 20) - 4, 8, 1 << 20),
            Err(GuestMemError::OutOfBounds { .. })
        ));
        assert!(matches!(
            checked(u64::MAX - 3, 8, 1 << 20),
            Err(GuestMemError::Overflow { .. })
        ));
    }
}
