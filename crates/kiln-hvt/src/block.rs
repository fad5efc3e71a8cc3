//! The block module: attaches a file (`--block:NAME=PATH`, sector size from
//! `--block-sector-size:NAME=N`, default 512) to each `BLOCK_BASIC` manifest
//! entry, and serves the block read and write hypercalls.

use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use kiln_abi::hvt::{HcBlockRead, HcBlockWrite, Hypercall};
use kiln_abi::mft::MftDeviceInfo;
use kiln_abi::status::Solo5Result;
use kiln_tender::block::BlockFlags;

use crate::guest::{GuestMemory, set_out};
use crate::hypercall::HypercallError;
use crate::module::{FdSyscall, Module, ModuleError};

pub use kiln_tender::block::DEFAULT_SECTOR_SIZE;

/// The block module.
#[derive(Debug, Default)]
pub struct Block {
    flags: BlockFlags,
    /// Attached devices in the order of their flags: (order, handle, file,
    /// capacity, sector size).
    attached: Vec<(usize, u64, File, u64, u64)>,
}

impl Block {
    /// The device with `handle`: its file, capacity and sector size.
    fn device(&self, handle: u64) -> Option<(&File, u64, u64)> {
        self.attached
            .iter()
            .find(|(_, h, _, _, _)| *h == handle)
            .map(|(_, _, f, cap, sector)| (f, *cap, *sector))
    }

    /// Whether `offset`/`len` is a sector-aligned range inside the device.
    fn range_ok(offset: u64, len: u64, capacity: u64, sector: u64) -> bool {
        offset.is_multiple_of(sector)
            && len.is_multiple_of(sector)
            && offset.checked_add(len).is_some_and(|end| end <= capacity)
    }

    fn write(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        const CALL: &str = "block write";
        let size = size_of::<HcBlockWrite>() as u64;
        let HcBlockWrite {
            handle,
            offset,
            data,
            len,
            ..
        } = mem
            .read(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        let buf = mem
            .slice(data, len)
            .map_err(|source| HypercallError::memory(CALL, "data", source))?;
        let ret = match self.device(handle) {
            None => Solo5Result::Einval,
            Some((_, cap, sector)) if !Self::range_ok(offset, len, cap, sector) => {
                Solo5Result::Einval
            }
            Some((file, _, _)) => match file.write_all_at(buf, offset) {
                Ok(()) => Solo5Result::Ok,
                Err(_) => Solo5Result::Eunspec,
            },
        };
        let out = mem
            .slice_mut(gpa, size)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        set_out(out, offset_of!(HcBlockWrite, ret), ret as i32);
        Ok(())
    }

    fn read(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        const CALL: &str = "block read";
        let size = size_of::<HcBlockRead>() as u64;
        let HcBlockRead {
            handle,
            offset,
            data,
            len,
            ..
        } = mem
            .read(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        mem.checked(data, len)
            .map_err(|source| HypercallError::memory(CALL, "buffer", source))?;
        let ret = match self.device(handle) {
            None => Solo5Result::Einval,
            Some((_, cap, sector)) if !Self::range_ok(offset, len, cap, sector) => {
                Solo5Result::Einval
            }
            Some((file, _, _)) => {
                let buf = mem
                    .slice_mut(data, len)
                    .map_err(|source| HypercallError::memory(CALL, "buffer", source))?;
                match file.read_exact_at(buf, offset) {
                    Ok(()) => Solo5Result::Ok,
                    Err(_) => Solo5Result::Eunspec,
                }
            }
        };
        let out = mem
            .slice_mut(gpa, size)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        set_out(out, offset_of!(HcBlockRead, ret), ret as i32);
        Ok(())
    }
}

kiln_tender::with_flags!(Block, BlockFlags);

impl Module for Block {
    fn attach(&mut self, handle: u64, name: &str) -> Result<MftDeviceInfo, ModuleError> {
        let opened = self.flags.open(name, false)?;
        self.attached.push((
            opened.order,
            handle,
            opened.file,
            opened.capacity,
            u64::from(opened.sector),
        ));
        self.attached.sort_by_key(|a| a.0);
        Ok(MftDeviceInfo::block(opened.capacity, opened.sector))
    }

    fn serves(&self, hc: Hypercall) -> bool {
        matches!(hc, Hypercall::BlockRead | Hypercall::BlockWrite)
    }

    fn hypercall(
        &mut self,
        hc: Hypercall,
        gpa: u64,
        mem: &mut GuestMemory,
    ) -> Result<(), HypercallError> {
        match hc {
            Hypercall::BlockWrite => self.write(gpa, mem),
            Hypercall::BlockRead => self.read(gpa, mem),
            other => Err(HypercallError::Unserved { call: other.name() }),
        }
    }

    fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, u64)> {
        Vec::new()
    }

    fn syscalls(&self) -> Vec<FdSyscall> {
        self.attached
            .iter()
            .flat_map(|(_, _, f, _, _)| {
                let fd = f.as_raw_fd();
                [
                    FdSyscall {
                        nr: libc::SYS_pread64,
                        name: "pread64",
                        fd,
                    },
                    FdSyscall {
                        nr: libc::SYS_pwrite64,
                        name: "pwrite64",
                        fd,
                    },
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_sector_aligned_and_inside() {
        assert!(Block::range_ok(0, 512, 1024, 512));
        assert!(Block::range_ok(512, 512, 1024, 512));
        assert!(!Block::range_ok(512, 1024, 1024, 512));
        assert!(!Block::range_ok(1, 512, 1024, 512));
        assert!(!Block::range_ok(0, 100, 1024, 512));
        assert!(!Block::range_ok(u64::MAX - 511, 512, u64::MAX, 512));
    }
}
