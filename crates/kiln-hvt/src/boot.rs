//! Guest low memory: page tables, GDT, boot info, the manifest copy and the
//! command line, laid out as [`kiln_abi::hvt::layout`] describes.
//!
//! The page tables give every guest the protection Solo5's `solo5-hvt`
//! does (its `hvt_x86_setup_pagetables` and `hvt_elf_load`), and NX where
//! Solo5 has none: the first 2 MiB and the image are mapped with 4 KiB
//! pages, the rest of memory with 2 MiB pages. Below the image, only the
//! boot data is present, read-only (the null page, the GDT and the tables
//! are absent); the image's pages are R+X, R or RW as its segments say
//! (RW+NX for rodata and data, R+X for text); heap and stack are RW+NX. The
//! boot data and the image's read-only segments are also made read-only in
//! the host mapping, so that a guest running at CPL 0 without CR0.WP (a
//! Solo5 guest) cannot write them either: such a write ends `KVM_RUN` with
//! `EFAULT`.

use std::ops::Range;

use kiln_abi::hvt::{HVT_CMDLINE_SIZE, HVT_GUEST_MIN_BASE, HvtBootInfo, layout};
use kiln_abi::hvt_ring::{
    HVT_BOOT_INFO_RING_OFFSET, HVT_FEATURE_RING_IO, HvtBootInfoRing, RING_SIZE_BYTES,
};
use kiln_abi::mft::{MFT_ENTRY_ATTACHED_OFFSET, MftDeviceInfo, entry_offset};
use thiserror::Error;
use zerocopy::IntoBytes;

use crate::elf::Protection;
use crate::guest::{GuestMemError, GuestMemory};
use crate::vm::GDT;

/// Page-table entry bits: present, writable, 2 MiB page, no execute.
const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_PS: u64 = 1 << 7;
const PTE_NX: u64 = 1 << 63;
/// A 4 KiB page.
const PAGE: u64 = 0x1000;
/// What one page directory maps.
const GIB: u64 = 1 << 30;
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
    /// The page tables for this much memory and this large an image do not
    /// fit below the image.
    #[error(
        "the page tables for {mem_mb} MiB of guest memory and an image ending at {kernel_end:#x} do not fit below {HVT_GUEST_MIN_BASE:#x}; hint: use less --mem"
    )]
    TablesTooLarge {
        /// Guest memory in MiB.
        mem_mb: u64,
        /// End of the image.
        kernel_end: u64,
    },
    /// The page tables would reach into the net ring (an image of some
    /// hundreds of MiB); the caller sets up again without the ring.
    #[error("the page tables leave no room for the net ring")]
    NoRoomForRing,
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
    /// The image's segments: where each lies in memory and its protection.
    pub segments: &'a [(Range<u64>, Protection)],
    /// TSC frequency in Hz.
    pub tsc_hz: u64,
    /// `--solo5-protection`: every page executable and the boot data left
    /// writable in the host mapping, as solo5-hvt maps them.
    pub solo5_protection: bool,
    /// The guest address of Solo5's net ring (`kiln_abi::hvt_ring`) when
    /// it is offered: page-aligned, below the image; its pages are mapped
    /// RW+NX and the page tables must end below it.
    pub ring: Option<u64>,
}

/// How the tender maps one 4 KiB guest page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageProt {
    /// Not present.
    Absent,
    /// Read-only, not executable.
    Read,
    /// Read-write, not executable.
    ReadWrite,
    /// Read and execute.
    ReadExec,
    /// Read, write and execute (two segments sharing a page).
    ReadWriteExec,
}

impl PageProt {
    /// The page-table entry mapping `page` so, without the NX bit under
    /// `solo5` (solo5-hvt's tables have none).
    fn pte_for(self, page: u64, solo5: bool) -> u64 {
        if solo5 {
            self.pte(page) & !PTE_NX
        } else {
            self.pte(page)
        }
    }

    /// The page-table entry mapping `page` so.
    fn pte(self, page: u64) -> u64 {
        match self {
            Self::Absent => 0,
            Self::Read => page | PTE_P | PTE_NX,
            Self::ReadWrite => page | PTE_P | PTE_RW | PTE_NX,
            Self::ReadExec => page | PTE_P,
            Self::ReadWriteExec => page | PTE_P | PTE_RW,
        }
    }

    /// Whether the host mapping of the page is made read-only too.
    fn host_read_only(self) -> bool {
        matches!(self, Self::Read | Self::ReadExec)
    }
}

/// The protection of the page at `page`: below the image, the boot data
/// `boot` read-only and nothing else present; the image's pages as its
/// `segments` say (the union, where two share a page); all else RW+NX.
pub fn page_prot(page: u64, boot: &Range<u64>, segments: &[(Range<u64>, Protection)]) -> PageProt {
    if page < HVT_GUEST_MIN_BASE {
        return if boot.contains(&page) {
            PageProt::Read
        } else {
            PageProt::Absent
        };
    }
    let (mut any, mut write, mut exec) = (false, false, false);
    for (range, prot) in segments {
        if page < range.end && range.start < page + PAGE {
            any = true;
            match prot {
                Protection::Read => {}
                Protection::ReadWrite => write = true,
                Protection::ReadExec => exec = true,
            }
        }
    }
    match (any, write, exec) {
        (false, _, _) | (true, true, false) => PageProt::ReadWrite,
        (true, false, false) => PageProt::Read,
        (true, false, true) => PageProt::ReadExec,
        (true, true, true) => PageProt::ReadWriteExec,
    }
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

/// Writes the page tables identity-mapping guest memory, with the boot data
/// at `boot` and the image's `segments` (see the module's documentation):
/// the page directory of the first GiB at [`layout::PDE_BASE`], those of
/// the others and the 4 KiB page tables from `boot.end`.
fn page_tables(
    mem: &mut GuestMemory,
    boot: &Range<u64>,
    kernel_end: u64,
    segments: &[(Range<u64>, Protection)],
    solo5: bool,
    ring: Option<Range<u64>>,
) -> Result<(), BootError> {
    let nx = if solo5 { 0 } else { PTE_NX };
    let mem_size = mem.size();
    let big = layout::GUEST_PAGE_SIZE;
    let directories = mem_size.div_ceil(GIB);
    let tables = kernel_end.div_ceil(big).max(1);
    let pd_at = |i: u64| {
        if i == 0 {
            layout::PDE_BASE
        } else {
            boot.end + (i - 1) * PAGE
        }
    };
    let pt_base = boot.end + (directories - 1) * PAGE;
    if pt_base + tables * PAGE > HVT_GUEST_MIN_BASE || tables * big > mem_size {
        return Err(BootError::TablesTooLarge {
            mem_mb: mem_size >> 20,
            kernel_end,
        });
    }
    if let Some(ring) = &ring
        && pt_base + tables * PAGE > ring.start
    {
        return Err(BootError::NoRoomForRing);
    }
    mem.write(
        layout::PML4_BASE,
        &(layout::PDPTE_BASE | PTE_P | PTE_RW).to_le_bytes(),
    )?;
    let pdpt: Vec<u64> = (0..directories)
        .map(|i| pd_at(i) | PTE_P | PTE_RW)
        .collect();
    mem.write(layout::PDPTE_BASE, &words(&pdpt))?;
    for d in 0..directories {
        let first = d * 512;
        let last = (mem_size / big).min(first + 512);
        let entries: Vec<u64> = (first..last)
            .map(|c| {
                if c < tables {
                    (pt_base + c * PAGE) | PTE_P | PTE_RW
                } else {
                    (c * big) | PTE_P | PTE_RW | PTE_PS | nx
                }
            })
            .collect();
        mem.write(pd_at(d), &words(&entries))?;
    }
    for c in 0..tables {
        let entries: Vec<u64> = (0..512)
            .map(|j| {
                let page = c * big + j * PAGE;
                if ring.as_ref().is_some_and(|r| r.contains(&page)) {
                    return PageProt::ReadWrite.pte_for(page, solo5);
                }
                page_prot(page, boot, segments).pte_for(page, solo5)
            })
            .collect();
        mem.write(pt_base + c * PAGE, &words(&entries))?;
    }
    Ok(())
}

/// `values` as little-endian bytes.
fn words(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Makes read-only in the host mapping the pages the guest maps R or R+X:
/// the boot data and the image's read-only segments.
fn protect(
    mem: &mut GuestMemory,
    host_boot: &Range<u64>,
    boot: &Range<u64>,
    kernel_end: u64,
    segments: &[(Range<u64>, Protection)],
) -> Result<(), BootError> {
    let mut run: Option<Range<u64>> = None;
    let end = kernel_end.div_ceil(PAGE) * PAGE;
    let mut page = boot.start;
    while page <= end {
        let in_boot = boot.contains(&page);
        let ro = page < end
            && (!in_boot || host_boot.contains(&page))
            && page_prot(page, boot, segments).host_read_only();
        match (&mut run, ro) {
            (Some(r), true) if r.end == page => r.end += PAGE,
            (_, true) => {
                if let Some(r) = run.take() {
                    mem.protect(r.start, r.end)?;
                }
                run = Some(page..page + PAGE);
            }
            (_, false) => {
                if let Some(r) = run.take() {
                    mem.protect(r.start, r.end)?;
                }
            }
        }
        page += PAGE;
    }
    Ok(())
}

/// Writes page tables, GDT, boot info, manifest and command line, then
/// write-protects what the guest may only read.
pub fn setup(mem: &mut GuestMemory, params: &BootParams<'_>) -> Result<(), BootError> {
    let cmdline = cmdline(params.args)?;
    let mem_size = mem.size();

    for (i, desc) in GDT.iter().enumerate() {
        mem.write(layout::GDT_BASE + i as u64 * 8, &desc.to_le_bytes())?;
    }

    // Solo5's five fields, then always the ring's three (zero when no ring
    // is offered), so a guest reading `host_features` finds a defined
    // value, never the manifest's first word.
    let bi_size = std::mem::size_of::<HvtBootInfo>() as u64;
    let ring_size = std::mem::size_of::<HvtBootInfoRing>() as u64;
    let mft_gpa = align8(layout::BOOT_INFO_BASE + bi_size + ring_size);
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
    mem.write(layout::BOOT_INFO_BASE, bi.as_bytes())?;
    let ring = HvtBootInfoRing {
        host_features: if params.ring.is_some() {
            HVT_FEATURE_RING_IO
        } else {
            0
        },
        guest_features: 0,
        net_ring: params.ring.unwrap_or(0),
    };
    mem.write(
        layout::BOOT_INFO_BASE + HVT_BOOT_INFO_RING_OFFSET,
        ring.as_bytes(),
    )?;
    let boot_end = (cmdline_gpa + cmdline.len() as u64).div_ceil(PAGE) * PAGE;
    let boot = layout::BOOT_INFO_BASE..boot_end;
    page_tables(
        mem,
        &boot,
        params.kernel_end,
        params.segments,
        params.solo5_protection,
        params
            .ring
            .map(|r| r..r + RING_SIZE_BYTES.div_ceil(PAGE) * PAGE),
    )?;
    // Under --solo5-protection only the image's read-only segments are
    // write-protected in the host mapping, as solo5-hvt's loader does.
    let host_boot = if params.solo5_protection {
        boot.start..boot.start
    } else {
        boot.clone()
    };
    protect(mem, &host_boot, &boot, params.kernel_end, params.segments)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_protected_as_solo5_does_and_data_is_not_executable() {
        let boot = 0x5000..0x8000;
        let segments = [
            (0x10_0000..0x10_2800, Protection::ReadExec),
            (0x10_3000..0x10_3100, Protection::Read),
            // Shares its first page with the read-only segment.
            (0x10_3100..0x10_5000, Protection::ReadWrite),
        ];
        let prot = |page| page_prot(page, &boot, &segments);
        assert_eq!(prot(0), PageProt::Absent);
        assert_eq!(prot(0x1000), PageProt::Absent, "GDT");
        assert_eq!(prot(0x2000), PageProt::Absent, "page tables");
        assert_eq!(prot(0x5000), PageProt::Read);
        assert_eq!(prot(0x7000), PageProt::Read);
        assert_eq!(prot(0x8000), PageProt::Absent);
        assert_eq!(prot(0xf_f000), PageProt::Absent);
        assert_eq!(prot(0x10_0000), PageProt::ReadExec);
        assert_eq!(prot(0x10_2000), PageProt::ReadExec);
        assert_eq!(prot(0x10_3000), PageProt::ReadWrite);
        assert_eq!(prot(0x10_4000), PageProt::ReadWrite);
        assert_eq!(prot(0x10_5000), PageProt::ReadWrite, "heap");
        assert_eq!(PageProt::ReadWrite.pte(0x10_5000) & PTE_NX, PTE_NX);
        assert_eq!(PageProt::ReadExec.pte(0x10_0000) & (PTE_NX | PTE_RW), 0);
        assert_eq!(PageProt::Read.pte(0x5000) & PTE_RW, 0);
    }

    #[test]
    fn the_ring_is_mapped_and_kept_clear_of_the_tables() {
        let mut mem = GuestMemory::new(512 << 20).unwrap();
        let boot = 0x5000..0x8000;
        let ring = Some(0xf_3000..0x10_0000);
        page_tables(&mut mem, &boot, 0x10_2000, &[], false, ring.clone()).unwrap();
        // The first 2 MiB's table follows the boot data: the ring's PTEs
        // are present, writable, not executable.
        let pte = u64::from_le_bytes(mem.read_array::<8>(0x8000 + 0xf3 * 8).unwrap());
        assert_eq!(pte, 0xf_3000 | PTE_P | PTE_RW | PTE_NX);
        let below = u64::from_le_bytes(mem.read_array::<8>(0x8000 + 0xf2 * 8).unwrap());
        assert_eq!(below, 0, "the page below the ring stays absent");
        // An image of 480 MiB needs 240 tables: they fit below the image,
        // not below the ring.
        assert!(matches!(
            page_tables(&mut mem, &boot, 480 << 20, &[], false, ring),
            Err(BootError::NoRoomForRing)
        ));
        page_tables(&mut mem, &boot, 480 << 20, &[], false, None).unwrap();
    }

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
