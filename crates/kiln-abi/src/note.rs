//! ELF notes: the Solo5 note header and the ABI note (`elf_abi.h`; note
//! layout from the System V gABI, "Note Section").
//!
//! A note is a 12-byte header (`namesz`, `descsz`, `type`), the name padded
//! to 4 bytes, then the descriptor padded to 4 bytes. Solo5 notes are named
//! `"Solo5"` (`namesz` 6, padded to 8), so their descriptor starts 20 bytes
//! into the note. Tenders walk the notes of a `PT_NOTE` segment with the
//! `object` crate's note iterator, at this 4-byte alignment whatever the
//! segment's `p_align` says (Solo5's tenders read the descriptor at offset
//! 20 the same way).

use thiserror::Error;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

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

/// Whether a note's name (its `namesz` bytes, padding excluded) and type
/// are those of a Solo5 note of type `kind`.
pub fn is_solo5_note(name: &[u8], note_type: u32, kind: u32) -> bool {
    name == &SOLO5_NOTE_NAME[..SOLO5_NOTE_NAMESZ as usize] && note_type == kind
}

/// Errors from reading ELF notes or encoding Solo5 notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NoteError {
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

/// The header of a Solo5 note: `Elf64_Nhdr` followed by the padded name
/// (`struct abi1_nhdr`, `struct mft1_nhdr`). All fields are IN: written by
/// the guest's build, read by the tender.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
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
        Self::read_from_bytes(desc).map_err(|_| NoteError::AbiDescSize { len: desc.len() })
    }
}

/// `struct abi1_note`: the whole ABI note as it sits in `.note.solo5.abi`.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
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
}

/// The name of kiln's own notes (`"kiln"`, `namesz` 5, padded to 8):
/// Solo5's tenders look only for notes named `"Solo5"` and skip it.
pub const KILN_NOTE_NAME: [u8; 8] = *b"kiln\0\0\0\0";
/// `namesz` of a kiln note (`sizeof("kiln")`, terminator included).
pub const KILN_NOTE_NAMESZ: u32 = 5;
/// Note type of kiln's guest-features note: `"KFT1"` read as a
/// little-endian `u32`.
pub const KILN_FEATURES_NOTE_TYPE: u32 = u32::from_le_bytes(*b"KFT1");
/// Section holding kiln's guest-features note (its own `PT_NOTE` segment
/// in kiln-solo5's linker script).
pub const KILN_FEATURES_NOTE_SECTION: &str = ".note.kiln.features";
/// Guest feature (in the features note): every net device's frames may
/// carry a virtio-net header, if the tender negotiated it and says so
/// ([`crate::hvt_ext::KILN_FEATURE_VNET_HDR`]). Declared in the image
/// because the tender must open the tap with `IFF_VNET_HDR` before the
/// guest runs.
pub const KILN_GUEST_VNET_HDR: u32 = 1 << 0;

/// Whether a note's name and type are those of kiln's guest-features note.
pub fn is_kiln_features_note(name: &[u8], note_type: u32) -> bool {
    name == &KILN_NOTE_NAME[..KILN_NOTE_NAMESZ as usize] && note_type == KILN_FEATURES_NOTE_TYPE
}

/// kiln's guest-features note, as it sits in `.note.kiln.features`: the
/// extensions a kiln guest can use that the tender must prepare before it
/// runs. All fields IN. A tender reads `features` from the descriptor's
/// first 4 bytes and ignores the rest (for later fields).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KilnFeaturesNote {
    /// IN: the note header (name `"kiln"`, type
    /// [`KILN_FEATURES_NOTE_TYPE`], `descsz` 8).
    pub header: NoteHeader,
    /// IN: `KILN_GUEST_*` bits.
    pub features: u32,
    /// IN: reserved, zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<KilnFeaturesNote>() == 28);
const _: () = assert!(core::mem::offset_of!(KilnFeaturesNote, features) == 20);

impl KilnFeaturesNote {
    /// The note declaring `features`.
    pub const fn new(features: u32) -> Self {
        Self {
            header: NoteHeader {
                namesz: KILN_NOTE_NAMESZ,
                descsz: 8,
                kind: KILN_FEATURES_NOTE_TYPE,
                name: KILN_NOTE_NAME,
            },
            features,
            reserved: 0,
        }
    }

    /// The guest features of a features note's descriptor (0 when it is
    /// shorter than 4 bytes).
    pub fn parse(desc: &[u8]) -> u32 {
        desc.get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kiln_features_note_is_named_kiln() {
        let note = KilnFeaturesNote::new(KILN_GUEST_VNET_HDR);
        let bytes = note.as_bytes();
        assert_eq!(
            &bytes[..12],
            [5, 0, 0, 0, 8, 0, 0, 0, b'K', b'F', b'T', b'1']
        );
        assert_eq!(&bytes[12..20], b"kiln\0\0\0\0");
        assert!(is_kiln_features_note(b"kiln\0", KILN_FEATURES_NOTE_TYPE));
        assert!(!is_kiln_features_note(b"Solo5\0", KILN_FEATURES_NOTE_TYPE));
        assert!(!is_solo5_note(b"kiln\0", ABI_NOTE_TYPE, ABI_NOTE_TYPE));
        assert_eq!(KilnFeaturesNote::parse(&bytes[20..]), KILN_GUEST_VNET_HDR);
        assert_eq!(KilnFeaturesNote::parse(&[1, 0]), 0);
    }

    #[test]
    fn abi_note_bytes_match_elf_abi_h() {
        let note = AbiNote::hvt();
        assert_eq!(
            note.as_bytes(),
            [
                6, 0, 0, 0, 16, 0, 0, 0, b'A', b'B', b'I', b'1', b'S', b'o', b'l', b'o', b'5', 0,
                0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        let (header, desc) = NoteHeader::read_from_prefix(note.as_bytes()).unwrap();
        assert!(is_solo5_note(
            &header.name[..header.namesz as usize],
            header.kind,
            ABI_NOTE_TYPE
        ));
        let info = AbiInfo::parse(desc).unwrap();
        assert_eq!(info.target, AbiTarget::Hvt as u32);
        assert_eq!(info.version, 2);
    }

    #[test]
    fn only_solo5_names_and_the_type_asked_for_match() {
        assert!(is_solo5_note(b"Solo5\0", MFT_NOTE_TYPE, MFT_NOTE_TYPE));
        assert!(!is_solo5_note(b"Solo5\0", ABI_NOTE_TYPE, MFT_NOTE_TYPE));
        assert!(!is_solo5_note(b"Solo5", ABI_NOTE_TYPE, ABI_NOTE_TYPE));
        assert!(!is_solo5_note(b"Solo5\0\0\0", ABI_NOTE_TYPE, ABI_NOTE_TYPE));
        assert!(!is_solo5_note(b"GNU\0", ABI_NOTE_TYPE, ABI_NOTE_TYPE));
    }

    #[test]
    fn abi_desc_of_wrong_size_is_refused() {
        assert_eq!(
            AbiInfo::parse(&[0; 12]),
            Err(NoteError::AbiDescSize { len: 12 })
        );
        assert_eq!(
            AbiInfo::parse(&[0; 20]),
            Err(NoteError::AbiDescSize { len: 20 })
        );
    }
}
