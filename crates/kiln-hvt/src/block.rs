//! The block module: attaches a file (`--block:NAME=PATH`, sector size from
//! `--block-sector-size:NAME=N`, default 512) to each `BLOCK_BASIC` manifest
//! entry, and serves the block read and write hypercalls.

use std::fs::{File, OpenOptions};
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use kiln_abi::hvt::{HcBlockRead, HcBlockWrite, Hypercall};
use kiln_abi::mft::{MftDeviceInfo, MftType};
use kiln_abi::status::Solo5Result;

use crate::guest::{GuestMemory, arg_u64, set_i32};
use crate::hypercall::HypercallError;
use crate::module::{FdSyscall, Module, ModuleError, ModuleFlags, split_flag};

/// Sector size when none is given.
pub const DEFAULT_SECTOR_SIZE: u16 = 512;

#[derive(Debug)]
struct Disk {
    name: String,
    path: String,
    flag: String,
    attached: Option<(u64, File, u64)>,
}

/// The block module.
#[derive(Debug, Default)]
pub struct Block {
    disks: Vec<Disk>,
    sector_sizes: Vec<(String, u16, String)>,
}

impl Block {
    fn sector_size(&self, name: &str) -> u16 {
        self.sector_sizes
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or(DEFAULT_SECTOR_SIZE, |(_, s, _)| *s)
    }

    /// The device with `handle`: its file, capacity and sector size.
    fn device(&self, handle: u64) -> Option<(&File, u64, u64)> {
        self.disks.iter().find_map(|d| match &d.attached {
            Some((h, f, cap)) if *h == handle => {
                Some((f, *cap, u64::from(self.sector_size(&d.name))))
            }
            _ => None,
        })
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
        let arg = mem
            .read_array::<{ size_of::<HcBlockWrite>() }>(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        let handle = arg_u64(&arg, offset_of!(HcBlockWrite, handle));
        let offset = arg_u64(&arg, offset_of!(HcBlockWrite, offset));
        let data = arg_u64(&arg, offset_of!(HcBlockWrite, data));
        let len = arg_u64(&arg, offset_of!(HcBlockWrite, len));
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
        set_i32(out, offset_of!(HcBlockWrite, ret), ret as i32);
        Ok(())
    }

    fn read(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        const CALL: &str = "block read";
        let size = size_of::<HcBlockRead>() as u64;
        let arg = mem
            .read_array::<{ size_of::<HcBlockRead>() }>(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        let handle = arg_u64(&arg, offset_of!(HcBlockRead, handle));
        let offset = arg_u64(&arg, offset_of!(HcBlockRead, offset));
        let data = arg_u64(&arg, offset_of!(HcBlockRead, data));
        let len = arg_u64(&arg, offset_of!(HcBlockRead, len));
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
        set_i32(out, offset_of!(HcBlockRead, ret), ret as i32);
        Ok(())
    }
}

impl ModuleFlags for Block {
    fn name(&self) -> &'static str {
        "block"
    }

    fn device_type(&self) -> MftType {
        MftType::BlockBasic
    }

    fn usage(&self) -> &'static str {
        "  --block:NAME=PATH\n      attach file PATH as block device NAME\n  --block-sector-size:NAME=N\n      sector size of NAME in bytes, a power of two from 512 to 32768 (default 512)\n"
    }

    fn parse_flag(&mut self, flag: &str) -> Result<bool, ModuleError> {
        const SECTOR: &str = "--block-sector-size:NAME=N with N a power of two from 512 to 32768";
        if let Some((name, n)) = split_flag(flag, "--block-sector-size:", SECTOR)? {
            let size = n
                .parse::<u16>()
                .ok()
                .filter(|s| s.is_power_of_two() && *s >= 512)
                .ok_or_else(|| ModuleError::FlagSyntax {
                    flag: flag.to_string(),
                    expected: SECTOR,
                })?;
            if self.sector_sizes.iter().any(|(n, _, _)| n == name) {
                return Err(ModuleError::DuplicateFlag {
                    flag: flag.to_string(),
                    name: name.to_string(),
                });
            }
            self.sector_sizes
                .push((name.to_string(), size, flag.to_string()));
            return Ok(true);
        }
        if let Some((name, path)) = split_flag(flag, "--block:", "--block:NAME=PATH")? {
            if self.disks.iter().any(|d| d.name == name) {
                return Err(ModuleError::DuplicateFlag {
                    flag: flag.to_string(),
                    name: name.to_string(),
                });
            }
            self.disks.push(Disk {
                name: name.to_string(),
                path: path.to_string(),
                flag: flag.to_string(),
                attached: None,
            });
            return Ok(true);
        }
        Ok(false)
    }

    fn named_devices(&self) -> Vec<(String, String)> {
        let disks = self.disks.iter().map(|d| (d.name.clone(), d.flag.clone()));
        let sizes = self
            .sector_sizes
            .iter()
            .map(|(n, _, f)| (n.clone(), f.clone()));
        disks.chain(sizes).collect()
    }
}

impl Module for Block {
    fn attach(&mut self, handle: u64, name: &str) -> Result<MftDeviceInfo, ModuleError> {
        let sector = self.sector_size(name);
        let disk = self
            .disks
            .iter_mut()
            .find(|d| d.name == name)
            .ok_or_else(|| ModuleError::NotAttached {
                name: name.to_string(),
                kind: MftType::BlockBasic.name(),
                hint: format!("add --block:{name}=PATH (a disk image file)"),
            })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk.path)
            .map_err(|source| ModuleError::Open {
                name: name.to_string(),
                what: format!("'{}'", disk.path),
                source,
            })?;
        let capacity = file
            .metadata()
            .map_err(|source| ModuleError::Open {
                name: name.to_string(),
                what: format!("'{}'", disk.path),
                source,
            })?
            .len();
        if capacity % u64::from(sector) != 0 {
            return Err(ModuleError::Invalid {
                name: name.to_string(),
                problem: format!(
                    "'{}' is {capacity} bytes, not a multiple of the {sector}-byte sector size; hint: resize it with `truncate -s` or pick another --block-sector-size",
                    disk.path
                ),
            });
        }
        disk.attached = Some((handle, file, capacity));
        Ok(MftDeviceInfo::block(capacity, sector))
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
        self.disks
            .iter()
            .filter_map(|d| d.attached.as_ref())
            .flat_map(|(_, f, _)| {
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
