//! The ustar header block (POSIX.1-2001 `pax` format, IEEE Std 1003.1
//! "pax - Interchange Formats"), with the GNU long-name and base-256
//! extensions: field layout, numeric fields and the header checksum.
//!
//! Read the POSIX `pax` utility's "ustar Interchange Format" and "pax
//! Interchange Format" sections first; GNU tar's manual, "Basic Tar Format",
//! describes the `L` entries and base-256 numbers.
// The writing half serves the `std`-only image maker.
#![cfg_attr(not(any(test, feature = "std")), allow(dead_code))]

/// Bytes in a tar block (header or data).
pub const BLOCK: usize = 512;

/// Field offsets and lengths of the header block.
pub const NAME: (usize, usize) = (0, 100);
#[cfg(test)]
/// File mode, octal.
pub const MODE: (usize, usize) = (100, 8);
/// Size of the data that follows, octal or base-256.
pub const SIZE: (usize, usize) = (124, 12);
/// Header checksum, octal.
pub const CHKSUM: (usize, usize) = (148, 8);
/// Entry type.
pub const TYPEFLAG: usize = 156;
/// `ustar\0` (POSIX) or `ustar ` (GNU).
pub const MAGIC: (usize, usize) = (257, 6);
/// `00` (POSIX) or ` \0` (GNU).
pub const VERSION: (usize, usize) = (263, 2);
/// Leading path components of a long name (POSIX).
pub const PREFIX: (usize, usize) = (345, 155);

/// Entry types that matter to a store.
pub mod kind {
    /// A regular file.
    pub const FILE: u8 = b'0';
    /// A regular file, pre-POSIX spelling.
    pub const FILE_OLD: u8 = 0;
    /// A contiguous file (treated as regular).
    pub const CONTIGUOUS: u8 = b'7';
    /// A directory.
    pub const DIRECTORY: u8 = b'5';
    /// A pax extended header for the next entry.
    pub const PAX: u8 = b'x';
    /// A pax global extended header.
    pub const PAX_GLOBAL: u8 = b'g';
    /// A GNU long name for the next entry.
    pub const GNU_LONG_NAME: u8 = b'L';
    /// A GNU long link name for the next entry.
    pub const GNU_LONG_LINK: u8 = b'K';
    /// Hard link, symbolic link, character device, block device, FIFO.
    pub const SKIPPED: [u8; 5] = [b'1', b'2', b'3', b'4', b'6'];
}

/// The bytes of `field` in `header`.
pub fn field(header: &[u8; BLOCK], (at, len): (usize, usize)) -> &[u8] {
    header.get(at..at + len).unwrap_or_default()
}

/// A NUL-terminated string field: its bytes before the first NUL.
pub fn text(header: &[u8; BLOCK], f: (usize, usize)) -> &[u8] {
    let bytes = field(header, f);
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes.get(..end).unwrap_or_default()
}

/// Parses a numeric field: octal digits with optional leading spaces,
/// ended by NUL, space or the end of the field; or, if the first byte has
/// its high bit set, a GNU base-256 big-endian number (negative numbers are
/// refused). An empty field is zero.
pub fn number(bytes: &[u8]) -> Option<u64> {
    let first = *bytes.first()?;
    if first & 0x80 != 0 {
        if first == 0xff {
            return None; // negative
        }
        let mut value: u64 = u64::from(first & 0x7f);
        for &b in bytes.get(1..)? {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let digits = bytes.iter().skip_while(|&&b| b == b' ');
    let mut value: u64 = 0;
    let mut seen_end = false;
    for &b in digits {
        match b {
            b'0'..=b'7' if !seen_end => {
                value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
            }
            0 | b' ' => seen_end = true,
            _ => return None,
        }
    }
    Some(value)
}

/// The two checksums of a header that tar implementations have written:
/// the sum of its bytes as unsigned and as signed values, with the checksum
/// field counted as eight spaces.
pub fn checksums(header: &[u8; BLOCK]) -> (u64, i64) {
    let (at, len) = CHKSUM;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in header.iter().enumerate() {
        let b = if (at..at + len).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    (unsigned, signed)
}

/// Whether the header's checksum field matches its contents.
pub fn checksum_ok(header: &[u8; BLOCK]) -> bool {
    let Some(stored) = number(field(header, CHKSUM)) else {
        return false;
    };
    let (unsigned, signed) = checksums(header);
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// Whether the header carries the POSIX or the GNU ustar magic.
pub fn magic_ok(header: &[u8; BLOCK]) -> bool {
    let magic = field(header, MAGIC);
    let version = field(header, VERSION);
    (magic == b"ustar\0" && version == b"00") || (magic == b"ustar " && version == b" \0")
}

// Writing headers is the tar crate's (image.rs); the writers below and
// the fields only they use build test fixtures.
#[cfg(test)]
/// Writes `value` as a zero-padded octal number filling `f` but its last
/// byte, which is NUL. Returns `false` if it does not fit.
pub fn put_octal(header: &mut [u8; BLOCK], (at, len): (usize, usize), value: u64) -> bool {
    let Some(out) = header.get_mut(at..at + len) else {
        return false;
    };
    let digits = len - 1;
    if digits < 22 && value >= 1u64 << (3 * digits) {
        return false;
    }
    let mut v = value;
    for i in (0..digits).rev() {
        if let Some(slot) = out.get_mut(i) {
            *slot = b'0' + (v & 7) as u8;
        }
        v >>= 3;
    }
    if let Some(last) = out.last_mut() {
        *last = 0;
    }
    true
}

#[cfg(test)]
/// Fills in the checksum field of a header whose other fields are final.
pub fn seal(header: &mut [u8; BLOCK]) {
    let (sum, _) = checksums(header);
    // Six octal digits, NUL, space: the traditional layout.
    let (at, _) = CHKSUM;
    let mut v = sum;
    for i in (0..6).rev() {
        header[at + i] = b'0' + (v & 7) as u8;
        v >>= 3;
    }
    header[at + 6] = 0;
    header[at + 7] = b' ';
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_octal_and_base256() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"   644 \0"), Some(0o644));
        assert_eq!(number(b"\0\0\0\0"), Some(0));
        assert_eq!(number(b"12345670123\0"), Some(0o12345670123));
        assert_eq!(number(b"0009\0"), None);
        assert_eq!(number(b"12 3\0"), None);
        assert_eq!(
            number(&[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1]),
            Some((2 << 32) + 1)
        );
        assert_eq!(number(&[0xff; 12]), None);
        assert_eq!(
            number(&[
                0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ]),
            None
        );
    }

    #[test]
    fn octal_round_trips_and_refuses_overflow() {
        let mut h = [0u8; BLOCK];
        assert!(put_octal(&mut h, SIZE, 0o77777777777));
        assert_eq!(field(&h, SIZE), b"77777777777\0");
        assert_eq!(number(field(&h, SIZE)), Some(0o77777777777));
        assert!(!put_octal(&mut h, SIZE, 1 << 33));
    }

    #[test]
    fn sealed_header_checks() {
        let mut h = [0u8; BLOCK];
        h[..5].copy_from_slice(b"hello");
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        seal(&mut h);
        assert!(checksum_ok(&h));
        assert!(magic_ok(&h));
        h[0] = b'j';
        assert!(!checksum_ok(&h));
    }
}
