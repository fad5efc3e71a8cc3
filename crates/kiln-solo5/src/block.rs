//! The block device: reads and writes on the device's manifest handle
//! (BLOCK_READ and BLOCK_WRITE on hvt, `pread64`/`pwrite64` on spt), each
//! request checked against the geometry first.

use core::future::{Future, ready};

use kiln_devices::{BlockError, BlockInfo};

use crate::env::{Device, DeviceError};
use crate::outcome::Failure;
use crate::reactor::Handle;
use crate::sys;

/// A block device the tender attached (a file on the host).
pub struct Block {
    handle: Handle,
    info: BlockInfo,
}

/// `EIO`, reported when the tender refuses a request kiln already checked.
const EIO: i32 = 5;

fn error(failure: Failure) -> BlockError {
    match failure {
        Failure::Again => BlockError::Io(EIO),
        Failure::Error(code) => BlockError::Io(code),
    }
}

impl Block {
    pub(crate) fn new(handle: Handle, device: &Device) -> Result<Block, DeviceError> {
        let sector_size = device.info.block_size();
        if sector_size < 512 || !sector_size.is_power_of_two() {
            return Err(DeviceError::BadSectorSize {
                name: device.name,
                sector_size,
            });
        }
        Ok(Block {
            handle,
            info: BlockInfo {
                sector_size: u32::from(sector_size),
                sectors: device.info.block_capacity() / u64::from(sector_size),
                read_only: false,
            },
        })
    }

    fn read_now(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let offset = self.info.check(sector, buf.len())?;
        sys::host::block_read(self.handle.raw(), offset, buf).map_err(error)
    }

    fn write_now(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        let offset = self.info.check(sector, buf.len())?;
        sys::host::block_write(self.handle.raw(), offset, buf).map_err(error)
    }
}

impl kiln_devices::Block for Block {
    fn info(&self) -> BlockInfo {
        self.info
    }

    fn read(&self, sector: u64, buf: &mut [u8]) -> impl Future<Output = Result<(), BlockError>> {
        // The hypercall completes synchronously.
        ready(self.read_now(sector, buf))
    }

    fn write(&self, sector: u64, buf: &[u8]) -> impl Future<Output = Result<(), BlockError>> {
        ready(self.write_now(sector, buf))
    }

    /// On hvt a no-op (the ABI has no flush; completed writes are in the
    /// host's page cache); on spt `fdatasync` on the device.
    fn flush(&self) -> impl Future<Output = Result<(), BlockError>> {
        ready(sys::host::block_flush(self.handle.raw()).map_err(error))
    }
}
