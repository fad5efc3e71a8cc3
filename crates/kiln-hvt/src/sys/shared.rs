//! Guest memory seen by a thread that runs while the vCPU does (the ring's
//! I/O thread): every access is atomic, volatile or made by the kernel
//! (`read(2)`, `write(2)`), never through a Rust reference, because the
//! guest may change any byte at any time. Offsets are checked here against
//! the mapping's length; what a guest may name is checked before, by
//! [`crate::guest::SharedGuest`].
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// The guest mapping itself: unmapped when the last owner drops it.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory; every access through it is atomic,
// volatile or by the kernel, so threads may share it.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Takes ownership of the mapping `ptr..ptr + len` (from `mmap`).
    pub(super) fn new(ptr: NonNull<u8>, len: usize) -> Self {
        Self { ptr, len }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping handed to `new`; the last
        // owner is going, and every borrow of it is tied to an owner.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A shared view of guest memory (see the module's documentation).
#[derive(Debug, Clone)]
pub struct SharedRegion {
    region: std::sync::Arc<Region>,
}

impl SharedRegion {
    pub(super) fn new(region: std::sync::Arc<Region>) -> Self {
        Self { region }
    }

    /// Size of guest memory.
    pub fn len(&self) -> usize {
        self.region.len
    }

    /// Whether the region is empty (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.region.len == 0
    }

    /// The address of `offset..offset + len`, if inside the region.
    fn at(&self, offset: usize, len: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        if end > self.region.len {
            return None;
        }
        // SAFETY: `offset` is at most the region's length (checked above),
        // so the result stays inside (or one past) the mapping.
        Some(unsafe { self.region.ptr.as_ptr().add(offset) })
    }

    /// The atomic `u32` at `offset` (4-aligned and inside, or `None`).
    fn atomic(&self, offset: usize) -> Option<&AtomicU32> {
        if !offset.is_multiple_of(4) {
            return None;
        }
        let p = self.at(offset, 4)?;
        // SAFETY: `p` is 4-aligned (the mapping is page-aligned and the
        // offset a multiple of 4), inside the live mapping (checked), and
        // only ever accessed atomically by the tender; the guest's own
        // accesses are another agent's, as with any shared memory.
        Some(unsafe { AtomicU32::from_ptr(p.cast()) })
    }

    /// Loads the `u32` at `offset` with acquire ordering.
    pub fn load_u32(&self, offset: usize) -> Option<u32> {
        Some(self.atomic(offset)?.load(Ordering::Acquire))
    }

    /// Stores `value` at `offset` with release ordering; false when the
    /// offset is outside or unaligned.
    pub fn store_u32(&self, offset: usize, value: u32) -> bool {
        match self.atomic(offset) {
            Some(a) => {
                a.store(value, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Copies the bytes at `offset` into `out`, each read once.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> bool {
        let Some(p) = self.at(offset, out.len()) else {
            return false;
        };
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: `p + i` is inside the mapping (the whole range was
            // checked); a volatile read of a byte the guest may be writing.
            *b = unsafe { p.add(i).read_volatile() };
        }
        true
    }

    /// Copies `bytes` to `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) -> bool {
        let Some(p) = self.at(offset, bytes.len()) else {
            return false;
        };
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: `p + i` is inside the mapping (checked); the caller
            // keeps writes out of read-only pages.
            unsafe { p.add(i).write_volatile(*b) };
        }
        true
    }

    /// `read(2)` from `fd` into `offset..offset + len`.
    pub fn read_fd(&self, fd: RawFd, offset: usize, len: usize) -> io::Result<usize> {
        let p = self
            .at(offset, len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the kernel writes at most `len` bytes at `p`, inside the
        // live mapping (checked); the caller keeps it out of read-only
        // pages (a write there would only fail with EFAULT).
        let n = unsafe { libc::read(fd, p.cast(), len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// `write(2)` of `offset..offset + len` to `fd`.
    pub fn write_fd(&self, fd: RawFd, offset: usize, len: usize) -> io::Result<usize> {
        let p = self
            .at(offset, len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the kernel reads at most `len` bytes at `p`, inside the
        // live mapping (checked).
        let n = unsafe { libc::write(fd, p.cast(), len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}
