//! The image validator both tenders share: checks a static x86_64 ELF
//! executable against the hvt or spt ABI ([`Target`]) and describes the
//! segments to load, with their page protections.
//!
//! Spec: the System V gABI (ELF header, program headers, notes) and Solo5's
//! `elf_abi.h` / `mft_abi.h` / `hvt_abi.h` / `spt_abi.h`. [`Image::parse`]
//! is pure (no memory, no I/O) so that it can be tested with byte fixtures
//! and fuzzed. Like Solo5's loader it refuses segments that are both
//! writable and executable; on spt, which protects whole host pages, it also
//! refuses two segments that share a page (on hvt, only overlapping ones).

use std::marker::PhantomData;

use kiln_abi::AbiTarget;
use kiln_abi::mft::{Manifest, MftError};
use kiln_abi::note::{
    ABI_NOTE_TYPE, AbiInfo, KilnFeaturesNote, MFT_NOTE_TYPE, NOTE_ALIGN, NoteError,
    is_kiln_features_note, is_solo5_note,
};
use object::LittleEndian as LE;
use object::elf::{self, FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader, NoteIterator, ProgramHeader};
use thiserror::Error;

use crate::target::Target;

/// Most loadable segments an image may have.
pub const MAX_SEGMENTS: usize = 64;
/// The host page size, the unit of segment protection on spt.
pub const PAGE_SIZE: u64 = 0x1000;

/// Why an image was refused by the tender of target `T`.
#[derive(Debug, Error)]
pub enum ElfError<T: Target> {
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
    /// A note that does not fit in its segment.
    #[error("segment {index}: malformed ELF note")]
    Note {
        /// Program header index.
        index: usize,
        /// The problem.
        #[source]
        source: object::read::Error,
    },
    /// A malformed ABI note descriptor.
    #[error("segment {index}: malformed Solo5 ABI note")]
    AbiNote {
        /// Program header index.
        index: usize,
        /// The problem.
        #[source]
        source: NoteError,
    },
    /// No ABI note.
    #[error(
        "no Solo5 ABI note (section .note.solo5.abi in a PT_NOTE segment); hint: is this an {} image built by kiln or Solo5?",
        T::NAME
    )]
    NoAbiNote,
    /// No manifest note.
    #[error(
        "no Solo5 manifest note (section .note.solo5.manifest in a PT_NOTE segment); hint: is this an {} image built by kiln or Solo5?",
        T::NAME
    )]
    NoManifest,
    /// Two notes of one kind.
    #[error("more than one Solo5 {kind} note")]
    DuplicateNote {
        /// "ABI" or "manifest".
        kind: &'static str,
    },
    /// A target other than the tender's.
    #[error("image is built for the {name} target, not {}{hint}", T::NAME)]
    AbiTarget {
        /// The target's name.
        name: String,
        /// A hint, if there is a tender for it.
        hint: &'static str,
    },
    /// An ABI version other than kiln's.
    #[error(
        "image uses {} ABI version {found}, {} implements version {}; hint: rebuild the image with this kiln",
        T::NAME,
        T::TENDER,
        T::ABI_VERSION
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
        "segment {index} starts at {vaddr:#x}, below {min:#x} where {}; hint: link the image at {min:#x} or above",
        T::LOW_MEMORY,
        min = T::GUEST_MIN_BASE
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
    /// Two segments overlap (on spt: share a page).
    #[error("segments {first} and {second} {}", T::OVERLAP)]
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
    /// Never constructed: carries the target type.
    #[doc(hidden)]
    #[error("unreachable")]
    _Target(std::convert::Infallible, PhantomData<T>),
}

/// Page protection of a segment (never writable and executable at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Read only.
    Read,
    /// Read and write.
    ReadWrite,
    /// Read and execute.
    ReadExec,
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
    /// The protection of its pages.
    pub prot: Protection,
}

impl Segment<'_> {
    /// The page-aligned range the segment's pages cover.
    pub fn pages(&self) -> (u64, u64) {
        let start = self.vaddr & !(PAGE_SIZE - 1);
        // `vaddr + memsz <= mem_size` was checked, so this cannot overflow.
        let end = (self.vaddr + self.memsz).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        (start, end)
    }
}

/// A validated image for the tender of target `T`.
#[derive(Debug, Clone)]
pub struct Image<'a, T: Target> {
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
    /// The guest features of kiln's features note (`kiln_abi::note`,
    /// `KILN_GUEST_*`), 0 without one (every Solo5 image).
    pub kiln_features: u32,
    /// The target the image was checked against.
    pub target: PhantomData<T>,
}

fn header_error<T: Target>(e: object::read::Error) -> ElfError<T> {
    ElfError::Header(e.to_string())
}

impl<'a, T: Target> Image<'a, T> {
    /// Validates `data` as an image of target `T` for a guest of `mem_size`
    /// bytes (page-aligned): ELF header, notes, manifest, segments, entry
    /// point.
    pub fn parse(data: &'a [u8], mem_size: u64) -> Result<Self, ElfError<T>> {
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

        let (abi, manifest, kiln_features) = read_notes(phdrs, data)?;
        let segments = read_segments(phdrs, data, mem_size)?;

        let entry = header.e_entry(LE);
        let in_code = segments.iter().any(|s| {
            s.prot == Protection::ReadExec
                && entry >= s.vaddr
                && entry - s.vaddr < s.file.len() as u64
        });
        if !in_code {
            return Err(ElfError::EntryOutside { entry });
        }
        let kernel_end = segments
            .iter()
            .map(|s| s.pages().1)
            .max()
            .unwrap_or(T::GUEST_MIN_BASE);
        Ok(Self {
            entry,
            kernel_end,
            segments,
            abi,
            manifest,
            kiln_features,
            target: PhantomData,
        })
    }
}

fn read_notes<'a, T: Target>(
    phdrs: &[ProgramHeader64<LE>],
    data: &'a [u8],
) -> Result<(AbiInfo, Manifest<'a>, u32), ElfError<T>> {
    let mut abi = None;
    let mut manifest = None;
    let mut kiln_features = 0;
    for (index, ph) in phdrs.iter().enumerate() {
        if ph.p_type(LE) != elf::PT_NOTE {
            continue;
        }
        let bytes = ph.data(LE, data).map_err(|()| ElfError::SegmentData {
            index,
            offset: ph.p_offset(LE),
            size: ph.p_filesz(LE),
        })?;
        // Solo5's notes are 4-byte aligned whatever `p_align` says (its
        // tenders read the descriptor 20 bytes into the note), so the
        // segment's alignment is not asked.
        let notes = NoteIterator::<FileHeader64<LE>>::new(LE, NOTE_ALIGN as u64, bytes)
            .map_err(|source| ElfError::Note { index, source })?;
        for note in notes {
            let note = note.map_err(|source| ElfError::Note { index, source })?;
            let (name, kind) = (note.name_bytes(), note.n_type(LE).0);
            if is_solo5_note(name, kind, ABI_NOTE_TYPE) {
                if abi.is_some() {
                    return Err(ElfError::DuplicateNote { kind: "ABI" });
                }
                abi = Some(
                    AbiInfo::parse(note.desc())
                        .map_err(|source| ElfError::AbiNote { index, source })?,
                );
            } else if is_solo5_note(name, kind, MFT_NOTE_TYPE) {
                if manifest.is_some() {
                    return Err(ElfError::DuplicateNote { kind: "manifest" });
                }
                manifest = Some(note.desc());
            } else if is_kiln_features_note(name, kind) {
                // Several are one declaration: the union of their bits.
                kiln_features |= KilnFeaturesNote::parse(note.desc());
            }
        }
    }
    let abi = abi.ok_or(ElfError::NoAbiNote)?;
    match AbiTarget::from_u32(abi.target) {
        Some(target) if target == T::ABI => {}
        Some(AbiTarget::Hvt) => {
            return Err(ElfError::AbiTarget {
                name: "hvt".into(),
                hint: "; hint: run it with kiln-hvt",
            });
        }
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
    if abi.version != T::ABI_VERSION {
        return Err(ElfError::AbiVersion { found: abi.version });
    }
    let desc = manifest.ok_or(ElfError::NoManifest)?;
    let manifest = Manifest::from_note_desc(desc)?;
    Ok((abi, manifest, kiln_features))
}

fn read_segments<'a, T: Target>(
    phdrs: &[ProgramHeader64<LE>],
    data: &'a [u8],
    mem_size: u64,
) -> Result<Vec<Segment<'a>>, ElfError<T>> {
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
        if vaddr < T::GUEST_MIN_BASE {
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
        let (w, x) = (flags & elf::PF_W.0 != 0, flags & elf::PF_X.0 != 0);
        let prot = match (w, x) {
            (true, true) => return Err(ElfError::SegmentWx { index, vaddr }),
            (true, false) => Protection::ReadWrite,
            (false, true) => Protection::ReadExec,
            (false, false) => Protection::Read,
        };
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
            prot,
        });
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }
    segments.sort_by_key(|s| s.vaddr);
    for pair in segments.windows(2) {
        let apart = |a: &Segment<'_>, b: &Segment<'_>| {
            if T::PAGE_PROTECTED {
                a.pages().1 <= b.pages().0
            } else {
                a.vaddr + a.memsz <= b.vaddr
            }
        };
        if let [a, b] = pair
            && !apart(a, b)
        {
            return Err(ElfError::SegmentOverlap {
                first: a.index.min(b.index),
                second: a.index.max(b.index),
            });
        }
    }
    Ok(segments)
}
