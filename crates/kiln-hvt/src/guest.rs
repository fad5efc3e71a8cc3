//! Guest memory and the one checked accessor through which the tender reads
//! and writes it (in the manner of Solo5's `HVT_CHECKED_GPA_P`).
//!
//! Every guest address the tender touches, whether it comes from the image,
//! the tender's own layout or a hypercall argument, goes through
//! [`GuestMemory::checked`]: the range must not overflow and must lie inside
//! guest memory. Nothing else indexes the mapping.

use std::io;
use std::mem::size_of;
use std::ops::Range;

use thiserror::Error;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::sys::Mapping;

/// Why a guest memory access was refused.
#[derive(Debug, Error)]
pub enum GuestMemError {
    /// The range wraps around the address space.
    #[error("guest address {gpa:#x} + length {len:#x} overflows")]
    Overflow {
        /// Start of the range.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// The range ends past guest memory.
    #[error("guest address range {gpa:#x}..{end:#x} is outside guest memory (0..{mem_size:#x})")]
    OutOfBounds {
        /// Start of the range.
        gpa: u64,
        /// End of the range.
        end: u64,
        /// Size of guest memory.
        mem_size: u64,
    },
    /// The range touches memory the tender keeps read-only (the image's
    /// code and read-only data, the boot data).
    #[error("guest address range {gpa:#x}..{end:#x} is read-only")]
    ReadOnly {
        /// Start of the range.
        gpa: u64,
        /// End of the range.
        end: u64,
    },
    /// Making pages read-only failed.
    #[error("cannot write-protect guest memory {start:#x}..{end:#x}")]
    Protect {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
        /// What the host said.
        #[source]
        source: io::Error,
    },
    /// The host could not map guest memory.
    #[error("cannot map {size} bytes of guest memory")]
    Map {
        /// The size asked for.
        size: u64,
        /// What the host said.
        #[source]
        source: io::Error,
    },
}

/// The guest's physical memory, identity-mapped from address 0.
#[derive(Debug)]
pub struct GuestMemory {
    mapping: Mapping,
    /// Ranges made read-only ([`GuestMemory::protect`]), which
    /// [`GuestMemory::slice_mut`] refuses.
    read_only: Vec<Range<u64>>,
}

impl GuestMemory {
    /// Maps `size` bytes of zeroed guest memory.
    pub fn new(size: u64) -> Result<Self, GuestMemError> {
        let len = usize::try_from(size).map_err(|_| GuestMemError::Map {
            size,
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        let mapping = Mapping::new(len).map_err(|source| GuestMemError::Map { size, source })?;
        Ok(Self {
            mapping,
            read_only: Vec::new(),
        })
    }

    /// Asks the host for transparent huge pages behind guest memory
    /// ([`Mapping::advise_huge_pages`]).
    pub fn advise_huge_pages(&self) {
        self.mapping.advise_huge_pages();
    }

    /// Size of guest memory in bytes.
    pub fn size(&self) -> u64 {
        self.mapping.len() as u64
    }

    /// The mapping, for registering it with KVM.
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// THE checked accessor: turns a guest range into a host index range,
    /// refusing overflow and anything outside guest memory.
    pub fn checked(&self, gpa: u64, len: u64) -> Result<Range<usize>, GuestMemError> {
        check_range(gpa, len, self.size())
    }

    /// A view of guest memory for a thread that runs while the vCPU does
    /// (the ring's I/O thread), with the same checks as [`Self::checked`]
    /// and [`Self::slice_mut`]; it keeps the mapping alive.
    pub fn shared(&self) -> SharedGuest {
        SharedGuest {
            region: self.mapping.shared(),
            read_only: self.read_only.clone(),
        }
    }

    /// The guest bytes `gpa..gpa + len`.
    pub fn slice(&self, gpa: u64, len: u64) -> Result<&[u8], GuestMemError> {
        let range = self.checked(gpa, len)?;
        Ok(&self.mapping.as_slice()[range])
    }

    /// The guest bytes `gpa..gpa + len`, writable; refused where they touch
    /// a read-only range (a hostile guest handing the tender its code as a
    /// buffer to fill gets an error, not a tender killed by SIGSEGV).
    pub fn slice_mut(&mut self, gpa: u64, len: u64) -> Result<&mut [u8], GuestMemError> {
        let range = self.checked(gpa, len)?;
        let end = gpa + len;
        if len > 0 && self.read_only.iter().any(|r| gpa < r.end && r.start < end) {
            return Err(GuestMemError::ReadOnly { gpa, end });
        }
        Ok(self.mapping.range_mut(range))
    }

    /// Makes the page-aligned range `start..end` read-only, for the guest
    /// (through the host mapping KVM uses) and for [`GuestMemory::slice_mut`].
    pub fn protect(&mut self, start: u64, end: u64) -> Result<(), GuestMemError> {
        if start == end {
            return Ok(());
        }
        let range = self.checked(start, end.saturating_sub(start))?;
        self.mapping
            .protect_read_only(range.start, range.end)
            .map_err(|source| GuestMemError::Protect { start, end, source })?;
        self.read_only.push(start..end);
        Ok(())
    }

    /// Copies `bytes` to guest address `gpa`.
    pub fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), GuestMemError> {
        self.slice_mut(gpa, bytes.len() as u64)?
            .copy_from_slice(bytes);
        Ok(())
    }

    /// Copies `bytes` to guest address `gpa` even where the tender keeps
    /// the pages read-only (a debugger's breakpoints and memory writes):
    /// those pages are made writable for the copy only.
    pub fn poke(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), GuestMemError> {
        let range = self.checked(gpa, bytes.len() as u64)?;
        let mut done = 0usize;
        while done < bytes.len() {
            let at = range.start + done;
            let n = (4096 - at % 4096).min(bytes.len() - done);
            let chunk = &bytes[done..done + n];
            let page_gpa = (at - at % 4096) as u64;
            if self
                .read_only
                .iter()
                .any(|r| page_gpa < r.end && r.start < page_gpa + 4096)
            {
                self.mapping
                    .write_protected_page(at, chunk)
                    .map_err(|source| GuestMemError::Protect {
                        start: page_gpa,
                        end: page_gpa + 4096,
                        source,
                    })?;
            } else {
                self.mapping.range_mut(at..at + n).copy_from_slice(chunk);
            }
            done += n;
        }
        Ok(())
    }

    /// A copy of the ABI structure `T` (a hypercall argument, a table
    /// entry) at `gpa`.
    pub fn read<T: FromBytes>(&self, gpa: u64) -> Result<T, GuestMemError> {
        let len = size_of::<T>() as u64;
        let bytes = self.slice(gpa, len)?;
        // `slice` gave exactly `size_of::<T>()` bytes: this cannot fail.
        T::read_from_bytes(bytes).map_err(|_| GuestMemError::Overflow { gpa, len })
    }

    /// Reads `N` bytes at `gpa`.
    pub fn read_array<const N: usize>(&self, gpa: u64) -> Result<[u8; N], GuestMemError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.slice(gpa, N as u64)?);
        Ok(out)
    }
}

/// The check behind [`GuestMemory::checked`]: `gpa..gpa + len` must not
/// overflow and must end inside guest memory of `mem_size` bytes.
pub fn check_range(gpa: u64, len: u64, mem_size: u64) -> Result<Range<usize>, GuestMemError> {
    let end = gpa
        .checked_add(len)
        .ok_or(GuestMemError::Overflow { gpa, len })?;
    if end > mem_size {
        return Err(GuestMemError::OutOfBounds { gpa, end, mem_size });
    }
    // Both fit in usize: they are at most the mapping's length.
    let start = usize::try_from(gpa).map_err(|_| GuestMemError::Overflow { gpa, len })?;
    let end_us = usize::try_from(end).map_err(|_| GuestMemError::Overflow { gpa, len })?;
    Ok(start..end_us)
}

/// Guest memory shared with a running vCPU ([`GuestMemory::shared`]): the
/// same checked ranges, and accesses that are atomic, volatile or the
/// kernel's (`crate::sys::shared`), since the guest may change any byte at
/// any time. Each read of a guest field is a copy taken once.
#[derive(Debug, Clone)]
pub struct SharedGuest {
    region: crate::sys::shared::SharedRegion,
    read_only: Vec<Range<u64>>,
}

impl SharedGuest {
    /// Size of guest memory.
    pub fn size(&self) -> u64 {
        self.region.len() as u64
    }

    /// The checked host range of `gpa..gpa + len`.
    pub fn checked(&self, gpa: u64, len: u64) -> Result<Range<usize>, GuestMemError> {
        check_range(gpa, len, self.size())
    }

    /// As [`Self::checked`], and refused where it touches read-only pages.
    pub fn checked_mut(&self, gpa: u64, len: u64) -> Result<Range<usize>, GuestMemError> {
        let range = self.checked(gpa, len)?;
        let end = gpa + len;
        if len > 0 && self.read_only.iter().any(|r| gpa < r.end && r.start < end) {
            return Err(GuestMemError::ReadOnly { gpa, end });
        }
        Ok(range)
    }

    /// Loads the aligned `u32` at `gpa` (acquire).
    pub fn load_u32(&self, gpa: u64) -> Result<u32, GuestMemError> {
        let r = self.checked(gpa, 4)?;
        self.region
            .load_u32(r.start)
            .ok_or(GuestMemError::Overflow { gpa, len: 4 })
    }

    /// Stores `value` at the aligned `gpa` (release).
    pub fn store_u32(&self, gpa: u64, value: u32) -> Result<(), GuestMemError> {
        let r = self.checked_mut(gpa, 4)?;
        if self.region.store_u32(r.start, value) {
            Ok(())
        } else {
            Err(GuestMemError::Overflow { gpa, len: 4 })
        }
    }

    /// Copies `N` bytes at `gpa`, each read once.
    pub fn read_array<const N: usize>(&self, gpa: u64) -> Result<[u8; N], GuestMemError> {
        let r = self.checked(gpa, N as u64)?;
        let mut out = [0u8; N];
        self.region.read(r.start, &mut out);
        Ok(out)
    }

    /// Copies `bytes` to `gpa`.
    pub fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), GuestMemError> {
        let r = self.checked_mut(gpa, bytes.len() as u64)?;
        self.region.write(r.start, bytes);
        Ok(())
    }

    /// `read(2)` from `fd` into the writable guest range `gpa..gpa + len`;
    /// the range is checked first (outer error), the read's result is the
    /// inner one.
    pub fn read_fd(
        &self,
        fd: std::os::fd::RawFd,
        gpa: u64,
        len: u64,
    ) -> Result<io::Result<usize>, GuestMemError> {
        let r = self.checked_mut(gpa, len)?;
        Ok(self.region.read_fd(fd, r.start, r.len()))
    }

    /// `write(2)` of the guest range `gpa..gpa + len` to `fd`, checked as
    /// [`Self::read_fd`].
    pub fn write_fd(
        &self,
        fd: std::os::fd::RawFd,
        gpa: u64,
        len: u64,
    ) -> Result<io::Result<usize>, GuestMemError> {
        let r = self.checked(gpa, len)?;
        Ok(self.region.write_fd(fd, r.start, r.len()))
    }
}

/// Writes the OUT field `value` at `offset` of a hypercall argument's
/// bytes `arg`. The tender writes back only OUT fields, never the whole
/// structure, as Solo5's tenders do. `offset` is an `offset_of!` a field of
/// the structure whose bytes `arg` are (checked once with `slice_mut`), so
/// it is in range; a call that broke that would write nothing.
pub fn set_out<V: IntoBytes + Immutable>(arg: &mut [u8], offset: usize, value: V) {
    let bytes = value.as_bytes();
    if let Some(dst) = arg.get_mut(offset..offset + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessor_refuses_overflow_and_out_of_bounds() {
        let mut mem = GuestMemory::new(0x20_0000).unwrap();
        assert!(mem.slice(0, 0x20_0000).is_ok());
        assert!(mem.slice(0x20_0000, 0).is_ok());
        assert!(matches!(
            mem.slice(0x1f_ffff, 2),
            Err(GuestMemError::OutOfBounds { .. })
        ));
        assert!(matches!(
            mem.slice(u64::MAX, 2),
            Err(GuestMemError::Overflow { .. })
        ));
        assert!(matches!(
            mem.slice(2, u64::MAX),
            Err(GuestMemError::Overflow { .. })
        ));
        mem.write(0x1000, b"abc").unwrap();
        assert_eq!(mem.read_array::<3>(0x1000).unwrap(), *b"abc");
        assert!(mem.write(0x1f_fffe, b"abc").is_err());
        mem.protect(0x1000, 0x3000).unwrap();
        assert_eq!(mem.read_array::<3>(0x1000).unwrap(), *b"abc");
        assert!(matches!(
            mem.write(0x2fff, b"a"),
            Err(GuestMemError::ReadOnly { .. })
        ));
        assert!(mem.write(0xfff, b"a").is_ok());
        assert!(mem.write(0x3000, b"a").is_ok());
        assert!(mem.protect(0x3001, 0x4000).is_err());
        // The debugger writes through the protection, across pages, and
        // the protection stays.
        mem.poke(0x0ffe, b"wxyz").unwrap();
        assert_eq!(mem.read_array::<4>(0x0ffe).unwrap(), *b"wxyz");
        mem.poke(0x2ffe, b"1234").unwrap();
        assert_eq!(mem.read_array::<4>(0x2ffe).unwrap(), *b"1234");
        assert!(mem.write(0x2fff, b"a").is_err());
        assert!(mem.poke(0x1f_fffe, b"abc").is_err());
        assert!(mem.poke(u64::MAX, b"a").is_err());
    }
}
