//! Guest low memory: page tables, GDT, boot info, the manifest copy and the
//! command line, laid out as [`kiln_abi::hvt::layout`] describes.

use kiln_abi::hvt::{HVT_CMDLINE_SIZE, HVT_GUEST_MIN_BASE, HvtBootInfo, layout};
use kiln_abi::mft::{MFT_ENTRY_ATTACHED_OFFSET, MftDeviceInfo, entry_offset};
use thiserror::Error;

use crate::guest::{GuestMemError, GuestMemory};
use crate::vm::GDT;

/// Page-table entry bits: present, writable, 2 MiB page.
const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_PS: u64 = 1 << 7;
/// Offset of `info` and `backing` in a manifest entry.
const ENTRY_INFO_OFFSET: usize = 72;
const ENTRY_BACKING_OFFSET: usize = 88;

/// Why low memory could not be set up.
#[derive(Debug, Error)]
pub enum BootError {
    /// The command line does not fit.
    #[error(
        "guest command line is {len} bytes, at most {} fit; hint: pass fewer or shorter arguments",
        HVT_CMDLINE_SIZE - 1
    )]
    CmdlineTooLong {
        /// Its length without the terminator.
        len: usize,
    },
    /// A command-line argument contains a NUL byte.
    #[error("guest argument {index} contains a NUL byte")]
    CmdlineNul {
        /// Its position.
        index: usize,
    },
    /// Low memory overflows into the image area (a tender bug, not input).
    #[error("low memory layout does not fit below {HVT_GUEST_MIN_BASE:#x}")]
    Layout,
    /// Writing guest memory failed.
    #[error("cannot write guest low memory")]
    Memory(#[from] GuestMemError),
}

/// What goes into low memory.
#[derive(Debug)]
pub struct BootParams<'a> {
    /// The validated manifest bytes (`struct mft`).
    pub manifest: &'a [u8],
    /// For each attached entry, its index and the properties the guest sees.
    pub attached: &'a [(usize, MftDeviceInfo)],
    /// Arguments after KERNEL.
    pub args: &'a [String],
    /// End of the image.
    pub kernel_end: u64,
    /// TSC frequency in Hz.
    pub tsc_hz: u64,
}

/// Builds the command line: arguments joined with spaces, NUL-terminated.
pub fn cmdline(args: &[String]) -> Result<Vec<u8>, BootError> {
    if let Some(index) = args.iter().position(|a| a.contains('\0')) {
        return Err(BootError::CmdlineNul { index });
    }
    let mut line = args.join(" ").into_bytes();
    if line.len() >= HVT_CMDLINE_SIZE {
        return Err(BootError::CmdlineTooLong { len: line.len() });
    }
    line.push(0);
    Ok(line)
}

const fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Writes page tables, GDT, boot info, manifest and command line.
pub fn setup(mem: &mut GuestMemory, params: &BootParams<'_>) -> Result<(), BootError> {
    let cmdline = cmdline(params.args)?;
    let mem_size = mem.size();

    // Identity map all of guest memory with 2 MiB pages.
    mem.write(
        layout::PML4_BASE,
        &(layout::PDPTE_BASE | PTE_P | PTE_RW).to_le_bytes(),
    )?;
    mem.write(
        layout::PDPTE_BASE,
        &(layout::PDE_BASE | PTE_P | PTE_RW).to_le_bytes(),
    )?;
    let pages = mem_size / layout::GUEST_PAGE_SIZE;
    if pages > 512 {
        return Err(BootError::Layout);
    }
    for i in 0..pages {
        let entry = (i * layout::GUEST_PAGE_SIZE) | PTE_P | PTE_RW | PTE_PS;
        mem.write(layout::PDE_BASE + i * 8, &entry.to_le_bytes())?;
    }
    for (i, desc) in GDT.iter().enumerate() {
        mem.write(layout::GDT_BASE + i as u64 * 8, &desc.to_le_bytes())?;
    }

    let bi_size = std::mem::size_of::<HvtBootInfo>() as u64;
    let mft_gpa = align8(layout::BOOT_INFO_BASE + bi_size);
    let mft_len = params.manifest.len() as u64;
    let cmdline_gpa = align8(mft_gpa + mft_len);
    if cmdline_gpa + HVT_CMDLINE_SIZE as u64 > HVT_GUEST_MIN_BASE {
        return Err(BootError::Layout);
    }

    // The guest's copy of the manifest: OUT fields filled, private ones zero.
    let mut mft = params.manifest.to_vec();
    let entries = (mft.len().saturating_sub(8)) / kiln_abi::mft::MFT_ENTRY_SIZE;
    for i in 0..entries {
        let base = entry_offset(i);
        if let Some(b) = mft.get_mut(base + ENTRY_BACKING_OFFSET..base + ENTRY_BACKING_OFFSET + 8) {
            b.fill(0);
        }
        if let Some(b) = mft.get_mut(base + MFT_ENTRY_ATTACHED_OFFSET) {
            *b = 0;
        }
    }
    for &(index, info) in params.attached {
        let base = entry_offset(index);
        if let Some(b) = mft.get_mut(base + ENTRY_INFO_OFFSET..base + ENTRY_INFO_OFFSET + 16) {
            b[..8].copy_from_slice(&info.words[0].to_le_bytes());
            b[8..].copy_from_slice(&info.words[1].to_le_bytes());
        }
        if let Some(b) = mft.get_mut(base + MFT_ENTRY_ATTACHED_OFFSET) {
            *b = 1;
        }
    }
    mem.write(mft_gpa, &mft)?;
    mem.write(cmdline_gpa, &cmdline)?;

    let bi = HvtBootInfo {
        mem_size,
        kernel_end: params.kernel_end,
        cpu_cycle_freq: params.tsc_hz,
        cmdline: cmdline_gpa,
        mft: mft_gpa,
    };
    mem.write(layout::BOOT_INFO_BASE, &bi.to_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_joins_and_terminates() {
        let args = vec!["--times=3".to_string(), "x".to_string()];
        assert_eq!(cmdline(&args).unwrap(), b"--times=3 x\0");
        assert_eq!(cmdline(&[]).unwrap(), b"\0");
        let long = vec!["a".repeat(HVT_CMDLINE_SIZE)];
        assert!(matches!(
            cmdline(&long),
            Err(BootError::CmdlineTooLong { .. })
        ));
        let just_fits = vec!["a".repeat(HVT_CMDLINE_SIZE - 1)];
        assert_eq!(cmdline(&just_fits).unwrap().len(), HVT_CMDLINE_SIZE);
    }
}
