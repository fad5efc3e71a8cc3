//! Key-value stores on block devices for kiln unikernels.
//!
//! Two stores, each generic over any [`kiln_devices::Block`] (a file on
//! unix, the Solo5 block device on hvt and spt), `#![no_std]` + `alloc`:
//!
//! - [`TarStore`] implements [`KvRo`](kiln_devices::KvRo) over a **tar
//!   archive** written to the device: the `disk` implementation of a
//!   `kv_ro` device. Tar because every tool can make and inspect it
//!   (`tar -tvf disk.img`; `tar -C htdocs --format=pax -cf disk.img .`
//!   then `truncate -s %4096 disk.img` to round it up to whole sectors);
//!   `image::make_image` (feature `std`) makes a deterministic one.
//! - [`LogStore`] implements [`KvRw`](kiln_devices::KvRw): a crash-safe
//!   log of checksummed records, compacted between two regions.
//!
//! Modules, from the bottom: `ustar` (the tar header format), `lock` (an
//! async mutex serializing a store's device requests), [`tar`] (the
//! read-only store), [`log`] (the read-write store), `image` (host side,
//! `std` only). Both stores parse device contents as untrusted input;
//! `fuzz/` holds a fuzz target for each (`cargo +nightly fuzz run
//! tar_open fuzz/corpus/tar_open fuzz/seeds/tar_open`, likewise
//! `log_open`).
//!
//! # What generated code calls
//!
//! Both constructors are `async` (they read the device) and take the block
//! device by value (pass `&dev` to share it: `&B` is a `Block` too) and the
//! device's name for messages. Their errors are one line plus a `hint:`,
//! for `fail(1, e)`:
//!
//! ```ignore
//! // kv_ro device `htdocs`, impl = "disk", block = "disk":
//! let dev_htdocs = ::kiln_rt::block_on(platform, ::kiln_store::TarStore::open("htdocs", dev_disk))
//!     .unwrap_or_else(|e| fail(1, e));
//! // kv_rw device `notes`, block = "data":
//! let dev_notes = ::kiln_rt::block_on(platform, ::kiln_store::LogStore::open("notes", dev_data))
//!     .unwrap_or_else(|e| fail(1, e));
//! ```
//!
//! The host side makes the `disk` image from the `source` directory with
//! `image::write_image` (or the user runs `tar`); a `kv_rw` device needs
//! a zero-filled file (`truncate -s 16M data.img`), which
//! [`LogStore::open`] formats on first use.
//!
//! # `TarStore`
//!
//! Reads POSIX ustar and pax archives and GNU tar's (`L` long names,
//! base-256 sizes). Opening scans the headers once, checking each checksum,
//! magic and numeric field, and refuses the whole archive on the first bad
//! header, a truncated archive (the device must hold its end-of-archive
//! block), an absolute name or a `..` segment, a non-UTF-8 name, or a path
//! that is both a file and a directory. Regular files become values,
//! directories dictionaries; links, devices and FIFOs are skipped. The
//! index (path → offset, size) stays in memory; reads touch only the
//! sectors holding the requested bytes. A value's SHA-256 digest is
//! computed on first request and cached, so that opening costs one read
//! per entry, not one read of the whole archive. Tar checksums cover the
//! headers only: damaged file data is not detected (an image that must be
//! verified can be compared with a digest list kept elsewhere).
//!
//! # `LogStore`: format, commit rule, recovery, compaction
//!
//! The device (`n` sectors of `s` bytes, `s` = 512 or 4096 or any power of
//! two ≥ 512) is split into two **regions** of `r = n / 2` sectors. Sectors
//! 0 and 1 of a region hold two copies of its **header**; the rest holds a
//! **log** of records. Integers are little-endian.
//!
//! - Region header: magic `KLHD`, format version (1), generation (u64),
//!   state (1 building, 2 committed), sector size, `r`, the sequence
//!   number of the region's first record, and a CRC-32C of its first 512
//!   bytes (so a store attached with another sector size is recognized
//!   and refused). A region's header is its newest valid copy; the
//!   **active** region is the committed one with the higher generation.
//!   Two copies, written one after the other, so that neither a torn
//!   write nor one damaged sector can make the older region look active;
//!   opening rewrites a damaged or stale copy of the active header.
//! - Every record sector starts with a 32-byte **frame**: magic `KLOG`,
//!   the sector's index within its record, the region's generation, the
//!   record's sequence number, and a CRC-32C of the whole sector. The
//!   first sector's payload starts with the record header (operation:
//!   1 set, 2 remove a key and everything under it, 3 value lost; key
//!   length; value length), followed by the key (at most
//!   [`MAX_KEY_LEN`] bytes, so always in the first sector) and the value,
//!   which continues in the payload of the following sectors. Records
//!   start on a sector boundary and never share a sector, so writing one
//!   never rewrites a sector holding acknowledged data. Sequence numbers
//!   of a region's records are consecutive.
//! - **Commit rule**: `set` and `remove` write the record's sectors after
//!   the log's tail, then `flush`; they return once the flush has. A
//!   record exists once all its sectors carry valid frames.
//! - **Recovery** (at open): replay the active region's log from its
//!   first sequence number while records are whole. A record with a bad
//!   sector is *torn* if no later sector of the region carries a frame of
//!   this generation with a higher sequence number: it was being written
//!   at a crash, was never acknowledged, and is dropped (and overwritten
//!   by the next record). If later records do exist, the damage is not a
//!   crash's: a record whose first sector is intact becomes a *lost* key
//!   (reads fail with [`KvError::Corrupt`](kiln_devices::KvError::Corrupt)
//!   until it is set or removed); one whose first sector is damaged
//!   cannot be attributed to a key, and opening fails with
//!   [`LogError::Corrupt`] rather than serve stale data.
//! - **Compaction**, when a record does not fit after the tail: write the
//!   other region's headers as *building* with a new generation (higher
//!   than any header seen, so leftovers of an interrupted compaction are
//!   never mistaken for records), flush; copy every live record into it
//!   under the new generation, with the pending change applied (a `set`'s
//!   new value replaces the old one; a `remove` drops its keys); flush;
//!   rewrite the first header copy as *committed*, flush, then the second,
//!   flush. Until the first copy's one-sector write reaches the device the
//!   old region stays active and complete, so a crash at any point loses
//!   nothing acknowledged. The store is
//!   [`Full`](kiln_devices::KvError::Full) when the live records with the
//!   change applied do not fit in a region.
//! - Reads check the frame of every sector they read, so corruption is
//!   reported as `Corrupt`, never returned as data.
//! - A `set` or `remove` that fails with a device error, or whose future
//!   is dropped midway, may or may not have reached the device; the store
//!   then reloads its state from the device before the next operation, so
//!   that what it serves is what a restart would find.
//!
//! Checksums are CRC-32C: they guard against torn writes and media errors,
//! not against someone who can write the device (who could rewrite any
//! checksum); CRC-32C detects every burst error up to 32 bits, costs a
//! fraction of SHA-256, and `crc` is a small, well-kept `no_std` crate.
//!
//! Durability is what the platform's `flush` gives: `fsync` on unix and
//! spt; on hvt the Solo5 ABI has no flush, so an acknowledged write
//! survives a kill of the unikernel or its tender but not a host crash.
//!
//! Memory: the index holds each key and its record's location and cached
//! digest (about 100 bytes plus the key); values are streamed in 64 KiB
//! chunks.
//! Costs: a write takes a whole record of sectors and one flush; opening
//! reads the active region once; a compaction copies the live records and
//! takes three flushes.
//!
//! Limits: keys of at most [`MAX_KEY_LEN`] bytes; a region holds
//! `r - 2` record sectors, so at most half the device is usable, and a
//! `set` is refused as `Full` when the live data with the new value would
//! not fit. With live data close to a region's size every `set` compacts.
//!
//! Existing crates considered: `sequential-storage` and `ekv` are built
//! for NOR flash (erase-before-write pages, erase values, word-aligned
//! writes) and fix their geometry at compile time (`ekv`'s page size and
//! count are Cargo features or build-time variables), while kiln's block
//! devices overwrite whole sectors in place and learn their size at run
//! time; adapting them would emulate erases and waste half of each write.
#![no_std]
#![deny(unsafe_code)]
#![allow(async_fn_in_trait)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

#[cfg(feature = "std")]
pub mod image;
mod lock;
pub mod log;
#[cfg(test)]
mod mem;
pub mod tar;
mod ustar;

pub use log::{LogError, LogStore, MAX_KEY_LEN, Usage};
pub use tar::{TarError, TarStore};

#[cfg(test)]
mod tests {
    use std::string::String;

    /// SHA-256 of `data` in lower-case hex.
    pub fn sha256_hex(data: &[u8]) -> String {
        use sha2::Digest as _;
        sha2::Sha256::digest(data)
            .iter()
            .map(|b| std::format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn sha256_hex_matches_fips_180_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
