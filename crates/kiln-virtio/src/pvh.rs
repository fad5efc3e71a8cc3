//! The PVH boot protocol's start info, as the VMM leaves it for the image
//! (Xen's `public/arch-x86/hvm/start_info.h`, version 1; QEMU, Firecracker
//! and cloud-hypervisor fill it in): where the command line is and which
//! memory is RAM. Parsed from bytes, never trusted.

use core::ops::Range;

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const START_MAGIC: u32 = 0x336e_c578;
/// Size of `struct hvm_start_info` (version 1).
pub const START_INFO_SIZE: usize = 56;
/// Size of `struct hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: usize = 24;
/// `XEN_HVM_MEMMAP_TYPE_RAM`.
pub const MEMMAP_RAM: u32 = 1;
/// Most memory-map entries kiln reads (QEMU gives about five).
pub const MEMMAP_MAX_ENTRIES: usize = 128;
/// Longest command line kiln reads, terminator included.
pub const CMDLINE_MAX: usize = 8192;

/// Why the start info cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StartInfoError {
    /// The magic value is wrong: not entered through PVH.
    #[error(
        "start info has magic {found:#x}, not {START_MAGIC:#x}; hint: boot the image through PVH (QEMU -kernel, Firecracker, cloud-hypervisor --kernel)"
    )]
    BadMagic {
        /// What was there.
        found: u32,
    },
    /// Version 0 has no memory map, and kiln needs one.
    #[error(
        "start info version {version} has no memory map; hint: use a VMM that passes version 1 (QEMU 4.0 or later, Firecracker, cloud-hypervisor)"
    )]
    NoMemoryMap {
        /// The version found.
        version: u32,
    },
    /// No RAM entry covers the image's load address.
    #[error("the memory map has no RAM at {at:#x}, where the image is loaded")]
    NoRamAtImage {
        /// The image's start.
        at: u64,
    },
}

/// The fields of `struct hvm_start_info` kiln uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInfo {
    /// The structure's version.
    pub version: u32,
    /// Physical address of the NUL-terminated command line, or 0.
    pub cmdline: u64,
    /// Physical address of the ACPI RSDP, or 0.
    pub rsdp: u64,
    /// Physical address of the memory map.
    pub memmap: u64,
    /// Its number of entries.
    pub memmap_entries: u32,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

impl StartInfo {
    /// Parses the [`START_INFO_SIZE`] bytes of a start info.
    pub fn parse(bytes: &[u8; START_INFO_SIZE]) -> Result<StartInfo, StartInfoError> {
        let magic = u32_at(bytes, 0);
        if magic != START_MAGIC {
            return Err(StartInfoError::BadMagic { found: magic });
        }
        let version = u32_at(bytes, 4);
        if version < 1 {
            return Err(StartInfoError::NoMemoryMap { version });
        }
        Ok(StartInfo {
            version,
            cmdline: u64_at(bytes, 24),
            rsdp: u64_at(bytes, 32),
            memmap: u64_at(bytes, 40),
            memmap_entries: u32_at(bytes, 48),
        })
    }

    /// The memory the memory map occupies (entries capped at
    /// [`MEMMAP_MAX_ENTRIES`]).
    pub fn memmap_range(&self) -> Range<u64> {
        let n = (self.memmap_entries as usize).min(MEMMAP_MAX_ENTRIES);
        self.memmap..self.memmap.saturating_add((n * MEMMAP_ENTRY_SIZE) as u64)
    }
}

/// The end of the run of RAM that holds `at` (the image's load address),
/// joining adjacent or overlapping RAM entries, from the memory map's
/// bytes (whole entries only).
pub fn ram_end(memmap: &[u8], at: u64) -> Result<u64, StartInfoError> {
    let ram = |i: usize| -> Option<Range<u64>> {
        let e = memmap.get(i * MEMMAP_ENTRY_SIZE..(i + 1) * MEMMAP_ENTRY_SIZE)?;
        let (addr, size, ty) = (u64_at(e, 0), u64_at(e, 8), u32_at(e, 16));
        (ty == MEMMAP_RAM).then(|| addr..addr.saturating_add(size))
    };
    let n = memmap.len() / MEMMAP_ENTRY_SIZE;
    let mut end = (0..n)
        .filter_map(ram)
        .find(|r| r.contains(&at))
        .ok_or(StartInfoError::NoRamAtImage { at })?
        .end;
    // Extend through entries that start inside the run (bounded: each pass
    // grows `end` or stops).
    for _ in 0..n {
        match (0..n)
            .filter_map(ram)
            .filter(|r| r.start <= end && r.end > end)
            .map(|r| r.end)
            .max()
        {
            Some(e) => end = e,
            None => break,
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn entry(addr: u64, size: u64, ty: u32) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&addr.to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&ty.to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e
    }

    #[test]
    fn qemu_start_info_parses() {
        // As QEMU's PVH option ROM writes it: version 1, a command line
        // and a memory map of five entries.
        let mut b = [0u8; START_INFO_SIZE];
        b[0..4].copy_from_slice(&START_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&0x2_0000u64.to_le_bytes());
        b[40..48].copy_from_slice(&0x7000u64.to_le_bytes());
        b[48..52].copy_from_slice(&5u32.to_le_bytes());
        let si = StartInfo::parse(&b).unwrap();
        assert_eq!(si.cmdline, 0x2_0000);
        assert_eq!(si.memmap_range(), 0x7000..0x7000 + 5 * 24);
    }

    #[test]
    fn bad_magic_and_version_0_are_refused() {
        let mut b = [0u8; START_INFO_SIZE];
        assert_eq!(
            StartInfo::parse(&b),
            Err(StartInfoError::BadMagic { found: 0 })
        );
        b[0..4].copy_from_slice(&START_MAGIC.to_le_bytes());
        assert_eq!(
            StartInfo::parse(&b),
            Err(StartInfoError::NoMemoryMap { version: 0 })
        );
    }

    #[test]
    fn ram_run_holding_the_image_is_found() {
        let map = [
            entry(0, 0x9_fc00, 1),
            entry(0x9_fc00, 0x400, 2),
            entry(0xf_0000, 0x1_0000, 2),
            entry(0x10_0000, 0x1ff0_0000, 1),
            entry(0x2000_0000, 0x10_0000, 1),
            entry(0xfffc_0000, 0x4_0000, 2),
        ]
        .concat();
        assert_eq!(ram_end(&map, 0x10_0000), Ok(0x2010_0000));
        assert_eq!(
            ram_end(&map, 0xfff0_0000),
            Err(StartInfoError::NoRamAtImage { at: 0xfff0_0000 })
        );
        // A truncated entry is ignored, not read past.
        assert_eq!(
            ram_end(&map[..24 * 3 + 10], 0x10_0000),
            Err(StartInfoError::NoRamAtImage { at: 0x10_0000 })
        );
    }
}
