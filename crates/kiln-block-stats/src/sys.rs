//! The crate's one `unsafe` operation: mapping the counters file shared.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;

/// Maps the first `len` bytes of `file` shared and read-write, for the
/// life of the process, as 64-bit atomics (`len` a multiple of 8; the
/// file must be at least that long).
pub(crate) fn map_shared_words(
    file: &std::fs::File,
    len: usize,
) -> io::Result<&'static [AtomicU64]> {
    if len == 0 || !len.is_multiple_of(8) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: a new shared mapping of an open file, at an address the
    // kernel picks; no existing memory is touched.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is `len` bytes, page-aligned (so aligned for
    // `AtomicU64`), readable and writable, and never unmapped, so it
    // lives as long as the process; other processes see it only through
    // the file, and every access from this one is atomic.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), len / 8) })
}
