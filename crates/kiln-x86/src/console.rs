//! Small buffered writers for the console, the panic and exception paths,
//! which must not allocate.

use core::fmt;

/// Collects formatted text in a fixed buffer and hands it to `sink` in
/// pieces of at most `N` bytes, so that a long message costs a few
/// hypercalls rather than one per formatting fragment.
pub struct BufferedWriter<F: FnMut(&[u8]), const N: usize = 256> {
    buf: [u8; N],
    len: usize,
    sink: F,
}

impl<F: FnMut(&[u8]), const N: usize> BufferedWriter<F, N> {
    /// A writer that flushes to `sink`.
    pub fn new(sink: F) -> Self {
        BufferedWriter {
            buf: [0; N],
            len: 0,
            sink,
        }
    }

    /// Hands the buffered bytes to the sink.
    pub fn flush(&mut self) {
        if self.len > 0 {
            (self.sink)(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl<F: FnMut(&[u8]), const N: usize> fmt::Write for BufferedWriter<F, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            if self.len == N {
                self.flush();
            }
            let n = bytes.len().min(N - self.len);
            let (head, tail) = bytes.split_at(n);
            self.buf[self.len..self.len + n].copy_from_slice(head);
            self.len += n;
            bytes = tail;
        }
        Ok(())
    }
}

impl<F: FnMut(&[u8]), const N: usize> Drop for BufferedWriter<F, N> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Formats into a fixed buffer, truncating (on a character boundary) what
/// does not fit, and keeps the text NUL-terminated: the message handed to
/// the tender with an abort.
pub struct CStrBuffer<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Default for CStrBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> CStrBuffer<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        CStrBuffer {
            buf: [0; N],
            len: 0,
        }
    }

    /// The text written so far, without its terminator.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// The text as a C string (empty if `N` is 0).
    pub fn as_c_str(&self) -> &core::ffi::CStr {
        core::ffi::CStr::from_bytes_until_nul(&self.buf).unwrap_or(c"")
    }
}

impl<const N: usize> fmt::Write for CStrBuffer<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N.saturating_sub(1).saturating_sub(self.len);
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use core::fmt::Write;

    #[test]
    fn long_text_is_flushed_in_buffer_sized_pieces() {
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        {
            let mut w = BufferedWriter::<_, 8>::new(|b: &[u8]| pieces.push(b.to_vec()));
            let tail = 42;
            write!(w, "abcdefghij-{tail}").unwrap();
        }
        assert_eq!(pieces, [b"abcdefgh".to_vec(), b"ij-42".to_vec()]);
    }

    #[test]
    fn c_strings_truncate_on_character_boundaries() {
        let mut b = CStrBuffer::<8>::new();
        b.write_str("ab").unwrap();
        b.write_str("cdé€xyz").unwrap();
        // 7 bytes of room: "abcdé" is 6 bytes, "€" (3 bytes) does not fit.
        assert_eq!(b.as_str(), "abcdé");
        assert_eq!(b.as_c_str().to_bytes(), "abcdé".as_bytes());
        let empty = CStrBuffer::<0>::new();
        assert_eq!(empty.as_c_str().to_bytes(), b"");
    }

    #[test]
    fn nothing_written_means_no_flush() {
        let mut calls = 0;
        drop(BufferedWriter::<_, 8>::new(|_: &[u8]| calls += 1));
        assert_eq!(calls, 0);
    }
}
