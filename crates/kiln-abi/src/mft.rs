//! The application manifest (`mft_abi.h`): entry layout, the note a guest
//! emits, and the checked parser tenders use.
//!
//! The manifest is `struct mft`: a version, an entry count, then that many
//! 104-byte `struct mft_entry`. Entry 0 is always the reserved entry
//! (`MFT_RESERVED_FIRST`, empty name); a device's handle is its index. In the
//! ELF note the manifest starts 24 bytes in: after the 20-byte header and 4
//! bytes of padding that `descsz` counts ([`MFT_NOTE_DESC_PAD`]). The tender
//! copies the manifest into guest memory, fills in each attached entry's OUT
//! fields and hands the guest its address in the boot info.

use core::fmt;

use thiserror::Error;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::note::{MFT_NOTE_TYPE, NoteError, NoteHeader};

/// `MFT_VERSION`: the manifest format version.
pub const MFT_VERSION: u32 = 1;
/// `MFT_NAME_SIZE`: bytes of an entry's name field, terminator included.
pub const MFT_NAME_SIZE: usize = 68;
/// `MFT_NAME_MAX`: longest device name, in characters.
pub const MFT_NAME_MAX: usize = 67;
/// `MFT_MAX_ENTRIES`: most entries a manifest may have, the reserved one
/// included (a handle set is a 64-bit mask).
pub const MFT_MAX_ENTRIES: usize = 64;
/// Size of `struct mft_entry`.
pub const MFT_ENTRY_SIZE: usize = 104;
/// Size of the `struct mft` header (`version`, `entries`).
pub const MFT_HEADER_SIZE: usize = 8;
/// Padding at the start of the manifest note's descriptor: the descriptor
/// starts 20 bytes into the note, `struct mft` at 24 (`MFT1_NOTE_ALIGN`).
pub const MFT_NOTE_DESC_PAD: usize = 4;
/// Largest `descsz` of a valid manifest note (`MFT1_NOTE_MAX_SIZE`).
pub const MFT_NOTE_MAX_DESCSZ: usize =
    MFT_NOTE_DESC_PAD + MFT_HEADER_SIZE + MFT_MAX_ENTRIES * MFT_ENTRY_SIZE;
/// Offset of the `attached` field in an entry.
pub const MFT_ENTRY_ATTACHED_OFFSET: usize = core::mem::offset_of!(MftEntry, attached);

/// `enum mft_type`: what a manifest entry declares.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MftType {
    /// `MFT_DEV_BLOCK_BASIC`: a block device.
    BlockBasic = 1,
    /// `MFT_DEV_NET_BASIC`: a network interface.
    NetBasic = 2,
    /// `MFT_RESERVED_FIRST`: the reserved entry 0 (and the start of the
    /// reserved range).
    ReservedFirst = 1 << 30,
}

impl MftType {
    /// Decodes a `type` field.
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::BlockBasic),
            2 => Some(Self::NetBasic),
            v if v == 1 << 30 => Some(Self::ReservedFirst),
            _ => None,
        }
    }

    /// The type's name as tenders print it (`NET_BASIC`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::BlockBasic => "BLOCK_BASIC",
            Self::NetBasic => "NET_BASIC",
            Self::ReservedFirst => "RESERVED_FIRST",
        }
    }
}

/// The `u` union of `struct mft_entry`: the properties of an attached device,
/// OUT (filled in by the tender in the guest's copy). Stored as two words so
/// that the type has no invalid bit patterns; read it with the accessors.
///
/// As `struct mft_block_basic`: `capacity: u64` at 0, `block_size: u16` at 8.
/// As `struct mft_net_basic`: `mac: [u8; 6]` at 0, `mtu: u16` at 6.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MftDeviceInfo {
    /// OUT: the raw union (little-endian, x86_64).
    pub words: [u64; 2],
}

const _: () = assert!(core::mem::size_of::<MftDeviceInfo>() == 16);

impl MftDeviceInfo {
    /// Block device properties: capacity in bytes, sector size in bytes.
    pub const fn block(capacity: u64, block_size: u16) -> Self {
        Self {
            words: [capacity, block_size as u64],
        }
    }

    /// Network interface properties: MAC address and MTU.
    pub const fn net(mac: [u8; 6], mtu: u16) -> Self {
        let mut w = [0u8; 8];
        let mut i = 0;
        while i < 6 {
            w[i] = mac[i];
            i += 1;
        }
        let m = mtu.to_le_bytes();
        w[6] = m[0];
        w[7] = m[1];
        Self {
            words: [u64::from_le_bytes(w), 0],
        }
    }

    /// `block_basic.capacity`: capacity in bytes.
    pub const fn block_capacity(&self) -> u64 {
        self.words[0]
    }

    /// `block_basic.block_size`: sector size in bytes.
    pub const fn block_size(&self) -> u16 {
        self.words[1] as u16
    }

    /// `net_basic.mac`.
    pub const fn net_mac(&self) -> [u8; 6] {
        let b = self.words[0].to_le_bytes();
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    /// `net_basic.mtu`.
    pub const fn net_mtu(&self) -> u16 {
        (self.words[0] >> 48) as u16
    }
}

/// `struct mft_entry`: one device of the manifest. Plain integers only, so a
/// guest may view the tender's copy of the manifest in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MftEntry {
    /// IN: the device name, NUL-terminated.
    pub name: [u8; MFT_NAME_SIZE],
    /// IN: an [`MftType`] value.
    pub kind: u32,
    /// OUT: the device's properties, valid when `attached` is 1.
    pub info: MftDeviceInfo,
    /// The `b` union of Solo5's entry. OUT on spt: the host descriptor
    /// (`b.hostfd`, a C int in the low 4 bytes) the guest's system calls
    /// name for this device. On hvt it is tender-private (`b.data`) and zero
    /// in the copy a kiln tender gives the guest.
    pub backing: u64,
    /// OUT: 1 when the tender attached a host resource to the device, else 0
    /// (a C `bool`).
    pub attached: u8,
    /// Padding to the entry's 8-byte alignment.
    pub pad: [u8; 7],
}

const _: () = assert!(core::mem::size_of::<MftEntry>() == MFT_ENTRY_SIZE);
const _: () = assert!(core::mem::align_of::<MftEntry>() == 8);
const _: () = assert!(core::mem::offset_of!(MftEntry, name) == 0);
const _: () = assert!(core::mem::offset_of!(MftEntry, kind) == 68);
const _: () = assert!(core::mem::offset_of!(MftEntry, info) == 72);
const _: () = assert!(core::mem::offset_of!(MftEntry, backing) == 88);
const _: () = assert!(core::mem::offset_of!(MftEntry, attached) == 96);

/// Whether `b` may appear in a device name: `[A-Za-z0-9_-]`.
pub const fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl MftEntry {
    const fn with_name(kind: MftType, name: &str) -> Self {
        let b = name.as_bytes();
        assert!(!b.is_empty(), "manifest device name is empty");
        assert!(
            b.len() <= MFT_NAME_MAX,
            "manifest device name is longer than MFT_NAME_MAX (67) bytes"
        );
        let mut out = [0u8; MFT_NAME_SIZE];
        let mut i = 0;
        while i < b.len() {
            assert!(
                is_name_byte(b[i]),
                "manifest device name has a character outside [A-Za-z0-9_-]"
            );
            out[i] = b[i];
            i += 1;
        }
        Self {
            name: out,
            kind: kind as u32,
            info: MftDeviceInfo { words: [0, 0] },
            backing: 0,
            attached: 0,
            pad: [0; 7],
        }
    }

    /// A network interface named `name` (panics, at compile time in a
    /// `static`, on an invalid name).
    pub const fn net(name: &str) -> Self {
        Self::with_name(MftType::NetBasic, name)
    }

    /// A block device named `name` (panics, at compile time in a `static`, on
    /// an invalid name).
    pub const fn block(name: &str) -> Self {
        Self::with_name(MftType::BlockBasic, name)
    }

    /// The reserved entry 0: empty name, `MFT_RESERVED_FIRST`.
    pub const fn reserved() -> Self {
        Self {
            name: [0; MFT_NAME_SIZE],
            kind: MftType::ReservedFirst as u32,
            info: MftDeviceInfo { words: [0, 0] },
            backing: 0,
            attached: 0,
            pad: [0; 7],
        }
    }

    /// The name up to its terminator, if it is terminated and valid UTF-8.
    pub fn name_str(&self) -> Option<&str> {
        let end = self.name.iter().position(|&b| b == 0)?;
        core::str::from_utf8(&self.name[..end]).ok()
    }

    const fn same_name(&self, other: &Self) -> bool {
        let mut i = 0;
        while i < MFT_NAME_SIZE {
            if self.name[i] != other.name[i] {
                return false;
            }
            i += 1;
        }
        true
    }
}

/// The header of `struct mft`: what precedes its entries.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MftHeader {
    /// IN: [`MFT_VERSION`].
    pub version: u32,
    /// IN: number of entries, the reserved one included.
    pub entries: u32,
}

const _: () = assert!(core::mem::size_of::<MftHeader>() == MFT_HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(MftHeader, version) == 0);
const _: () = assert!(core::mem::offset_of!(MftHeader, entries) == 4);

/// `struct mft` with the reserved entry and `N` devices.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mft<const N: usize> {
    /// IN: [`MFT_VERSION`].
    pub version: u32,
    /// IN: number of entries, the reserved one included (`N + 1`).
    pub entries: u32,
    /// IN: entry 0, [`MftEntry::reserved`].
    pub reserved: MftEntry,
    /// IN (name, type) / OUT (info, attached): entries 1 to `N`.
    pub devices: [MftEntry; N],
}

const _: () = assert!(core::mem::offset_of!(Mft<1>, reserved) == MFT_HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(Mft<1>, devices) == MFT_HEADER_SIZE + MFT_ENTRY_SIZE);
const _: () = assert!(core::mem::size_of::<Mft<2>>() == MFT_HEADER_SIZE + 3 * MFT_ENTRY_SIZE);

/// `struct mft1_note`: the manifest note as it sits in
/// `.note.solo5.manifest`. 4-byte aligned (`packed(4)`) so that it packs
/// after the ABI note with no gap; the `struct mft` inside stays at note
/// offset 24, as in C.
#[repr(C, packed(4))]
#[derive(Clone, Copy)]
pub struct MftNote<const N: usize> {
    /// IN: note header, type [`MFT_NOTE_TYPE`].
    pub header: NoteHeader,
    /// Padding that aligns `mft` to 8 within the note (counted by `descsz`).
    pub pad: u32,
    /// IN: the manifest.
    pub mft: Mft<N>,
}

const _: () = assert!(core::mem::align_of::<MftNote<1>>() == 4);
const _: () = assert!(core::mem::size_of::<MftNote<0>>() == 24 + 8 + 104);
const _: () = assert!(core::mem::offset_of!(MftNote<3>, mft) == 24);
const _: () = assert!(core::mem::size_of::<MftNote<63>>() == 20 + MFT_NOTE_MAX_DESCSZ);

impl<const N: usize> MftNote<N> {
    /// Size of the encoded note.
    pub const SIZE: usize = core::mem::size_of::<Self>();

    /// The manifest note declaring `devices`, in order (handles 1 to `N`).
    /// Panics (at compile time in a `static`) on more than 63 devices or a
    /// duplicate name.
    pub const fn new(devices: [MftEntry; N]) -> Self {
        assert!(
            N < MFT_MAX_ENTRIES,
            "a manifest holds at most 63 devices (MFT_MAX_ENTRIES, reserved entry included)"
        );
        let mut i = 0;
        while i < N {
            let mut j = i + 1;
            while j < N {
                assert!(
                    !devices[i].same_name(&devices[j]),
                    "two manifest devices have the same name"
                );
                j += 1;
            }
            i += 1;
        }
        Self {
            header: NoteHeader::solo5(MFT_NOTE_TYPE, (Self::SIZE - 20) as u32),
            pad: 0,
            mft: Mft {
                version: MFT_VERSION,
                entries: (N + 1) as u32,
                reserved: MftEntry::reserved(),
                devices,
            },
        }
    }

    /// Number of manifest entries, the reserved one included.
    pub const fn entry_count(&self) -> usize {
        N + 1
    }

    /// Writes the note's bytes, as they appear in the ELF file, to the start
    /// of `out`; returns how many were written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, NoteError> {
        let needed = Self::SIZE;
        let len = out.len();
        let out = out
            .get_mut(..needed)
            .ok_or(NoteError::BufferTooSmall { needed, len })?;
        let header = self.header;
        let mft = self.mft;
        let mft_header = MftHeader {
            version: mft.version,
            entries: mft.entries,
        };
        let (note_header, rest) = out.split_at_mut(core::mem::size_of::<NoteHeader>());
        note_header.copy_from_slice(header.as_bytes());
        let (pad, rest) = rest.split_at_mut(MFT_NOTE_DESC_PAD);
        pad.fill(0);
        let (mft_out, table) = rest.split_at_mut(MFT_HEADER_SIZE);
        mft_out.copy_from_slice(mft_header.as_bytes());
        let entries = core::iter::once(&mft.reserved).chain(mft.devices.iter());
        for (chunk, entry) in table.chunks_exact_mut(MFT_ENTRY_SIZE).zip(entries) {
            chunk.copy_from_slice(entry.as_bytes());
        }
        Ok(needed)
    }
}

/// A device name, kept by value so errors can show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MftName {
    bytes: [u8; MFT_NAME_SIZE],
    len: u8,
}

impl MftName {
    fn new(raw: &[u8]) -> Self {
        let len = raw.len().min(MFT_NAME_SIZE);
        let mut bytes = [0; MFT_NAME_SIZE];
        bytes[..len].copy_from_slice(&raw[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }
}

impl fmt::Display for MftName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.bytes[..usize::from(self.len)] {
            if b.is_ascii_graphic() {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for MftName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Why a manifest was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MftError {
    /// The note descriptor or manifest is shorter than its header.
    #[error("manifest is truncated: {len} bytes, the header alone takes {needed}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The manifest note's `descsz` exceeds `MFT1_NOTE_MAX_SIZE`.
    #[error("manifest note is {descsz} bytes, more than the {max} that 64 entries take")]
    NoteTooLarge {
        /// The note's `descsz`.
        descsz: usize,
        /// [`MFT_NOTE_MAX_DESCSZ`].
        max: usize,
    },
    /// `version` is not [`MFT_VERSION`].
    #[error("manifest version is {found}, expected {MFT_VERSION}")]
    Version {
        /// The version found.
        found: u32,
    },
    /// `entries` is zero or above [`MFT_MAX_ENTRIES`].
    #[error("manifest declares {entries} entries, expected 1 to {MFT_MAX_ENTRIES}")]
    EntryCount {
        /// The count found.
        entries: u32,
    },
    /// The size does not match `entries` (Solo5 requires an exact fit).
    #[error("manifest is {len} bytes but {entries} entries take {expected}")]
    SizeMismatch {
        /// Bytes present.
        len: usize,
        /// The declared entry count.
        entries: u32,
        /// Bytes those entries take.
        expected: usize,
    },
    /// Entry 0 is not the reserved entry with an empty name.
    #[error("manifest entry 0 is not the reserved entry (type MFT_RESERVED_FIRST, empty name)")]
    NoReservedFirst,
    /// A name has no NUL terminator within its 68 bytes.
    #[error("manifest entry {index} has a name without a terminator in its 68 bytes")]
    NameUnterminated {
        /// The entry.
        index: usize,
    },
    /// A name is empty or has characters outside `[A-Za-z0-9_-]`.
    #[error(
        "manifest entry {index} has an invalid name {name:?} (expected 1 to 67 of [A-Za-z0-9_-])"
    )]
    BadName {
        /// The entry.
        index: usize,
        /// The name, escaped.
        name: MftName,
    },
    /// A device entry has a type that is not a device type.
    #[error("manifest entry {index} ({name:?}) has unknown device type {kind:#x}")]
    BadType {
        /// The entry.
        index: usize,
        /// Its name.
        name: MftName,
        /// The type found.
        kind: u32,
    },
    /// Two entries have the same name.
    #[error("manifest entries {first} and {second} have the same name {name:?}")]
    DuplicateName {
        /// The first entry.
        first: usize,
        /// The second entry.
        second: usize,
        /// The name.
        name: MftName,
    },
}

/// One validated entry of a [`Manifest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MftEntryRef<'a> {
    /// The entry's index, which is also the device's handle.
    pub index: usize,
    /// The device name.
    pub name: &'a str,
    /// The device type.
    pub kind: MftType,
}

/// A validated manifest (`struct mft`) borrowed from note or memory bytes.
#[derive(Clone, Copy, Debug)]
pub struct Manifest<'a> {
    bytes: &'a [u8],
    entries: usize,
}

fn entry_name(entry: &[u8], index: usize) -> Result<&[u8], MftError> {
    let name = entry.get(..MFT_NAME_SIZE).unwrap_or(&[]);
    let end = name
        .iter()
        .position(|&b| b == 0)
        .ok_or(MftError::NameUnterminated { index })?;
    Ok(&name[..end])
}

/// The `type` of an entry's bytes (`MFT_ENTRY_SIZE` of them; 0 if fewer).
fn entry_kind(entry: &[u8]) -> u32 {
    MftEntry::read_from_bytes(entry).map_or(0, |e| e.kind)
}

impl<'a> Manifest<'a> {
    /// Validates the descriptor of a manifest note (padding, then
    /// `struct mft`).
    pub fn from_note_desc(desc: &'a [u8]) -> Result<Self, MftError> {
        if desc.len() > MFT_NOTE_MAX_DESCSZ {
            return Err(MftError::NoteTooLarge {
                descsz: desc.len(),
                max: MFT_NOTE_MAX_DESCSZ,
            });
        }
        let mft = desc.get(MFT_NOTE_DESC_PAD..).ok_or(MftError::Truncated {
            len: desc.len(),
            needed: MFT_NOTE_DESC_PAD + MFT_HEADER_SIZE,
        })?;
        Self::new_checked(mft)
    }

    /// Validates `bytes` as a whole `struct mft`: version, entry count,
    /// exact size, the reserved entry 0, then every device entry's name
    /// (terminated, 1 to 67 of `[A-Za-z0-9_-]`, unique) and type.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, MftError> {
        let (MftHeader { version, entries }, _) =
            MftHeader::read_from_prefix(bytes).map_err(|_| MftError::Truncated {
                len: bytes.len(),
                needed: MFT_HEADER_SIZE,
            })?;
        if version != MFT_VERSION {
            return Err(MftError::Version { found: version });
        }
        if entries == 0 || entries as usize > MFT_MAX_ENTRIES {
            return Err(MftError::EntryCount { entries });
        }
        let count = entries as usize;
        let expected = MFT_HEADER_SIZE + count * MFT_ENTRY_SIZE;
        if bytes.len() != expected {
            return Err(MftError::SizeMismatch {
                len: bytes.len(),
                entries,
                expected,
            });
        }
        let table = &bytes[MFT_HEADER_SIZE..];
        for (index, entry) in table.chunks_exact(MFT_ENTRY_SIZE).enumerate() {
            let name = entry_name(entry, index)?;
            let kind = entry_kind(entry);
            if index == 0 {
                if kind != MftType::ReservedFirst as u32 || !name.is_empty() {
                    return Err(MftError::NoReservedFirst);
                }
                continue;
            }
            if name.is_empty() || !name.iter().all(|&b| is_name_byte(b)) {
                return Err(MftError::BadName {
                    index,
                    name: MftName::new(name),
                });
            }
            match MftType::from_u32(kind) {
                Some(MftType::BlockBasic | MftType::NetBasic) => {}
                _ => {
                    return Err(MftError::BadType {
                        index,
                        name: MftName::new(name),
                        kind,
                    });
                }
            }
            for (first, other) in table.chunks_exact(MFT_ENTRY_SIZE).enumerate().take(index) {
                if first > 0 && entry_name(other, first)? == name {
                    return Err(MftError::DuplicateName {
                        first,
                        second: index,
                        name: MftName::new(name),
                    });
                }
            }
        }
        Ok(Self {
            bytes,
            entries: count,
        })
    }

    /// The manifest's bytes (`struct mft`), as validated.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of entries, the reserved one included.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether the manifest declares no device (only the reserved entry).
    pub fn is_empty(&self) -> bool {
        self.entries <= 1
    }

    /// Entry `index` (0 is the reserved entry).
    pub fn entry(&self, index: usize) -> Option<MftEntryRef<'a>> {
        if index >= self.entries {
            return None;
        }
        let start = MFT_HEADER_SIZE + index * MFT_ENTRY_SIZE;
        let entry = self.bytes.get(start..start + MFT_ENTRY_SIZE)?;
        let name = core::str::from_utf8(entry_name(entry, index).ok()?).ok()?;
        let kind = MftType::from_u32(entry_kind(entry))?;
        Some(MftEntryRef { index, name, kind })
    }

    /// A copy of entry `index` as `struct mft_entry`, with the OUT fields
    /// (`info`, `backing`, `attached`) a tender filled in.
    pub fn raw_entry(&self, index: usize) -> Option<MftEntry> {
        if index >= self.entries {
            return None;
        }
        let start = entry_offset(index);
        let entry = self.bytes.get(start..start + MFT_ENTRY_SIZE)?;
        MftEntry::read_from_bytes(entry).ok()
    }

    /// The device entries (1 to `len() - 1`).
    pub fn devices(&self) -> impl Iterator<Item = MftEntryRef<'a>> + '_ {
        (1..self.entries).filter_map(|i| self.entry(i))
    }

    /// The device entry named `name`.
    pub fn find(&self, name: &str) -> Option<MftEntryRef<'a>> {
        self.devices().find(|e| e.name == name)
    }
}

/// Byte offset of entry `index` within a `struct mft`.
pub const fn entry_offset(index: usize) -> usize {
    MFT_HEADER_SIZE + index * MFT_ENTRY_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    static TWO: MftNote<2> = MftNote::new([MftEntry::net("service"), MftEntry::block("disk")]);

    fn encoded<const N: usize>(note: &MftNote<N>) -> ([u8; 1024], usize) {
        let mut buf = [0u8; 1024];
        let n = note.encode(&mut buf).unwrap();
        (buf, n)
    }

    #[test]
    fn note_layout_matches_mft_abi_h() {
        let (buf, n) = encoded(&TWO);
        assert_eq!(n, 24 + 8 + 3 * 104);
        // namesz, descsz = 12 + 3 * 104, type "MFT1", "Solo5"
        assert_eq!(&buf[0..4], &6u32.to_le_bytes());
        assert_eq!(&buf[4..8], &(12u32 + 3 * 104).to_le_bytes());
        assert_eq!(&buf[8..12], b"MFT1");
        assert_eq!(&buf[12..20], b"Solo5\0\0\0");
        assert_eq!(&buf[24..28], &1u32.to_le_bytes());
        assert_eq!(&buf[28..32], &3u32.to_le_bytes());
        // entry 0 reserved: type at 32 + 68
        assert_eq!(&buf[100..104], &(1u32 << 30).to_le_bytes());
        // entry 1: "service", NET_BASIC
        assert_eq!(&buf[136..143], b"service");
        assert_eq!(&buf[136 + 68..136 + 72], &2u32.to_le_bytes());
    }

    #[test]
    fn emitted_note_round_trips_through_the_parser() {
        let (buf, n) = encoded(&TWO);
        let header = NoteHeader::read_from_prefix(&buf[..n]).unwrap().0;
        assert_eq!(header, NoteHeader::solo5(MFT_NOTE_TYPE, (n - 20) as u32));
        let mft = Manifest::from_note_desc(&buf[20..n]).unwrap();
        assert_eq!(mft.len(), 3);
        let devices: [MftEntryRef<'_>; 2] = [mft.entry(1).unwrap(), mft.entry(2).unwrap()];
        assert_eq!(devices[0].name, "service");
        assert_eq!(devices[0].kind, MftType::NetBasic);
        assert_eq!(devices[1].name, "disk");
        assert_eq!(devices[1].kind, MftType::BlockBasic);
        assert_eq!(mft.find("disk").unwrap().index, 2);
        assert!(mft.entry(3).is_none());
    }

    fn manifest_bytes(note: &MftNote<2>) -> ([u8; 1024], usize) {
        let (buf, n) = encoded(note);
        let mut out = [0u8; 1024];
        out[..n - 24].copy_from_slice(&buf[24..n]);
        (out, n - 24)
    }

    #[test]
    fn bad_manifests_are_refused() {
        let (good, n) = manifest_bytes(&TWO);
        assert!(Manifest::new_checked(&good[..n]).is_ok());

        let mut b = good;
        b[0] = 2;
        assert_eq!(
            Manifest::new_checked(&b[..n]).unwrap_err(),
            MftError::Version { found: 2 }
        );

        let mut b = good;
        b[4..8].copy_from_slice(&65u32.to_le_bytes());
        assert_eq!(
            Manifest::new_checked(&b[..n]).unwrap_err(),
            MftError::EntryCount { entries: 65 }
        );

        let mut b = good;
        b[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            Manifest::new_checked(&b[..n]),
            Err(MftError::EntryCount { entries: 0 })
        ));

        assert!(matches!(
            Manifest::new_checked(&good[..n - 1]),
            Err(MftError::SizeMismatch { .. })
        ));
        assert!(matches!(
            Manifest::new_checked(&good[..3]),
            Err(MftError::Truncated { .. })
        ));

        // Unterminated name in entry 1.
        let mut b = good;
        let e1 = entry_offset(1);
        b[e1..e1 + 68].fill(b'a');
        assert_eq!(
            Manifest::new_checked(&b[..n]).unwrap_err(),
            MftError::NameUnterminated { index: 1 }
        );

        // Bad characters.
        let mut b = good;
        b[e1] = b' ';
        assert!(matches!(
            Manifest::new_checked(&b[..n]),
            Err(MftError::BadName { index: 1, .. })
        ));

        // Empty name.
        let mut b = good;
        b[e1] = 0;
        assert!(matches!(
            Manifest::new_checked(&b[..n]),
            Err(MftError::BadName { index: 1, .. })
        ));

        // Duplicate names.
        let mut b = good;
        let e2 = entry_offset(2);
        b.copy_within(e1..e1 + 68, e2);
        assert!(matches!(
            Manifest::new_checked(&b[..n]),
            Err(MftError::DuplicateName {
                first: 1,
                second: 2,
                ..
            })
        ));

        // Unknown type, and the reserved type in a device entry.
        for kind in [7u32, 1 << 30] {
            let mut b = good;
            b[e2 + 68..e2 + 72].copy_from_slice(&kind.to_le_bytes());
            assert!(matches!(
                Manifest::new_checked(&b[..n]),
                Err(MftError::BadType { index: 2, .. })
            ));
        }

        // Entry 0 not reserved.
        let mut b = good;
        b[8 + 68..8 + 72].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            Manifest::new_checked(&b[..n]).unwrap_err(),
            MftError::NoReservedFirst
        );
    }

    #[test]
    fn oversized_note_is_refused() {
        let desc = [0u8; MFT_NOTE_MAX_DESCSZ + 1];
        assert!(matches!(
            Manifest::from_note_desc(&desc),
            Err(MftError::NoteTooLarge { .. })
        ));
    }

    #[test]
    fn device_info_accessors() {
        let net = MftDeviceInfo::net([1, 2, 3, 4, 5, 6], 1500);
        assert_eq!(net.net_mac(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(net.net_mtu(), 1500);
        let blk = MftDeviceInfo::block(1 << 20, 512);
        assert_eq!(blk.block_capacity(), 1 << 20);
        assert_eq!(blk.block_size(), 512);
    }

    #[test]
    fn empty_manifest_has_only_the_reserved_entry() {
        let note: MftNote<0> = MftNote::new([]);
        let (buf, n) = encoded(&note);
        let mft = Manifest::from_note_desc(&buf[20..n]).unwrap();
        assert!(mft.is_empty());
        assert_eq!(mft.devices().count(), 0);
    }
}
