//! The image loader: validates a static x86_64 ELF executable against the
//! hvt ABI and copies its segments into guest memory.
//!
//! Like Solo5's loader it refuses segments that are both writable and
//! executable.
//!
//! Spec: the System V gABI (ELF header, program headers, notes) and Solo5's
//! `elf_abi.h` / `mft_abi.h` for the two notes. [`Image::parse`] is pure (no
//! guest memory, no I/O) so that it can be fuzzed; [`Image::load`] writes
//! through the checked guest memory accessor.

use kiln_abi::AbiTarget;
use kiln_abi::hvt::{HVT_ABI_VERSION, HVT_GUEST_MIN_BASE};
use kiln_abi::mft::{Manifest, MftError};
use kiln_abi::note::{AbiInfo, NoteError, Notes};
use object::LittleEndian as LE;
use object::elf::{self, FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader, ProgramHeader};
use thiserror::Error;

use crate::guest::{GuestMemError, GuestMemory};

/// Most loadable segments an image may have.
pub const MAX_SEGMENTS: usize = 64;
/// Page size segments' ends are rounded to for `kernel_end`.
const PAGE_SIZE: u64 = 0x1000;

/// Why an image was refused.
#[derive(Debug, Error)]
pub enum ElfError {
    /// Not a 64-bit little-endian ELF file, or its header is cut short.
    #[error("not a 64-bit little-endian ELF file ({0})")]
    Header(String),
    /// The machine is not x86_64.
    #[error("ELF machine is {found}, expected x86_64 (62)")]
    Machine {
        /// `e_machine`.
        found: u16,
    },
    /// Not `ET_EXEC`.
    #[error("ELF type is {found}, expected a static executable (ET_EXEC, 2)")]
    Type {
        /// `e_type`.
        found: u16,
    },
    /// The program header table is malformed.
    #[error("bad program header table ({0})")]
    ProgramHeaders(String),
    /// A segment's file bytes are not inside the file.
    #[error("segment {index}: file range (offset {offset:#x}, size {size:#x}) is outside the file")]
    SegmentData {
        /// Program header index.
        index: usize,
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        size: u64,
    },
    /// A malformed note.
    #[error("segment {index}: malformed ELF note")]
    Note {
        /// Program header index.
        index: usize,
        /// The problem.
        #[source]
        source: NoteError,
    },
    /// No ABI note.
    #[error(
        "no Solo5 ABI note (section .note.solo5.abi in a PT_NOTE segment); hint: is this an hvt image built by kiln or Solo5?"
    )]
    NoAbiNote,
    /// No manifest note.
    #[error(
        "no Solo5 manifest note (section .note.solo5.manifest in a PT_NOTE segment); hint: is this an hvt image built by kiln or Solo5?"
    )]
    NoManifest,
    /// Two notes of one kind.
    #[error("more than one Solo5 {kind} note")]
    DuplicateNote {
        /// "ABI" or "manifest".
        kind: &'static str,
    },
    /// A target other than hvt.
    #[error("image is built for the {name} target, not hvt{hint}")]
    AbiTarget {
        /// The target's name.
        name: String,
        /// A hint, if there is a tender for it.
        hint: &'static str,
    },
    /// An hvt ABI version other than kiln's.
    #[error(
        "image uses hvt ABI version {found}, kiln-hvt implements version {HVT_ABI_VERSION}; hint: rebuild the image with this kiln"
    )]
    AbiVersion {
        /// The version in the note.
        found: u32,
    },
    /// The manifest is invalid.
    #[error("invalid manifest")]
    Manifest(#[from] MftError),
    /// No loadable segment.
    #[error("no loadable (PT_LOAD) segment")]
    NoSegments,
    /// Too many loadable segments.
    #[error("{count} loadable segments, at most {MAX_SEGMENTS} are supported")]
    TooManySegments {
        /// How many.
        count: usize,
    },
    /// `p_memsz < p_filesz`.
    #[error("segment {index}: memory size {memsz:#x} is smaller than its file size {filesz:#x}")]
    SegmentMemsz {
        /// Program header index.
        index: usize,
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// `p_vaddr + p_memsz` overflows.
    #[error("segment {index}: address {vaddr:#x} + size {memsz:#x} overflows")]
    SegmentOverflow {
        /// Program header index.
        index: usize,
        /// `p_vaddr`.
        vaddr: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// Below the tender's low memory.
    #[error(
        "segment {index} starts at {vaddr:#x}, below {HVT_GUEST_MIN_BASE:#x} where the boot info and page tables live; hint: link the image at {HVT_GUEST_MIN_BASE:#x} or above"
    )]
    SegmentLow {
        /// Program header index.
        index: usize,
        /// `p_vaddr`.
        vaddr: u64,
    },
    /// Past the end of guest memory.
    #[error(
        "segment {index} ({vaddr:#x}..{end:#x}) does not fit in guest memory (0..{mem_size:#x}); hint: give more memory with --mem=MB if the image is meant to be that large"
    )]
    SegmentOutside {
        /// Program header index.
        index: usize,
        /// Start.
        vaddr: u64,
        /// End.
        end: u64,
        /// Guest memory size.
        mem_size: u64,
    },
    /// A segment both writable and executable.
    #[error(
        "segment {index} at {vaddr:#x} is both writable and executable; hint: link code and data into separate segments"
    )]
    SegmentWx {
        /// Program header index.
        index: usize,
        /// `p_vaddr`.
        vaddr: u64,
    },
    /// Two segments overlap.
    #[error("segments {first} and {second} overlap in memory")]
    SegmentOverlap {
        /// One program header index.
        first: usize,
        /// The other.
        second: usize,
    },
    /// The entry point is not in executable loaded bytes.
    #[error("entry point {entry:#x} is not inside the file bytes of an executable PT_LOAD segment")]
    EntryOutside {
        /// `e_entry`.
        entry: u64,
    },
}

/// One loadable segment, validated.
#[derive(Debug, Clone)]
pub struct Segment<'a> {
    /// Program header index.
    pub index: usize,
    /// Load address.
    pub vaddr: u64,
    /// Size in memory (the part past `file` is zero).
    pub memsz: u64,
    /// The file bytes.
    pub file: &'a [u8],
    /// Whether the segment is executable.
    pub executable: bool,
}

/// A validated hvt image.
#[derive(Debug, Clone)]
pub struct Image<'a> {
    /// The entry point.
    pub entry: u64,
    /// First page-aligned address after every segment.
    pub kernel_end: u64,
    /// The loadable segments, sorted by address.
    pub segments: Vec<Segment<'a>>,
    /// The ABI note.
    pub abi: AbiInfo,
    /// The manifest.
    pub manifest: Manifest<'a>,
}

fn header_error(e: object::read::Error) -> ElfError {
    ElfError::Header(e.to_string())
}

impl<'a> Image<'a> {
    /// Validates `data` as an hvt image for a guest of `mem_size` bytes: ELF
    /// header, notes, manifest, segments, entry point.
    pub fn parse(data: &'a [u8], mem_size: u64) -> Result<Self, ElfError> {
        let header = FileHeader64::<LE>::parse(data).map_err(header_error)?;
        if !header.is_little_endian() {
            return Err(ElfError::Header("big-endian".into()));
        }
        let machine = header.e_machine(LE).0;
        if machine != elf::EM_X86_64.0 {
            return Err(ElfError::Machine { found: machine });
        }
        let kind = header.e_type(LE).0;
        if kind != elf::ET_EXEC.0 {
            return Err(ElfError::Type { found: kind });
        }
        let phdrs: &[ProgramHeader64<LE>] = header
            .program_headers(LE, data)
            .map_err(|e| ElfError::ProgramHeaders(e.to_string()))?;

        let (abi, manifest) = read_notes(phdrs, data)?;
        let segments = read_segments(phdrs, data, mem_size)?;

        let entry = header.e_entry(LE);
        let in_code = segments
            .iter()
            .any(|s| s.executable && entry >= s.vaddr && entry - s.vaddr < s.file.len() as u64);
        if !in_code {
            return Err(ElfError::EntryOutside { entry });
        }
        let end = segments
            .iter()
            .map(|s| s.vaddr + s.memsz)
            .max()
            .unwrap_or(HVT_GUEST_MIN_BASE);
        // `end <= mem_size`, a multiple of the page size, so this cannot
        // overflow or pass `mem_size` when mem_size is page-aligned.
        let kernel_end = end.div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE);
        Ok(Self {
            entry,
            kernel_end,
            segments,
            abi,
            manifest,
        })
    }

    /// Copies the segments into `mem`, which must be freshly zeroed (the
    /// part of each segment past its file bytes is left as is).
    pub fn load(&self, mem: &mut GuestMemory) -> Result<(), GuestMemError> {
        for s in &self.segments {
            mem.write(s.vaddr, s.file)?;
        }
        Ok(())
    }
}

fn read_notes<'a>(
    phdrs: &[ProgramHeader64<LE>],
    data: &'a [u8],
) -> Result<(AbiInfo, Manifest<'a>), ElfError> {
    let mut abi = None;
    let mut manifest = None;
    for (index, ph) in phdrs.iter().enumerate() {
        if ph.p_type(LE) != elf::PT_NOTE {
            continue;
        }
        let bytes = ph.data(LE, data).map_err(|()| ElfError::SegmentData {
            index,
            offset: ph.p_offset(LE),
            size: ph.p_filesz(LE),
        })?;
        for note in Notes::new(bytes) {
            let note = note.map_err(|source| ElfError::Note { index, source })?;
            if note.is_abi() {
                if abi.is_some() {
                    return Err(ElfError::DuplicateNote { kind: "ABI" });
                }
                abi = Some(
                    note.abi_info()
                        .map_err(|source| ElfError::Note { index, source })?,
                );
            } else if note.is_manifest() {
                if manifest.is_some() {
                    return Err(ElfError::DuplicateNote { kind: "manifest" });
                }
                manifest = Some(note.desc);
            }
        }
    }
    let abi = abi.ok_or(ElfError::NoAbiNote)?;
    match AbiTarget::from_u32(abi.target) {
        Some(AbiTarget::Hvt) => {}
        Some(AbiTarget::Spt) => {
            return Err(ElfError::AbiTarget {
                name: "spt".into(),
                hint: "; hint: run it with kiln-spt",
            });
        }
        Some(other) => {
            return Err(ElfError::AbiTarget {
                name: other.name().into(),
                hint: "",
            });
        }
        None => {
            return Err(ElfError::AbiTarget {
                name: format!("unknown ({})", abi.target),
                hint: "",
            });
        }
    }
    if abi.version != HVT_ABI_VERSION {
        return Err(ElfError::AbiVersion { found: abi.version });
    }
    let desc = manifest.ok_or(ElfError::NoManifest)?;
    let manifest = Manifest::from_note_desc(desc)?;
    Ok((abi, manifest))
}

fn read_segments<'a>(
    phdrs: &[ProgramHeader64<LE>],
    data: &'a [u8],
    mem_size: u64,
) -> Result<Vec<Segment<'a>>, ElfError> {
    let mut segments = Vec::new();
    for (index, ph) in phdrs.iter().enumerate() {
        if ph.p_type(LE) != elf::PT_LOAD {
            continue;
        }
        let vaddr = ph.p_vaddr(LE);
        let filesz = ph.p_filesz(LE);
        let memsz = ph.p_memsz(LE);
        if memsz == 0 {
            continue;
        }
        if segments.len() == MAX_SEGMENTS {
            let count = phdrs
                .iter()
                .filter(|p| p.p_type(LE) == elf::PT_LOAD)
                .count();
            return Err(ElfError::TooManySegments { count });
        }
        if memsz < filesz {
            return Err(ElfError::SegmentMemsz {
                index,
                filesz,
                memsz,
            });
        }
        let end = vaddr.checked_add(memsz).ok_or(ElfError::SegmentOverflow {
            index,
            vaddr,
            memsz,
        })?;
        if vaddr < HVT_GUEST_MIN_BASE {
            return Err(ElfError::SegmentLow { index, vaddr });
        }
        if end > mem_size {
            return Err(ElfError::SegmentOutside {
                index,
                vaddr,
                end,
                mem_size,
            });
        }
        let flags = ph.p_flags(LE).0;
        if flags & elf::PF_W.0 != 0 && flags & elf::PF_X.0 != 0 {
            return Err(ElfError::SegmentWx { index, vaddr });
        }
        let file = ph.data(LE, data).map_err(|()| ElfError::SegmentData {
            index,
            offset: ph.p_offset(LE),
            size: filesz,
        })?;
        segments.push(Segment {
            index,
            vaddr,
            memsz,
            file,
            executable: flags & elf::PF_X.0 != 0,
        });
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }
    segments.sort_by_key(|s| s.vaddr);
    for pair in segments.windows(2) {
        if let [a, b] = pair
            && a.vaddr + a.memsz > b.vaddr
        {
            return Err(ElfError::SegmentOverlap {
                first: a.index.min(b.index),
                second: a.index.max(b.index),
            });
        }
    }
    Ok(segments)
}
