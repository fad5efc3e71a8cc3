//! ELF notes: the Solo5 note header, the ABI note and a checked note iterator
//! (`elf_abi.h`; note layout from the System V gABI, "Note Section").
//!
//! A note is a 12-byte header (`namesz`, `descsz`, `type`), the name padded
//! to 4 bytes, then the descriptor padded to 4 bytes. Solo5 notes are named
//! `"Solo5"` (`namesz` 6, padded to 8), so their descriptor starts 20 bytes
//! into the note.

use thiserror::Error;

/// The name of every Solo5-owned note, NUL-terminated and padded to 4 bytes.
pub const SOLO5_NOTE_NAME: [u8; 8] = *b"Solo5\0\0\0";
/// `namesz` of a Solo5 note (`sizeof("Solo5")`, terminator included).
pub const SOLO5_NOTE_NAMESZ: u32 = 6;
/// Note type of the ABI note: `"ABI1"` read as a little-endian `u32`.
pub const ABI_NOTE_TYPE: u32 = 0x3149_4241;
/// Note type of the manifest note: `"MFT1"` read as a little-endian `u32`.
pub const MFT_NOTE_TYPE: u32 = 0x3154_464d;
/// Section holding the ABI note.
pub const ABI_NOTE_SECTION: &str = ".note.solo5.abi";
/// Section holding the manifest note.
pub const MFT_NOTE_SECTION: &str = ".note.solo5.manifest";
/// Alignment of both Solo5 notes and of the fields inside a note.
pub const NOTE_ALIGN: usize = 4;
/// Size of the fixed ELF note header (`Elf64_Nhdr`).
pub const NHDR_SIZE: usize = 12;

/// Errors from reading ELF notes or encoding Solo5 notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NoteError {
    /// Fewer than 12 bytes remain where a note header should be.
    #[error("note header at offset {offset} is truncated ({available} of 12 bytes)")]
    TruncatedHeader {
        /// Offset of the header in the note bytes.
        offset: usize,
        /// Bytes available from there.
        available: usize,
    },
    /// The name or descriptor runs past the end of the note bytes.
    #[error(
        "note at offset {offset} claims namesz {namesz} and descsz {descsz}, past the end of its {len} bytes"
    )]
    TruncatedBody {
        /// Offset of the note.
        offset: usize,
        /// Its claimed name size.
        namesz: u32,
        /// Its claimed descriptor size.
        descsz: u32,
        /// Length of the note bytes.
        len: usize,
    },
    /// The ABI note descriptor is not the 16 bytes of `struct abi1_info`.
    #[error("ABI note descriptor is {len} bytes, expected 16")]
    AbiDescSize {
        /// Its size.
        len: usize,
    },
    /// An output buffer is too small for a note.
    #[error("buffer of {len} bytes is too small for a {needed}-byte note")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        len: usize,
    },
}

/// Rounds `n` up to [`NOTE_ALIGN`], or `None` on overflow.
const fn align4(n: usize) -> Option<usize> {
    match n.checked_add(NOTE_ALIGN - 1) {
        Some(v) => Some(v & !(NOTE_ALIGN - 1)),
        None => None,
    }
}

/// Reads a little-endian `u32` at `offset`, if in bounds.
pub(crate) fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let b = bytes.get(offset..end)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The header of a Solo5 note: `Elf64_Nhdr` followed by the padded name
/// (`struct abi1_nhdr`, `struct mft1_nhdr`). All fields are IN: written by
/// the guest's build, read by the tender.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoteHeader {
    /// IN: name size, terminator included ([`SOLO5_NOTE_NAMESZ`]).
    pub namesz: u32,
    /// IN: descriptor size in bytes, internal padding included.
    pub descsz: u32,
    /// IN: note type ([`ABI_NOTE_TYPE`] or [`MFT_NOTE_TYPE`]).
    pub kind: u32,
    /// IN: [`SOLO5_NOTE_NAME`].
    pub name: [u8; 8],
}

const _: () = assert!(core::mem::size_of::<NoteHeader>() == 20);
const _: () = assert!(core::mem::offset_of!(NoteHeader, namesz) == 0);
const _: () = assert!(core::mem::offset_of!(NoteHeader, descsz) == 4);
const _: () = assert!(core::mem::offset_of!(NoteHeader, kind) == 8);
const _: () = assert!(core::mem::offset_of!(NoteHeader, name) == 12);

impl NoteHeader {
    /// A Solo5 note header of type `kind` with a descriptor of `descsz` bytes.
    pub const fn solo5(kind: u32, descsz: u32) -> Self {
        Self {
            namesz: SOLO5_NOTE_NAMESZ,
            descsz,
            kind,
            name: SOLO5_NOTE_NAME,
        }
    }

    /// Writes the header's 20 bytes to the start of `out` (which must hold them).
    pub(crate) fn write(&self, out: &mut [u8]) {
        if let Some(o) = out.get_mut(..20) {
            o[0..4].copy_from_slice(&self.namesz.to_le_bytes());
            o[4..8].copy_from_slice(&self.descsz.to_le_bytes());
            o[8..12].copy_from_slice(&self.kind.to_le_bytes());
            o[12..20].copy_from_slice(&self.name);
        }
    }
}

/// `enum abi_target`: the target an image was built for.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiTarget {
    /// hvt: a KVM (or bhyve, vmm) guest.
    Hvt = 1,
    /// spt: a seccomp-sandboxed process.
    Spt = 2,
    /// virtio (not supported by kiln).
    Virtio = 3,
    /// Muen (not supported by kiln).
    Muen = 4,
    /// Genode (not supported by kiln).
    Genode = 5,
}

impl AbiTarget {
    /// Decodes an `abi_target` value.
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Hvt),
            2 => Some(Self::Spt),
            3 => Some(Self::Virtio),
            4 => Some(Self::Muen),
            5 => Some(Self::Genode),
            _ => None,
        }
    }

    /// The target's name as tenders print it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hvt => "hvt",
            Self::Spt => "spt",
            Self::Virtio => "virtio",
            Self::Muen => "muen",
            Self::Genode => "genode",
        }
    }
}

/// `struct abi1_info`: the ABI note's descriptor. All fields IN.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiInfo {
    /// IN: an [`AbiTarget`] value.
    pub target: u32,
    /// IN: the target's ABI version ([`crate::hvt::HVT_ABI_VERSION`],
    /// [`crate::spt::SPT_ABI_VERSION`]).
    pub version: u32,
    /// IN: reserved, zero.
    pub reserved0: u32,
    /// IN: reserved, zero.
    pub reserved1: u32,
}

const _: () = assert!(core::mem::size_of::<AbiInfo>() == 16);
const _: () = assert!(core::mem::offset_of!(AbiInfo, target) == 0);
const _: () = assert!(core::mem::offset_of!(AbiInfo, version) == 4);
const _: () = assert!(core::mem::offset_of!(AbiInfo, reserved0) == 8);
const _: () = assert!(core::mem::offset_of!(AbiInfo, reserved1) == 12);

impl AbiInfo {
    /// Parses the 16-byte descriptor of an ABI note.
    pub fn parse(desc: &[u8]) -> Result<Self, NoteError> {
        if desc.len() != core::mem::size_of::<Self>() {
            return Err(NoteError::AbiDescSize { len: desc.len() });
        }
        let field = |o| read_u32(desc, o).ok_or(NoteError::AbiDescSize { len: desc.len() });
        Ok(Self {
            target: field(0)?,
            version: field(4)?,
            reserved0: field(8)?,
            reserved1: field(12)?,
        })
    }
}

/// `struct abi1_note`: the whole ABI note as it sits in `.note.solo5.abi`.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiNote {
    /// IN: the note header (type [`ABI_NOTE_TYPE`], `descsz` 16).
    pub header: NoteHeader,
    /// IN: target and version.
    pub info: AbiInfo,
}

const _: () = assert!(core::mem::size_of::<AbiNote>() == 36);
const _: () = assert!(core::mem::align_of::<AbiNote>() == 4);
const _: () = assert!(core::mem::offset_of!(AbiNote, info) == 20);

impl AbiNote {
    /// Size of the encoded note.
    pub const SIZE: usize = core::mem::size_of::<Self>();

    /// The ABI note for `target` at ABI `version`.
    pub const fn new(target: AbiTarget, version: u32) -> Self {
        Self {
            header: NoteHeader::solo5(ABI_NOTE_TYPE, core::mem::size_of::<AbiInfo>() as u32),
            info: AbiInfo {
                target: target as u32,
                version,
                reserved0: 0,
                reserved1: 0,
            },
        }
    }

    /// The ABI note of an hvt image of the version kiln implements.
    pub const fn hvt() -> Self {
        Self::new(AbiTarget::Hvt, crate::hvt::HVT_ABI_VERSION)
    }

    /// The ABI note of an spt image of the version kiln implements.
    pub const fn spt() -> Self {
        Self::new(AbiTarget::Spt, crate::spt::SPT_ABI_VERSION)
    }

    /// The note's bytes, as they appear in the ELF file.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        self.header.write(&mut out);
        out[20..24].copy_from_slice(&self.info.target.to_le_bytes());
        out[24..28].copy_from_slice(&self.info.version.to_le_bytes());
        out[28..32].copy_from_slice(&self.info.reserved0.to_le_bytes());
        out[32..36].copy_from_slice(&self.info.reserved1.to_le_bytes());
        out
    }
}

/// One note read out of note bytes; borrowed, never copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    /// Offset of the note in the bytes it was read from.
    pub offset: usize,
    /// The name, `namesz` bytes (terminator included, padding excluded).
    pub name: &'a [u8],
    /// The note type.
    pub kind: u32,
    /// The descriptor, `descsz` bytes (padding excluded).
    pub desc: &'a [u8],
}

impl<'a> Note<'a> {
    /// Whether the note is owned by Solo5 (name `"Solo5"`).
    pub fn is_solo5(&self) -> bool {
        self.name == &SOLO5_NOTE_NAME[..SOLO5_NOTE_NAMESZ as usize]
    }

    /// Whether this is the Solo5 ABI note.
    pub fn is_abi(&self) -> bool {
        self.is_solo5() && self.kind == ABI_NOTE_TYPE
    }

    /// Whether this is the Solo5 manifest note.
    pub fn is_manifest(&self) -> bool {
        self.is_solo5() && self.kind == MFT_NOTE_TYPE
    }

    /// Parses the descriptor as an ABI note's [`AbiInfo`].
    pub fn abi_info(&self) -> Result<AbiInfo, NoteError> {
        AbiInfo::parse(self.desc)
    }
}

/// Iterator over the notes in the bytes of a `PT_NOTE` segment or `SHT_NOTE`
/// section, 4-byte aligned. Yields an error (and then stops) at the first
/// note that does not fit in the bytes; never reads out of bounds.
#[derive(Clone, Debug)]
pub struct Notes<'a> {
    bytes: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Notes<'a> {
    /// Iterates over the notes in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            offset: 0,
            done: false,
        }
    }

    fn next_note(&mut self) -> Result<Option<Note<'a>>, NoteError> {
        let len = self.bytes.len();
        let offset = self.offset;
        if offset >= len {
            return Ok(None);
        }
        let truncated = NoteError::TruncatedHeader {
            offset,
            available: len - offset,
        };
        let namesz = read_u32(self.bytes, offset).ok_or(truncated)?;
        let descsz = read_u32(self.bytes, offset + 4).ok_or(truncated)?;
        let kind = read_u32(self.bytes, offset + 8).ok_or(truncated)?;
        let body = NoteError::TruncatedBody {
            offset,
            namesz,
            descsz,
            len,
        };
        let name_start = offset + NHDR_SIZE;
        let name_end = name_start.checked_add(namesz as usize).ok_or(body)?;
        let desc_start = align4(name_end).ok_or(body)?;
        let desc_end = desc_start.checked_add(descsz as usize).ok_or(body)?;
        let name = self.bytes.get(name_start..name_end).ok_or(body)?;
        let desc = self.bytes.get(desc_start..desc_end).ok_or(body)?;
        // The padding after the last descriptor may be missing.
        self.offset = align4(desc_end).unwrap_or(usize::MAX);
        Ok(Some(Note {
            offset,
            name,
            kind,
            desc,
        }))
    }
}

impl<'a> Iterator for Notes<'a> {
    type Item = Result<Note<'a>, NoteError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_note() {
            Ok(Some(note)) => Some(Ok(note)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_note_bytes_match_elf_abi_h() {
        let bytes = AbiNote::hvt().to_bytes();
        assert_eq!(
            bytes,
            [
                6, 0, 0, 0, 16, 0, 0, 0, b'A', b'B', b'I', b'1', b'S', b'o', b'l', b'o', b'5', 0,
                0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        let mut notes = Notes::new(&bytes);
        let note = notes.next().unwrap().unwrap();
        assert!(note.is_abi());
        assert!(!note.is_manifest());
        let info = note.abi_info().unwrap();
        assert_eq!(info.target, AbiTarget::Hvt as u32);
        assert_eq!(info.version, 2);
        assert!(notes.next().is_none());
    }

    #[test]
    fn truncated_notes_are_errors_not_panics() {
        let bytes = AbiNote::spt().to_bytes();
        for cut in 1..bytes.len() {
            let results: [Option<Result<Note<'_>, NoteError>>; 2] = {
                let mut it = Notes::new(&bytes[..cut]);
                [it.next(), it.next()]
            };
            assert!(matches!(results[0], Some(Err(_))), "cut at {cut}");
            assert!(results[1].is_none());
        }
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        let mut bytes = [0u8; 12];
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let first = Notes::new(&bytes).next().unwrap();
        assert!(matches!(first, Err(NoteError::TruncatedBody { .. })));
    }

    #[test]
    fn abi_desc_of_wrong_size_is_refused() {
        assert_eq!(
            AbiInfo::parse(&[0; 12]),
            Err(NoteError::AbiDescSize { len: 12 })
        );
    }
}
