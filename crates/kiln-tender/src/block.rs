//! The block module's host side both tenders share: the `--block:NAME=PATH`
//! and `--block-sector-size:NAME=N` flags, opening the file a flag gives,
//! checked against its sector size, and the per-device counters a tender
//! that serves the requests itself (kiln-hvt) keeps for its supervisor.

use std::fs::{File, OpenOptions};

use kiln_abi::mft::MftType;

use crate::module::{ModuleError, ModuleFlags, split_flag};

/// Sector size when none is given.
pub const DEFAULT_SECTOR_SIZE: u16 = 512;

/// Help lines for the block flags.
pub const USAGE: &str = "  --block:NAME=PATH\n      attach file PATH as block device NAME\n  --block-sector-size:NAME=N\n      sector size of NAME in bytes, a power of two from 512 to 32768 (default 512)\n";

const SECTOR: &str = "--block-sector-size:NAME=N with N a power of two from 512 to 32768";

#[derive(Debug)]
struct Disk {
    name: String,
    path: String,
    flag: String,
}

/// A device's file, opened and checked.
#[derive(Debug)]
pub struct Opened {
    /// The position of its `--block:` flag among the others: tenders list
    /// attached devices in this order.
    pub order: usize,
    /// The file, read-write.
    pub file: File,
    /// Its size in bytes, a multiple of `sector`.
    pub capacity: u64,
    /// The sector size in bytes.
    pub sector: u16,
}

/// The block flags given on the command line.
#[derive(Debug, Default)]
pub struct BlockFlags {
    disks: Vec<Disk>,
    sector_sizes: Vec<(String, u16, String)>,
}

impl ModuleFlags for BlockFlags {
    fn name(&self) -> &'static str {
        "block"
    }

    fn device_type(&self) -> MftType {
        MftType::BlockBasic
    }

    fn usage(&self) -> &'static str {
        USAGE
    }

    /// Offers a command-line flag; `Ok(true)` if it is a block flag.
    fn parse_flag(&mut self, flag: &str) -> Result<bool, ModuleError> {
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
            });
            return Ok(true);
        }
        Ok(false)
    }

    /// Each device name the flags mention, with the flag that mentions it.
    fn named_devices(&self) -> Vec<(String, String)> {
        let disks = self.disks.iter().map(|d| (d.name.clone(), d.flag.clone()));
        let sizes = self
            .sector_sizes
            .iter()
            .map(|(n, _, f)| (n.clone(), f.clone()));
        disks.chain(sizes).collect()
    }
}

impl BlockFlags {
    /// The sector size of device `name`.
    pub fn sector_size(&self, name: &str) -> u16 {
        self.sector_sizes
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or(DEFAULT_SECTOR_SIZE, |(_, s, _)| *s)
    }

    /// Opens the file the flags give for device `name`, read-write; its size
    /// must be a multiple of the sector size, and not zero if `nonempty`.
    pub fn open(&self, name: &str, nonempty: bool) -> Result<Opened, ModuleError> {
        let sector = self.sector_size(name);
        let (order, disk) = self
            .disks
            .iter()
            .enumerate()
            .find(|(_, d)| d.name == name)
            .ok_or_else(|| ModuleError::NotAttached {
                name: name.to_string(),
                kind: MftType::BlockBasic.name(),
                hint: format!("add --block:{name}=PATH (a disk image file)"),
            })?;
        let open_err = |source| ModuleError::Open {
            name: name.to_string(),
            what: format!("'{}'", disk.path),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk.path)
            .map_err(open_err)?;
        let capacity = file.metadata().map_err(open_err)?.len();
        if (nonempty && capacity == 0) || capacity % u64::from(sector) != 0 {
            return Err(ModuleError::Invalid {
                name: name.to_string(),
                problem: format!(
                    "'{}' is {capacity} bytes, not a {}multiple of the {sector}-byte sector size; hint: resize it with `truncate -s` or pick another --block-sector-size",
                    disk.path,
                    if nonempty { "positive " } else { "" }
                ),
            });
        }
        Ok(Opened {
            order,
            file,
            capacity,
            sector,
        })
    }
}

/// The per-device counters a supervisor reads (`kiln_abi::block_stats`),
/// kept in the file named by `KILN_BLOCK_STATS` when the environment names
/// one (`kiln daemon` does): kiln-block-stats, shared with kiln-unix.
pub use kiln_block_stats::{Counters, Op};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_and_named() {
        let mut flags = BlockFlags::default();
        assert!(flags.parse_flag("--block:disk=/nonexistent/x.img").unwrap());
        assert!(flags.parse_flag("--block-sector-size:disk=4096").unwrap());
        assert!(!flags.parse_flag("--net:disk=tap0").unwrap());
        for bad in ["--block-sector-size:b=256", "--block-sector-size:b=1000"] {
            assert!(
                matches!(
                    flags.parse_flag(bad),
                    Err(ModuleError::FlagSyntax {
                        expected: SECTOR,
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            flags.parse_flag("--block:disk=y.img"),
            Err(ModuleError::DuplicateFlag { .. })
        ));
        assert_eq!(flags.sector_size("disk"), 4096);
        assert_eq!(flags.sector_size("other"), DEFAULT_SECTOR_SIZE);
        assert_eq!(flags.named_devices().len(), 2);
        let err = flags.open("disk", false).unwrap_err();
        assert!(matches!(err, ModuleError::Open { .. }), "{err}");
        let err = flags.open("other", false).unwrap_err();
        assert!(err.to_string().contains("--block:other=PATH"), "{err}");
    }

    #[test]
    fn sizes_must_be_whole_sectors() {
        let dir = std::env::temp_dir().join(format!("kiln-tender-block-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.img");
        let odd = dir.join("odd.img");
        std::fs::write(&empty, b"").unwrap();
        std::fs::write(&odd, [0u8; 1000]).unwrap();
        let mut flags = BlockFlags::default();
        flags
            .parse_flag(&format!("--block:a={}", odd.display()))
            .unwrap();
        flags
            .parse_flag(&format!("--block:e={}", empty.display()))
            .unwrap();
        let err = flags.open("a", false).unwrap_err();
        assert!(
            err.to_string().contains("not a multiple of the 512-byte"),
            "{err}"
        );
        let opened = flags.open("e", false).unwrap();
        assert_eq!((opened.order, opened.capacity, opened.sector), (1, 0, 512));
        let err = flags.open("e", true).unwrap_err();
        assert!(err.to_string().contains("not a positive multiple"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
