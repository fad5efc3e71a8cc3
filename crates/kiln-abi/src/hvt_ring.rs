//! Solo5's ring I/O for hvt network devices (`HVT_FEATURE_RING_IO`): a
//! shared ring in guest memory through which the guest submits net writes
//! and reads that a tender thread serves, with a kick by `ioeventfd` only
//! when that thread sleeps.
//!
//! Spec: Solo5's `include/hvt_ring.h` (layout, operations, barriers), its
//! guest binding `bindings/hvt/net.c` and tender module
//! `tenders/hvt/hvt_module_net.c` (semantics); `docs/solo5-compat.md` names
//! the commits read.
//!
//! # Discovery
//!
//! The boot info grows past Solo5's five fields ([`crate::hvt::HvtBootInfo`])
//! by [`HvtBootInfoRing`] at offset [`HVT_BOOT_INFO_RING_OFFSET`]: the
//! tender's `host_features` ([`HVT_FEATURE_RING_IO`]) and the guest address
//! of the ring, `net_ring`. The guest asks nothing: a guest that reads the
//! bit uses the ring, one that does not keeps to the hypercalls.
//!
//! # Protocol
//!
//! The ring ([`HvtRing`]) holds [`HVT_RING_SIZE`] submission entries
//! ([`HvtRingEntry`], written by the guest) and as many commits
//! ([`HvtRingCommit`], written by the tender). Indices are free-running
//! `u32`s, taken modulo the size:
//!
//! - the guest fills `entries[ent_tail % SIZE]`, then increments `ent_tail`
//!   (store ordered after the entry's), then, after a full barrier, kicks
//!   (a 32-bit `out` to [`HVT_RING_KICK_PIO_BASE`]) if `needs_kick` is set;
//! - the tender serves entries from `ent_head` to the `ent_tail` it read,
//!   in order, and advances `ent_head`. A [`HVT_RING_NET_WRITE`] writes the
//!   frame `data[..len]` and is fire-and-forget (no commit). A
//!   [`HVT_RING_NET_READ`] reads one frame into `data[..len]` and posts a
//!   commit at `com_tail` (the entry's `id`, a `solo5_result_t` and the
//!   frame's length), then increments `com_tail`;
//! - the guest consumes commits from `com_head`;
//! - the tender's thread spins a while on `ent_tail`, then sets
//!   `needs_kick`, checks once more after a full barrier, and sleeps on the
//!   kick's eventfd.
//!
//! Every field is written by one side only: cache line 0 by the guest,
//! line 1 by the tender.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `HVT_FEATURE_RING_IO`: bit of `host_features` saying `net_ring` is the
/// guest address of an [`HvtRing`] the tender serves.
pub const HVT_FEATURE_RING_IO: u32 = 1 << 0;

/// `HVT_RING_SIZE`: entries (and commits) in the ring.
pub const HVT_RING_SIZE: u32 = 1024;
/// `HVT_RING_MASK`: an index modulo [`HVT_RING_SIZE`].
pub const HVT_RING_MASK: u32 = HVT_RING_SIZE - 1;
/// `HVT_RING_BUF_SIZE`: the per-slot buffer Solo5's binding copies frames
/// to; larger frames go by the NET_WRITE hypercall.
pub const HVT_RING_BUF_SIZE: u32 = 2048;
/// `HVT_RING_POLL_ITERS`: how many times the tender's thread looks at the
/// ring before it sleeps.
pub const HVT_RING_POLL_ITERS: u32 = 4096;

/// `HVT_RING_NET_WRITE`: send `data[..len]`.
pub const HVT_RING_NET_WRITE: u32 = 1;
/// `HVT_RING_NET_READ`: read one frame into `data[..len]` and commit.
pub const HVT_RING_NET_READ: u32 = 2;

/// `HVT_RING_KICK_PIO_BASE`: the port of the kick (a 32-bit `out`, any
/// value), which KVM turns into an eventfd signal without leaving the
/// kernel.
pub const HVT_RING_KICK_PIO_BASE: u16 = 0x600;

/// Offset of [`HvtBootInfoRing`] in the boot info, right after
/// [`crate::hvt::HvtBootInfo`]'s 40 bytes.
pub const HVT_BOOT_INFO_RING_OFFSET: u64 = 40;

/// The fields Solo5's ring I/O adds to `struct hvt_boot_info`, after
/// `mft`. All OUT.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvtBootInfoRing {
    /// OUT: features the tender offers ([`HVT_FEATURE_RING_IO`]).
    pub host_features: u32,
    /// Reserved for the guest's accepted features; the tender writes 0 and
    /// reads nothing back (kiln keeps the boot info read-only).
    pub guest_features: u32,
    /// OUT: guest address of the [`HvtRing`], 0 when none.
    pub net_ring: u64,
}

const _: () = assert!(core::mem::size_of::<HvtBootInfoRing>() == 16);
const _: () = assert!(core::mem::offset_of!(HvtBootInfoRing, host_features) == 0);
const _: () = assert!(core::mem::offset_of!(HvtBootInfoRing, guest_features) == 4);
const _: () = assert!(core::mem::offset_of!(HvtBootInfoRing, net_ring) == 8);
const _: () =
    assert!(HVT_BOOT_INFO_RING_OFFSET as usize == core::mem::size_of::<crate::hvt::HvtBootInfo>());

/// `struct hvt_ring_entry`: a submission, written by the guest.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvtRingEntry {
    /// IN: [`HVT_RING_NET_WRITE`] or [`HVT_RING_NET_READ`]; others are
    /// skipped.
    pub operation: u32,
    /// IN: the net device's handle (manifest index).
    pub handle: u32,
    /// IN: guest address of the frame or buffer.
    pub data: u64,
    /// IN: frame length, or buffer capacity.
    pub len: u32,
    /// IN: copied to the commit of a read.
    pub id: u32,
    /// Reserved.
    pub reserved: u64,
}

const _: () = assert!(core::mem::size_of::<HvtRingEntry>() == 32);
const _: () = assert!(core::mem::offset_of!(HvtRingEntry, operation) == 0);
const _: () = assert!(core::mem::offset_of!(HvtRingEntry, handle) == 4);
const _: () = assert!(core::mem::offset_of!(HvtRingEntry, data) == 8);
const _: () = assert!(core::mem::offset_of!(HvtRingEntry, len) == 16);
const _: () = assert!(core::mem::offset_of!(HvtRingEntry, id) == 20);

/// `struct hvt_ring_commit`: the result of a read, written by the tender.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvtRingCommit {
    /// OUT: the entry's `id`.
    pub id: u32,
    /// OUT: a [`crate::status::Solo5Result`] (`Again` when no frame
    /// waited).
    pub ret: i32,
    /// OUT: the frame's length.
    pub len: u32,
    /// Reserved.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<HvtRingCommit>() == 16);
const _: () = assert!(core::mem::offset_of!(HvtRingCommit, id) == 0);
const _: () = assert!(core::mem::offset_of!(HvtRingCommit, ret) == 4);
const _: () = assert!(core::mem::offset_of!(HvtRingCommit, len) == 8);

/// `struct hvt_ring`. The indices are shared with the other side while
/// both run: read and write them as atomics (or volatile), never through a
/// plain reference.
#[repr(C)]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvtRing {
    /// IN: entries produced by the guest.
    pub ent_tail: u32,
    /// IN: commits consumed by the guest.
    pub com_head: u32,
    /// Padding to the next cache line.
    pub pad0: [u8; 56],
    /// OUT: entries consumed by the tender.
    pub ent_head: u32,
    /// OUT: commits produced by the tender.
    pub com_tail: u32,
    /// OUT: 1 while the tender's thread sleeps (or is about to): the guest
    /// must kick after submitting.
    pub needs_kick: u32,
    /// Padding to the entries.
    pub pad1: [u8; 52],
    /// IN: submissions.
    pub entries: [HvtRingEntry; HVT_RING_SIZE as usize],
    /// OUT: commits of reads.
    pub commits: [HvtRingCommit; HVT_RING_SIZE as usize],
}

/// Offset of `ent_tail` in [`HvtRing`].
pub const RING_ENT_TAIL: u64 = core::mem::offset_of!(HvtRing, ent_tail) as u64;
/// Offset of `com_head`.
pub const RING_COM_HEAD: u64 = core::mem::offset_of!(HvtRing, com_head) as u64;
/// Offset of `ent_head`.
pub const RING_ENT_HEAD: u64 = core::mem::offset_of!(HvtRing, ent_head) as u64;
/// Offset of `com_tail`.
pub const RING_COM_TAIL: u64 = core::mem::offset_of!(HvtRing, com_tail) as u64;
/// Offset of `needs_kick`.
pub const RING_NEEDS_KICK: u64 = core::mem::offset_of!(HvtRing, needs_kick) as u64;
/// Offset of `entries`.
pub const RING_ENTRIES: u64 = core::mem::offset_of!(HvtRing, entries) as u64;
/// Offset of `commits`.
pub const RING_COMMITS: u64 = core::mem::offset_of!(HvtRing, commits) as u64;
/// Size of [`HvtRing`] in bytes.
pub const RING_SIZE_BYTES: u64 = core::mem::size_of::<HvtRing>() as u64;

const _: () = assert!(RING_ENT_TAIL == 0);
const _: () = assert!(RING_COM_HEAD == 4);
const _: () = assert!(RING_ENT_HEAD == 64);
const _: () = assert!(RING_COM_TAIL == 68);
const _: () = assert!(RING_NEEDS_KICK == 72);
const _: () = assert!(RING_ENTRIES == 128);
const _: () = assert!(RING_COMMITS == 128 + 32 * 1024);
const _: () = assert!(RING_SIZE_BYTES == 128 + 48 * 1024);

/// Offset in the ring of the entry at free-running index `index`.
pub const fn entry_offset(index: u32) -> u64 {
    RING_ENTRIES + (index & HVT_RING_MASK) as u64 * core::mem::size_of::<HvtRingEntry>() as u64
}

/// Offset in the ring of the commit at free-running index `index`.
pub const fn commit_offset(index: u32) -> u64 {
    RING_COMMITS + (index & HVT_RING_MASK) as u64 * core::mem::size_of::<HvtRingCommit>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_wrap_modulo_the_ring() {
        assert_eq!(entry_offset(0), 128);
        assert_eq!(entry_offset(1), 160);
        assert_eq!(entry_offset(HVT_RING_SIZE), 128);
        assert_eq!(entry_offset(u32::MAX), 128 + 1023 * 32);
        assert_eq!(commit_offset(3), 128 + 32 * 1024 + 48);
        assert!(commit_offset(u32::MAX) + 16 <= RING_SIZE_BYTES);
    }

    #[test]
    fn entries_decode_from_their_bytes() {
        let mut b = [0u8; 32];
        b[0] = 2;
        b[4] = 1;
        b[8..16].copy_from_slice(&0x10_2000u64.to_le_bytes());
        b[16..20].copy_from_slice(&1514u32.to_le_bytes());
        b[20] = 7;
        let e = HvtRingEntry::read_from_bytes(&b).unwrap();
        assert_eq!(
            (e.operation, e.handle, e.data, e.len, e.id),
            (HVT_RING_NET_READ, 1, 0x10_2000, 1514, 7)
        );
        let c = HvtRingCommit {
            id: 7,
            ret: 0,
            len: 60,
            reserved: 0,
        };
        assert_eq!(&c.as_bytes()[8..12], &60u32.to_le_bytes());
    }
}
