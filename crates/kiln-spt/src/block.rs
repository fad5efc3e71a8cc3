//! The block module: attaches a file (`--block:NAME=PATH`, sector size from
//! `--block-sector-size:NAME=N`, default 512) to each `BLOCK_BASIC`
//! manifest entry. The guest reads and writes with `pread64`/`pwrite64` on
//! the descriptor itself; the filter checks every request's bounds.
//!
//! One rule a call and device: the descriptor, a length of whole sectors
//! up to [`MAX_REQUEST`], a sector-aligned offset, and `offset + length <=
//! capacity` in 64 bits (kiln-tender's compact BPF compiler adds the two
//! arguments; seccompiler, which compares one argument with one constant,
//! needed a rule per allowed length and overflowed the kernel's 4,096
//! instructions from about ten disks on). A write that passes the filter
//! therefore lies inside the device and cannot grow the file. kiln-solo5's
//! spt block device splits a request into pieces of at most
//! [`MAX_REQUEST`]; a Solo5 guest reads and writes a sector at a time.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use kiln_abi::mft::MftDeviceInfo;
use kiln_abi::spt::SPT_BLOCK_MAX_REQUEST;
use kiln_tender::block::BlockFlags;

use crate::module::{Attached, Module, ModuleError};
use crate::seccomp::{Cond, Rule};

pub use kiln_tender::block::DEFAULT_SECTOR_SIZE;

/// Largest single `pread64`/`pwrite64` the filter allows, in bytes (or one
/// sector, if sectors are larger): [`SPT_BLOCK_MAX_REQUEST`]. kiln-solo5's
/// spt block device splits requests to this size; the two must agree.
pub const MAX_REQUEST: u64 = SPT_BLOCK_MAX_REQUEST;

/// The block module.
#[derive(Debug, Default)]
pub struct Block {
    flags: BlockFlags,
    /// Attached devices in the order of their flags: (order, file,
    /// capacity, sector size).
    attached: Vec<(usize, File, u64, u16)>,
}

/// The rules for one device: `pread64` and `pwrite64` on `fd` with a
/// length of whole sectors up to [`MAX_REQUEST`] (or one sector, if
/// larger), a sector-aligned offset and `offset + count <= capacity`; and
/// `fdatasync`/`fsync` on `fd`.
pub fn disk_rules(fd: RawFd, capacity: u64, sector: u64) -> Vec<Rule> {
    let mut rules = Vec::new();
    let max = MAX_REQUEST.max(sector);
    for (nr, name) in [
        (libc::SYS_pread64, "pread64"),
        (libc::SYS_pwrite64, "pwrite64"),
    ] {
        rules.push(Rule::new(
            nr,
            name,
            vec![
                Cond::eq(0, "fd", fd as u64),
                Cond::masked(2, "count", sector - 1, 0),
                Cond::le(2, "count", max),
                Cond::masked(3, "offset", sector - 1, 0),
                Cond::sum_le(3, "offset", 2, "count", capacity),
            ],
        ));
    }
    rules.push(Rule::on_fd(libc::SYS_fdatasync, "fdatasync", fd));
    rules.push(Rule::on_fd(libc::SYS_fsync, "fsync", fd));
    rules
}

kiln_tender::with_flags!(Block, BlockFlags);

impl Module for Block {
    fn attach(&mut self, handle: u64, name: &str) -> Result<Attached, ModuleError> {
        let opened = self.flags.open(name, true)?;
        let fd = opened.file.as_raw_fd();
        self.attached
            .push((opened.order, opened.file, opened.capacity, opened.sector));
        self.attached.sort_by_key(|a| a.0);
        Ok(Attached {
            handle,
            info: MftDeviceInfo::block(opened.capacity, opened.sector),
            fd,
        })
    }

    fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, u64)> {
        Vec::new()
    }

    fn rules(&self) -> Vec<Rule> {
        self.attached
            .iter()
            .flat_map(|(_, f, capacity, sector)| {
                disk_rules(f.as_raw_fd(), *capacity, u64::from(*sector))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_bounded_by_the_capacity() {
        let rules = disk_rules(9, 8 * 512, 512);
        let text: Vec<String> = rules.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "pread64(fd == 9, count & 0x1ff == 0, count <= 65536, offset & 0x1ff == 0, offset + count <= 4096)",
                "pwrite64(fd == 9, count & 0x1ff == 0, count <= 65536, offset & 0x1ff == 0, offset + count <= 4096)",
                "fdatasync(fd == 9)",
                "fsync(fd == 9)",
            ]
        );
    }
}
