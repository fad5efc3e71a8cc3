//! The block module: attaches a file (`--block:NAME=PATH`, sector size from
//! `--block-sector-size:NAME=N`, default 512) to each `BLOCK_BASIC`
//! manifest entry. The guest reads and writes with `pread64`/`pwrite64` on
//! the descriptor itself; the filter checks every request's bounds.
//!
//! A BPF filter compares one argument with one constant at a time, so
//! `offset + length <= capacity` cannot be written directly. The filter
//! instead allows the lengths `sector << k` up to [`MAX_REQUEST`], each
//! with its own bound `offset <= capacity - length`, and requires a
//! sector-aligned offset. The guest (kiln-solo5's spt block device) splits
//! a request into such pieces, largest first. A write that passes the
//! filter therefore lies inside the device and cannot grow the file.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};

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

/// The request lengths the filter allows for `sector`-byte sectors on a
/// device of `capacity` bytes: `sector << k` up to [`MAX_REQUEST`] and the
/// capacity.
pub fn request_lengths(sector: u64, capacity: u64) -> Vec<u64> {
    let max = MAX_REQUEST.max(sector).min(capacity);
    let mut out = Vec::new();
    let mut len = sector;
    while len <= max && len > 0 {
        out.push(len);
        len <<= 1;
    }
    out
}

/// The rules for one device: for each allowed length, `pread64` and
/// `pwrite64` on `fd` with that length, a sector-aligned offset at most
/// `capacity - length`; and `fdatasync`/`fsync` on `fd`.
pub fn disk_rules(fd: RawFd, capacity: u64, sector: u64) -> Vec<Rule> {
    let mut rules = Vec::new();
    for (nr, name) in [
        (libc::SYS_pread64, "pread64"),
        (libc::SYS_pwrite64, "pwrite64"),
    ] {
        for len in request_lengths(sector, capacity) {
            rules.push(Rule::new(
                nr,
                name,
                vec![
                    Cond::eq(0, "fd", fd as u64),
                    Cond::eq(2, "count", len),
                    Cond::le(3, "offset", capacity - len),
                    Cond::masked(3, "offset", sector - 1, 0),
                ],
            ));
        }
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

    fn poll_fds(&self) -> Vec<(RawFd, u64)> {
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
    fn lengths_are_powers_of_two_of_sectors_up_to_the_maximum() {
        assert_eq!(
            request_lengths(512, 1 << 30),
            [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
        );
        assert_eq!(request_lengths(512, 4096), [512, 1024, 2048, 4096]);
        assert_eq!(request_lengths(512, 3 * 512), [512, 1024]);
        assert_eq!(request_lengths(32768, 1 << 20), [32768, 65536]);
    }

    #[test]
    fn offsets_are_bounded_per_length() {
        let rules = disk_rules(9, 8 * 512, 512);
        let text: Vec<String> = rules.iter().map(ToString::to_string).collect();
        assert!(text.contains(
            &"pwrite64(fd == 9, count == 512, offset <= 3584, offset & 0x1ff == 0)".to_string()
        ));
        assert!(text.contains(
            &"pread64(fd == 9, count == 4096, offset <= 0, offset & 0x1ff == 0)".to_string()
        ));
        assert!(text.contains(&"fdatasync(fd == 9)".to_string()));
    }
}
