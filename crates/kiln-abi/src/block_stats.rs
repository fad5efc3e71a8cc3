//! The block counters a host keeps for its supervisor (not part of Solo5,
//! and not seen by a guest): a small file, named by the environment
//! variable [`ENV`], that kiln-hvt (or, on unix, the unikernel's runtime
//! kiln-unix) maps shared and updates as it serves each block request
//! ([`Writer`]), and that `kiln daemon` reads for `kiln stats`
//! (`docs/supervisor.md`, "Statistics").
//!
//! The file is a [`Header`] followed by [`MAX_DEVICES`] [`Record`]s, all
//! little-endian `u64`s at 8-byte-aligned offsets. The host writes the
//! header and each device's name when it attaches the device (then raises
//! `count`), and each counter with one aligned 8-byte store after each
//! request. A reader takes a counter as read when two reads of the record
//! agree ([`parse`] reads once; the daemon reads twice).

use core::sync::atomic::{AtomicU64, Ordering};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The environment variable that names the file.
pub const ENV: &str = "KILN_BLOCK_STATS";

/// `magic`: `"kilnblk1"`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"kilnblk1");

/// The most devices the file holds (a manifest holds at most 63).
pub const MAX_DEVICES: usize = 64;

/// Bytes of a device name, NUL-padded (a manifest name is at most 67).
pub const NAME_LEN: usize = 72;

/// The file's start.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: u64,
    /// How many records are in use.
    pub count: u64,
}

/// One device's counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Record {
    /// The device's manifest name, NUL-padded.
    pub name: [u8; NAME_LEN],
    /// Read requests served without error.
    pub reads: u64,
    /// Write requests served without error.
    pub writes: u64,
    /// Bytes read by those requests.
    pub read_bytes: u64,
    /// Bytes written by those requests.
    pub written_bytes: u64,
    /// Requests refused (out of range, misaligned) or failed on the host.
    pub errors: u64,
}

const _: () = assert!(core::mem::size_of::<Header>() == 16);
const _: () = assert!(core::mem::size_of::<Record>() == NAME_LEN + 40);
const _: () = assert!(core::mem::size_of::<Record>().is_multiple_of(8));

/// Offset of record `i`.
pub const fn record_offset(i: usize) -> usize {
    core::mem::size_of::<Header>() + i * core::mem::size_of::<Record>()
}

/// Offset of each counter within a record.
pub mod field {
    /// `reads`.
    pub const READS: usize = core::mem::offset_of!(super::Record, reads);
    /// `writes`.
    pub const WRITES: usize = core::mem::offset_of!(super::Record, writes);
    /// `read_bytes`.
    pub const READ_BYTES: usize = core::mem::offset_of!(super::Record, read_bytes);
    /// `written_bytes`.
    pub const WRITTEN_BYTES: usize = core::mem::offset_of!(super::Record, written_bytes);
    /// `errors`.
    pub const ERRORS: usize = core::mem::offset_of!(super::Record, errors);
}

/// The file's size.
pub const FILE_LEN: usize = record_offset(MAX_DEVICES);

impl Record {
    /// The name, up to its first NUL; `None` if it is not UTF-8.
    pub fn name(&self) -> Option<&str> {
        let end = self.name.iter().position(|b| *b == 0).unwrap_or(NAME_LEN);
        core::str::from_utf8(&self.name[..end]).ok()
    }
}

/// The records in use in `bytes` (the file's contents), or `None` if the
/// file is not one (too short, another magic, a count out of range).
pub fn parse(bytes: &[u8]) -> Option<impl Iterator<Item = Record> + '_> {
    let (header, rest) = Header::read_from_prefix(bytes).ok()?;
    if header.magic != MAGIC || header.count > MAX_DEVICES as u64 {
        return None;
    }
    let count = usize::try_from(header.count).ok()?;
    if rest.len() < count * core::mem::size_of::<Record>() {
        return None;
    }
    Some(
        rest.chunks_exact(core::mem::size_of::<Record>())
            .take(count)
            .filter_map(|c| Record::read_from_bytes(c).ok()),
    )
}

/// What a block request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A read.
    Read,
    /// A write.
    Write,
}

/// The writing side, over the file's words mapped shared (the mapping is
/// kiln-block-stats's, for kiln-hvt and kiln-unix): one writer
/// per file, so each counter is a load and a store, not a locked
/// read-modify-write.
#[derive(Debug)]
pub struct Writer {
    words: &'static [AtomicU64],
    count: usize,
}

impl Writer {
    /// Starts a file in `words` (at least [`FILE_LEN`] / 8 of them): the
    /// magic, no device yet. `None` if there are too few words.
    pub fn new(words: &'static [AtomicU64]) -> Option<Writer> {
        if words.len() < FILE_LEN / 8 {
            return None;
        }
        words[0].store(MAGIC, Ordering::Relaxed);
        words[1].store(0, Ordering::Release);
        Some(Writer { words, count: 0 })
    }

    /// Adds device `name` (cut at [`NAME_LEN`] bytes); its slot, `None`
    /// past [`MAX_DEVICES`].
    pub fn add(&mut self, name: &str) -> Option<usize> {
        if self.count >= MAX_DEVICES {
            return None;
        }
        let slot = self.count;
        let base = record_offset(slot) / 8;
        let mut padded = [0u8; NAME_LEN];
        let n = name.len().min(NAME_LEN);
        padded[..n].copy_from_slice(&name.as_bytes()[..n]);
        for (i, chunk) in padded.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.words[base + i].store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
        for field in [
            field::READS,
            field::WRITES,
            field::READ_BYTES,
            field::WRITTEN_BYTES,
            field::ERRORS,
        ] {
            self.words[base + field / 8].store(0, Ordering::Relaxed);
        }
        self.count += 1;
        self.words[1].store(self.count as u64, Ordering::Release);
        Some(slot)
    }

    /// Counts a request of `len` bytes on the device in `slot` that
    /// succeeded (`ok`) or was refused or failed.
    pub fn count(&self, slot: usize, op: Op, len: u64, ok: bool) {
        if slot >= self.count {
            return;
        }
        let base = record_offset(slot);
        let add = |field: usize, n: u64| {
            let w = &self.words[(base + field) / 8];
            w.store(w.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        };
        match (ok, op) {
            (false, _) => add(field::ERRORS, 1),
            (true, Op::Read) => {
                add(field::READS, 1);
                add(field::READ_BYTES, len);
            }
            (true, Op::Write) => {
                add(field::WRITES, 1);
                add(field::WRITTEN_BYTES, len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_one_device_parses() {
        let mut file = [0u8; FILE_LEN];
        file[..8].copy_from_slice(&MAGIC.to_le_bytes());
        file[8..16].copy_from_slice(&1u64.to_le_bytes());
        let r = record_offset(0);
        file[r..r + 4].copy_from_slice(b"disk");
        file[r + field::WRITES..r + field::WRITES + 8].copy_from_slice(&3u64.to_le_bytes());
        let records: [Record; 1] = [parse(&file).unwrap().next().unwrap()];
        assert_eq!(records[0].name(), Some("disk"));
        assert_eq!(records[0].writes, 3);
        assert_eq!(parse(&file).unwrap().count(), 1);
    }

    #[test]
    fn the_writer_counts_what_the_reader_parses() {
        let words: &'static [AtomicU64] = std::boxed::Box::leak(
            (0..FILE_LEN / 8)
                .map(|_| AtomicU64::new(u64::MAX))
                .collect::<std::vec::Vec<_>>()
                .into_boxed_slice(),
        );
        let mut w = Writer::new(words).unwrap();
        let disk = w.add("disk").unwrap();
        let other = w.add("other").unwrap();
        w.count(disk, Op::Write, 4096, true);
        w.count(disk, Op::Read, 512, true);
        w.count(disk, Op::Read, 512, false);
        w.count(other, Op::Write, 512, true);
        w.count(7, Op::Write, 512, true);
        let bytes: std::vec::Vec<u8> = words
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .collect();
        let records: std::vec::Vec<Record> = parse(&bytes).unwrap().collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].name(), Some("disk"));
        // Counters start at zero, whatever the file held.
        assert_eq!(
            (records[0].reads, records[0].writes, records[0].read_bytes),
            (1, 1, 512)
        );
        assert_eq!((records[0].written_bytes, records[0].errors), (4096, 1));
        assert_eq!((records[1].name(), records[1].writes), (Some("other"), 1));
    }

    #[test]
    fn other_files_do_not_parse() {
        assert!(parse(&[0u8; 8]).is_none());
        let mut file = [0u8; FILE_LEN];
        assert!(parse(&file).is_none());
        file[..8].copy_from_slice(&MAGIC.to_le_bytes());
        file[8..16].copy_from_slice(&65u64.to_le_bytes());
        assert!(parse(&file).is_none());
        // A count the bytes do not hold.
        file[8..16].copy_from_slice(&2u64.to_le_bytes());
        assert!(parse(&file[..record_offset(1)]).is_none());
    }
}
