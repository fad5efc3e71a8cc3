//! The on-disk format of a [`LogStore`](super::LogStore): record frames,
//! region headers and their checksums (the crate documentation describes
//! the layout).
//!
//! Every reader and writer here takes a whole sector: at least 512 bytes
//! (a [`LogStore`](super::LogStore) refuses devices with smaller sectors),
//! more than any field's end. The byte helpers are total anyway, by
//! decision: a read past the end is 0 and a write past it is dropped, and
//! the readers refuse a short sector before they read it, so a broken
//! invariant shows as a sector that does not parse, never as a panic
//! (tested below).

/// Bytes of the frame at the start of every record sector.
pub(super) const FRAME: usize = 32;
/// Bytes of the record header at the start of a record's payload.
pub(super) const RECORD_HEADER: usize = 16;
pub(super) const RECORD_MAGIC: [u8; 4] = *b"KLOG";
pub(super) const REGION_MAGIC: [u8; 4] = *b"KLHD";
pub(super) const VERSION: u32 = 1;
pub(super) const BUILDING: u32 = 1;
pub(super) const COMMITTED: u32 = 2;
/// Bytes per device request when streaming many sectors.
pub(super) const CHUNK: usize = 64 * 1024;

// Slice-by-16 tables (16 KiB): checksumming every sector read is the main
// cost of a `get` from the page cache.
pub(super) const CRC32C: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// Record operations.
pub(super) const OP_SET: u8 = 1;
pub(super) const OP_REMOVE: u8 = 2;
pub(super) const OP_LOST: u8 = 3;

/// A record sector's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    pub(super) index: u32,
    pub(super) generation: u64,
    pub(super) seq: u64,
}

pub(super) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

pub(super) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

pub(super) fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(s) = b.get_mut(at..at + bytes.len()) {
        s.copy_from_slice(bytes);
    }
}

/// CRC-32C of a sector but its checksum field `at..at + 4`.
pub(super) fn sector_crc(sector: &[u8], at: usize) -> u32 {
    let mut d = CRC32C.digest();
    d.update(sector.get(..at).unwrap_or_default());
    d.update(sector.get(at + 4..).unwrap_or_default());
    d.finalize()
}

pub(super) const FRAME_CRC_AT: usize = 24;

pub(super) fn put_frame(sector: &mut [u8], f: Frame) {
    put(sector, 0, &RECORD_MAGIC);
    put(sector, 4, &f.index.to_le_bytes());
    put(sector, 8, &f.generation.to_le_bytes());
    put(sector, 16, &f.seq.to_le_bytes());
    put(sector, 24, &[0; 8]);
    let crc = sector_crc(sector, FRAME_CRC_AT);
    put(sector, FRAME_CRC_AT, &crc.to_le_bytes());
}

pub(super) fn frame(sector: &[u8]) -> Option<Frame> {
    if sector.len() < FRAME || sector.get(..4) != Some(&RECORD_MAGIC[..]) {
        return None;
    }
    if le_u32(sector, FRAME_CRC_AT) != sector_crc(sector, FRAME_CRC_AT) {
        return None;
    }
    Some(Frame {
        index: le_u32(sector, 4),
        generation: le_u64(sector, 8),
        seq: le_u64(sector, 16),
    })
}

/// A region header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RegionHeader {
    pub(super) version: u32,
    pub(super) generation: u64,
    pub(super) state: u32,
    pub(super) sector_size: u32,
    pub(super) region_sectors: u64,
    pub(super) first_seq: u64,
}

pub(super) const HEADER_CRC_AT: usize = 40;
/// Copies of the header at the start of each region.
pub(super) const HEADERS: u64 = 2;
/// Bytes of a region header covered by its checksum: the smallest sector,
/// so that a store attached with another sector size is recognized.
pub(super) const HEADER_LEN: usize = 512;

pub(super) fn put_header(sector: &mut [u8], h: RegionHeader) {
    sector.fill(0);
    put(sector, 0, &REGION_MAGIC);
    put(sector, 4, &h.version.to_le_bytes());
    put(sector, 8, &h.generation.to_le_bytes());
    put(sector, 16, &h.state.to_le_bytes());
    put(sector, 20, &h.sector_size.to_le_bytes());
    put(sector, 24, &h.region_sectors.to_le_bytes());
    put(sector, 32, &h.first_seq.to_le_bytes());
    let crc = sector_crc(sector.get(..HEADER_LEN).unwrap_or_default(), HEADER_CRC_AT);
    put(sector, HEADER_CRC_AT, &crc.to_le_bytes());
}

pub(super) fn header(sector: &[u8]) -> Option<RegionHeader> {
    if sector.len() < HEADER_LEN || sector.get(..4) != Some(&REGION_MAGIC[..]) {
        return None;
    }
    let crc = sector_crc(sector.get(..HEADER_LEN).unwrap_or_default(), HEADER_CRC_AT);
    if le_u32(sector, HEADER_CRC_AT) != crc {
        return None;
    }
    Some(RegionHeader {
        version: le_u32(sector, 4),
        generation: le_u64(sector, 8),
        state: le_u32(sector, 16),
        sector_size: le_u32(sector, 20),
        region_sectors: le_u64(sector, 24),
        first_seq: le_u64(sector, 32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_headers_round_trip() {
        let mut sector = [0u8; 512];
        let f = Frame {
            index: 3,
            generation: 7,
            seq: 11,
        };
        put_frame(&mut sector, f);
        assert_eq!(frame(&sector), Some(f));
        let h = RegionHeader {
            version: VERSION,
            generation: 2,
            state: COMMITTED,
            sector_size: 4096,
            region_sectors: 99,
            first_seq: 5,
        };
        put_header(&mut sector, h);
        assert_eq!(header(&sector), Some(h));
        sector[33] ^= 1;
        assert_eq!(header(&sector), None, "a flipped bit fails the checksum");
    }

    /// The decision for a sector shorter than the format assumes: writing
    /// drops what does not fit, reading refuses it; neither panics.
    #[test]
    fn short_sectors_do_not_parse() {
        for len in [0, 4, FRAME - 1] {
            let mut short = alloc::vec![0u8; len];
            put_frame(
                &mut short,
                Frame {
                    index: 1,
                    generation: 1,
                    seq: 1,
                },
            );
            assert_eq!(frame(&short), None);
        }
        let mut sector = [0u8; 512];
        put_header(
            &mut sector,
            RegionHeader {
                version: VERSION,
                generation: 1,
                state: COMMITTED,
                sector_size: 512,
                region_sectors: 9,
                first_seq: 1,
            },
        );
        for len in [0, 4, FRAME, HEADER_LEN - 1] {
            assert_eq!(header(&sector[..len]), None);
        }
        assert!(header(&sector).is_some());
    }
}
