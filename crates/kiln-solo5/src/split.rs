//! How the spt block device cuts a request into the pieces the tender's
//! seccomp filter allows: lengths of the sector size times a power of two,
//! at most [`SPT_MAX_REQUEST`] (or one sector, if sectors are larger),
//! largest first. The filter bounds each allowed length's offset by
//! `capacity - length`, which is how it keeps every write inside the
//! device (a BPF filter cannot add two arguments).

/// Largest single `pread64`/`pwrite64` kiln-spt's filter allows, in bytes.
pub const SPT_MAX_REQUEST: usize = kiln_abi::spt::SPT_BLOCK_MAX_REQUEST as usize;

/// The pieces of a `len`-byte request on `sector`-byte sectors, as
/// `(start, length)` within the request. `len` must be a multiple of
/// `sector` (the device checks it first); a zero `sector` yields nothing.
pub fn pieces(len: usize, sector: usize) -> impl Iterator<Item = (usize, usize)> {
    let max = SPT_MAX_REQUEST.max(sector);
    let mut start = 0;
    core::iter::from_fn(move || {
        let left = len.checked_sub(start)?;
        if left < sector || sector == 0 {
            return None;
        }
        let sectors = left.min(max) / sector;
        // The largest power of two not above `sectors` (which is >= 1).
        let piece = sector << (usize::BITS - 1 - sectors.leading_zeros());
        let at = start;
        start += piece;
        Some((at, piece))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn requests_split_into_power_of_two_pieces_largest_first() {
        let p: Vec<_> = pieces(7 * 512, 512).collect();
        assert_eq!(p, [(0, 2048), (2048, 1024), (3072, 512)]);
        let p: Vec<_> = pieces(512, 512).collect();
        assert_eq!(p, [(0, 512)]);
        let p: Vec<_> = pieces(200 * 1024, 512).collect();
        assert_eq!(
            p,
            [(0, 65536), (65536, 65536), (131072, 65536), (196608, 8192)]
        );
        let p: Vec<_> = pieces(3 * 65536, 65536).collect();
        assert_eq!(p, [(0, 65536), (65536, 65536), (131072, 65536)]);
        assert_eq!(pieces(0, 512).count(), 0);
        assert_eq!(pieces(512, 0).count(), 0);
    }

    #[test]
    fn pieces_cover_the_request_exactly() {
        for sectors in 1..300usize {
            let len = sectors * 512;
            let p: Vec<_> = pieces(len, 512).collect();
            let mut next = 0;
            for (at, n) in p {
                assert_eq!(at, next);
                assert!(n.is_power_of_two() && (512..=SPT_MAX_REQUEST).contains(&n));
                next += n;
            }
            assert_eq!(next, len);
        }
    }
}
