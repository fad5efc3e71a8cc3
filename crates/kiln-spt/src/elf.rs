//! The image validator: checks a static x86_64 ELF executable against the
//! spt ABI and describes the segments to load, with their page protections.
//!
//! Spec: the System V gABI (ELF header, program headers, notes) and Solo5's
//! `elf_abi.h` / `mft_abi.h` / `spt_abi.h`. [`Image::parse`] is pure (no
//! memory, no I/O) so that it can be tested with byte fixtures and fuzzed.
//! Like Solo5's loader it refuses segments that are both writable and
//! executable; since spt protects whole host pages, it also refuses two
//! segments that share a page.

use kiln_abi::AbiTarget;
use kiln_abi::mft::{Manifest, MftError};
use kiln_abi::note::{AbiInfo, NoteError, Notes};
use kiln_abi::spt::{SPT_ABI_VERSION, SPT_GUEST_MIN_BASE};
use object::LittleEndian as LE;
use object::elf::{self, FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader, ProgramHeader};
use thiserror::Error;

/// Most loadable segments an image may have.
pub const MAX_SEGMENTS: usize = 64;
/// The host page size, the unit of segment protection.
pub const PAGE_SIZE: u64 = 0x1000;

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
        "no Solo5 ABI note (section .note.solo5.abi in a PT_NOTE segment); hint: is this an spt image built by kiln or Solo5?"
    )]
    NoAbiNote,
    /// No manifest note.
    #[error(
        "no Solo5 manifest note (section .note.solo5.manifest in a PT_NOTE segment); hint: is this an spt image built by kiln or Solo5?"
    )]
    NoManifest,
    /// Two notes of one kind.
    #[error("more than one Solo5 {kind} note")]
    DuplicateNote {
        /// "ABI" or "manifest".
        kind: &'static str,
    },
    /// A target other than spt.
    #[error("image is built for the {name} target, not spt{hint}")]
    AbiTarget {
        /// The target's name.
        name: String,
        /// A hint, if there is a tender for it.
        hint: &'static str,
    },
    /// An spt ABI version other than kiln's.
    #[error(
        "image uses spt ABI version {found}, kiln-spt implements version {SPT_ABI_VERSION}; hint: rebuild the image with this kiln"
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
        "segment {index} starts at {vaddr:#x}, below {SPT_GUEST_MIN_BASE:#x} where the boot info lives; hint: link the image at {SPT_GUEST_MIN_BASE:#x} or above"
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
    /// Two segments share a page (or overlap).
    #[error(
        "segments {first} and {second} share a page; hint: page-align each segment (kiln's linker script does)"
    )]
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

/// A validated spt image.
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
    /// Validates `data` as an spt image for a guest of `mem_size` bytes
    /// (page-aligned): ELF header, notes, manifest, segments, entry point.
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
            .unwrap_or(SPT_GUEST_MIN_BASE);
        Ok(Self {
            entry,
            kernel_end,
            segments,
            abi,
            manifest,
        })
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
        Some(AbiTarget::Spt) => {}
        Some(AbiTarget::Hvt) => {
            return Err(ElfError::AbiTarget {
                name: "hvt".into(),
                hint: "; hint: run it with kiln-hvt",
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
    if abi.version != SPT_ABI_VERSION {
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
        if vaddr < SPT_GUEST_MIN_BASE {
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
        if let [a, b] = pair
            && a.pages().1 > b.pages().0
        {
            return Err(ElfError::SegmentOverlap {
                first: a.index.min(b.index),
                second: a.index.max(b.index),
            });
        }
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_abi::{AbiNote, MftEntry, MftNote};

    /// A minimal image: one R+X and one R+W segment, the two notes in a
    /// PT_NOTE segment, entry at the start of the code.
    pub(crate) fn image(abi: AbiNote, segments: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut notes = abi.to_bytes().to_vec();
        let mft: MftNote<1> = MftNote::new([MftEntry::net("service")]);
        let mut buf = [0u8; 1024];
        let n = mft.encode(&mut buf).unwrap();
        notes.extend_from_slice(&buf[..n]);
        let phnum = segments.len() + 1;
        let data_at = 64 + 56 * phnum;
        let mut out = vec![0u8; data_at];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // 64-bit
        out[5] = 1; // little-endian
        out[6] = 1;
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&segments[0].0.to_le_bytes()); // entry
        out[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        let mut ph =
            |i: usize, kind: u32, flags: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64| {
                let p = &mut out[64 + 56 * i..64 + 56 * (i + 1)];
                p[0..4].copy_from_slice(&kind.to_le_bytes());
                p[4..8].copy_from_slice(&flags.to_le_bytes());
                p[8..16].copy_from_slice(&off.to_le_bytes());
                p[16..24].copy_from_slice(&vaddr.to_le_bytes());
                p[24..32].copy_from_slice(&vaddr.to_le_bytes());
                p[32..40].copy_from_slice(&filesz.to_le_bytes());
                p[40..48].copy_from_slice(&memsz.to_le_bytes());
                p[48..56].copy_from_slice(&4u64.to_le_bytes());
            };
        let notes_at = data_at as u64;
        ph(0, 4, 4, notes_at, 0, notes.len() as u64, 0);
        for (i, &(vaddr, memsz, flags)) in segments.iter().enumerate() {
            ph(i + 1, 1, flags, notes_at, vaddr, 16, memsz);
        }
        out.extend_from_slice(&notes);
        out
    }

    const MEM: u64 = 64 << 20;

    #[test]
    fn a_valid_image_is_described() {
        let data = image(
            AbiNote::spt(),
            &[(0x10_0000, 0x1000, 5), (0x10_1000, 0x2345, 6)],
        );
        let img = Image::parse(&data, MEM).unwrap();
        assert_eq!(img.entry, 0x10_0000);
        assert_eq!(img.kernel_end, 0x10_4000);
        assert_eq!(img.segments[0].prot, Protection::ReadExec);
        assert_eq!(img.segments[1].prot, Protection::ReadWrite);
        assert_eq!(img.manifest.find("service").unwrap().index, 1);
    }

    #[test]
    fn an_hvt_image_is_refused_with_a_hint() {
        let data = image(AbiNote::hvt(), &[(0x10_0000, 0x1000, 5)]);
        let err = Image::parse(&data, MEM).unwrap_err();
        assert!(err.to_string().contains("run it with kiln-hvt"), "{err}");
    }

    #[test]
    fn bad_segments_are_refused() {
        type Case<'c> = (&'c [(u64, u64, u32)], &'c str);
        let cases: [Case<'_>; 4] = [
            (&[(0x10_0000, 0x1000, 7)], "both writable and executable"),
            (&[(0x1000, 0x1000, 5)], "below 0x100000"),
            (&[(0x10_0000, MEM, 5)], "does not fit"),
            (
                &[(0x10_0000, 0x1800, 5), (0x10_1800, 0x100, 6)],
                "share a page",
            ),
        ];
        for (segments, expected) in cases {
            let data = image(AbiNote::spt(), segments);
            let err = Image::parse(&data, MEM).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    /// The fuzz seeds (`fuzz/seeds/loader`), each valid or not as its name
    /// says. `KILN_WRITE_SEEDS=1 cargo test -p kiln-spt --lib` rewrites
    /// them from the builder above.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let ok = image(
            AbiNote::spt(),
            &[(0x10_0000, 0x1000, 5), (0x10_1000, 0x2345, 6)],
        );
        vec![
            ("ok-two-segments.elf", ok.clone()),
            (
                "bad-hvt.elf",
                image(AbiNote::hvt(), &[(0x10_0000, 0x1000, 5)]),
            ),
            (
                "bad-wx.elf",
                image(AbiNote::spt(), &[(0x10_0000, 0x1000, 7)]),
            ),
            (
                "bad-shared-page.elf",
                image(
                    AbiNote::spt(),
                    &[(0x10_0000, 0x1800, 5), (0x10_1800, 0x100, 6)],
                ),
            ),
            ("bad-truncated.elf", ok[..ok.len() - 8].to_vec()),
        ]
    }

    #[test]
    fn fuzz_seeds_parse_as_named_and_mutations_do_not_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/loader");
        if std::env::var_os("KILN_WRITE_SEEDS").is_some() {
            for (name, bytes) in seeds() {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let data = std::fs::read(&path).unwrap();
            let ok = Image::parse(&data, MEM).is_ok();
            assert_eq!(ok, name.starts_with("ok-"), "{name}");
            // Deterministic mutations: every byte set to a few values.
            for i in 0..data.len() {
                for v in [0u8, 1, 0x7f, 0xff] {
                    let mut m = data.clone();
                    m[i] = v;
                    let _ = Image::parse(&m, MEM);
                }
            }
            n += 1;
        }
        assert!(n >= 5, "only {n} seeds");
    }

    #[test]
    fn truncated_files_are_refused() {
        let data = image(AbiNote::spt(), &[(0x10_0000, 0x1000, 5)]);
        for len in [0, 10, 63, 100, data.len() - 1] {
            assert!(Image::parse(&data[..len], MEM).is_err(), "length {len}");
        }
    }
}
