//! Block devices: fixed-size sectors, read and written whole.

use core::future::Future;

/// The geometry of a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Bytes per sector: a power of two, at least 512.
    pub sector_size: u32,
    /// Number of sectors.
    pub sectors: u64,
    /// Whether writes are refused.
    pub read_only: bool,
}

impl BlockInfo {
    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.sectors.saturating_mul(u64::from(self.sector_size))
    }

    /// Checks a request for `len` bytes starting at `sector` and returns its
    /// byte offset on the device. Every implementation calls this before it
    /// touches the device; tenders check again on their side.
    pub fn check(&self, sector: u64, len: usize) -> Result<u64, BlockError> {
        let size = u64::from(self.sector_size);
        let len = u64::try_from(len).map_err(|_| BlockError::Misaligned { len: usize::MAX })?;
        if len == 0 || len % size != 0 {
            return Err(BlockError::Misaligned { len: len as usize });
        }
        let count = len / size;
        match sector.checked_add(count) {
            Some(end) if end <= self.sectors => Ok(sector * size),
            _ => Err(BlockError::OutOfRange {
                sector,
                count,
                sectors: self.sectors,
            }),
        }
    }
}

/// Why a block request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The request reaches past the end of the device.
    #[error("sectors {sector}..+{count} are outside the device's {sectors} sectors")]
    OutOfRange {
        /// First sector of the request.
        sector: u64,
        /// Number of sectors requested.
        count: u64,
        /// Number of sectors on the device.
        sectors: u64,
    },
    /// The buffer is empty or not a whole number of sectors.
    #[error("request of {len} bytes is not a whole number of sectors")]
    Misaligned {
        /// Length of the buffer.
        len: usize,
    },
    /// The device is read-only.
    #[error("block device is read-only")]
    ReadOnly,
    /// The host reported an I/O error with this OS error code.
    #[error("block I/O error (os error {0})")]
    Io(i32),
}

/// A block device: a file on unix, the tender's block device on hvt and spt.
pub trait Block {
    /// The device's geometry.
    fn info(&self) -> BlockInfo;

    /// Reads `buf.len()` bytes (whole sectors) starting at `sector`.
    fn read(&self, sector: u64, buf: &mut [u8]) -> impl Future<Output = Result<(), BlockError>>;

    /// Writes `buf` (whole sectors) starting at `sector`. The data may sit in
    /// a host cache until [`flush`](Self::flush).
    fn write(&self, sector: u64, buf: &[u8]) -> impl Future<Output = Result<(), BlockError>>;

    /// Makes every completed write durable on the host (fsync).
    fn flush(&self) -> impl Future<Output = Result<(), BlockError>>;
}

impl<B: Block + ?Sized> Block for &B {
    fn info(&self) -> BlockInfo {
        (**self).info()
    }
    fn read(&self, sector: u64, buf: &mut [u8]) -> impl Future<Output = Result<(), BlockError>> {
        (**self).read(sector, buf)
    }
    fn write(&self, sector: u64, buf: &[u8]) -> impl Future<Output = Result<(), BlockError>> {
        (**self).write(sector, buf)
    }
    fn flush(&self) -> impl Future<Output = Result<(), BlockError>> {
        (**self).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: BlockInfo = BlockInfo {
        sector_size: 512,
        sectors: 8,
        read_only: false,
    };

    #[test]
    fn check_accepts_whole_sectors_inside_the_device() {
        assert_eq!(INFO.check(0, 512), Ok(0));
        assert_eq!(INFO.check(7, 512), Ok(7 * 512));
        assert_eq!(INFO.check(0, 8 * 512), Ok(0));
        assert_eq!(INFO.capacity(), 4096);
    }

    #[test]
    fn check_rejects_partial_empty_and_out_of_range() {
        assert_eq!(INFO.check(0, 0), Err(BlockError::Misaligned { len: 0 }));
        assert_eq!(INFO.check(0, 100), Err(BlockError::Misaligned { len: 100 }));
        assert!(matches!(
            INFO.check(8, 512),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            INFO.check(7, 1024),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            INFO.check(u64::MAX, 512),
            Err(BlockError::OutOfRange { .. })
        ));
    }
}
