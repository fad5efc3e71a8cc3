//! The file-backed block device, and the per-device counters it keeps for
//! a supervisor when the environment names a file for them
//! (`KILN_BLOCK_STATS`, kept by kiln-block-stats; `kiln daemon` sets it).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use kiln_block_stats::{Counters, Op};
use kiln_devices::{BlockError, BlockInfo};

use crate::attach::AttachError;
use crate::reactor::Platform;

/// A block device backed by a regular file. Requests are synchronous
/// `pread`/`pwrite` calls: a regular file never blocks for long.
#[derive(Debug)]
pub struct FileBlock {
    file: File,
    info: BlockInfo,
    /// Its slot in the counters, if they are kept.
    slot: Option<usize>,
}

/// The process's counters (kiln-block-stats).
static COUNTERS: Mutex<Counters> = Mutex::new(Counters::new());

/// Adds `device` to the counters (opening them the first time); its slot.
fn counted(device: &str) -> Option<usize> {
    COUNTERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add("", device)
}

/// Counts a request on the device in `slot`.
fn count(slot: Option<usize>, op: Op, len: usize, ok: bool) {
    COUNTERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .count(slot, op, len as u64, ok);
}

fn block_error(e: &io::Error) -> BlockError {
    // A read past the end (the file shrank behind our back) has no errno.
    BlockError::Io(e.raw_os_error().unwrap_or(libc::EIO))
}

impl FileBlock {
    /// Attaches block device `device` to the file at `path`, opened
    /// read-write, or read-only if it may not be written. The file's size
    /// must be a whole number of `sector_size`-byte sectors, and
    /// `sector_size` a power of two of at least 512.
    pub fn open(
        _platform: &'static Platform,
        device: &str,
        path: &str,
        sector_size: u32,
    ) -> Result<FileBlock, AttachError> {
        if sector_size < 512 || !sector_size.is_power_of_two() {
            return Err(AttachError::SectorSize {
                device: device.to_owned(),
                sector_size,
            });
        }
        let file_error = |error| AttachError::File {
            device: device.to_owned(),
            path: path.to_owned(),
            error,
        };
        let (file, read_only) = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => (file, false),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES | libc::EPERM | libc::EROFS)
                ) =>
            {
                (File::open(path).map_err(file_error)?, true)
            }
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                return Err(AttachError::NotAFile {
                    device: device.to_owned(),
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(file_error(e)),
        };
        let metadata = file.metadata().map_err(file_error)?;
        if !metadata.is_file() {
            return Err(AttachError::NotAFile {
                device: device.to_owned(),
                path: path.to_owned(),
            });
        }
        let size = metadata.len();
        let sector = u64::from(sector_size);
        if size % sector != 0 {
            return Err(AttachError::FileSize {
                device: device.to_owned(),
                path: path.to_owned(),
                size,
                sector_size,
                rounded: size.div_ceil(sector).saturating_mul(sector),
            });
        }
        Ok(FileBlock {
            file,
            slot: counted(device),
            info: BlockInfo {
                sector_size,
                sectors: size / sector,
                read_only,
            },
        })
    }
}

impl kiln_devices::Block for FileBlock {
    fn info(&self) -> BlockInfo {
        self.info
    }

    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let r = self.info.check(sector, buf.len()).and_then(|offset| {
            self.file
                .read_exact_at(buf, offset)
                .map_err(|e| block_error(&e))
        });
        count(self.slot, Op::Read, buf.len(), r.is_ok());
        r
    }

    async fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        let r = self.info.check(sector, buf.len()).and_then(|offset| {
            if self.info.read_only {
                return Err(BlockError::ReadOnly);
            }
            self.file
                .write_all_at(buf, offset)
                .map_err(|e| block_error(&e))
        });
        count(self.slot, Op::Write, buf.len(), r.is_ok());
        r
    }

    async fn flush(&self) -> Result<(), BlockError> {
        if self.info.read_only {
            return Ok(());
        }
        self.file.sync_all().map_err(|e| block_error(&e))
    }
}
