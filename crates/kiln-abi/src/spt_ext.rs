//! kiln's extension to the spt ABI (not part of Solo5): a block right after
//! the boot info by which a guest finds that its tender is kiln-spt, and
//! the stop request (`docs/hvt-extensions.md`, "STOP", spt).
//!
//! # Discovery
//!
//! kiln-spt writes an [`SptExt`] at [`SPT_EXT_BASE`], between the boot info
//! and the manifest, and points the boot info's `mft` and `cmdline` past
//! it. A guest believes the block only when both pointers lie past its end
//! and its `magic` is [`SPT_EXT_MAGIC`] ([`present`]): under a tender
//! without it (Solo5's `solo5-spt`) the command line or the manifest
//! starts there, and the pointers say so.
//!
//! # STOP
//!
//! With [`crate::hvt_ext::KILN_FEATURE_STOP`] in `features`, a guest that
//! handles stop requests writes [`KILN_STOP_ACK`] to the word at
//! `stop_ack` (a page the tender shares with the guest process and reads
//! when a signal comes). From then on the tender turns the first SIGTERM or
//! SIGINT into an event in the guest's epoll set whose `data.u64` is
//! [`KILN_SPT_STOP_EVENT`] (reported once). A second signal, or a signal
//! before the guest acknowledged, ends the tender by that signal, as
//! solo5-spt (which is the guest's process) ends.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::spt::{SPT_BOOT_INFO_BASE, SptBootInfo};

/// Where the block sits: right after the 40-byte boot info.
pub const SPT_EXT_BASE: u64 = SPT_BOOT_INFO_BASE + core::mem::size_of::<SptBootInfo>() as u64;

/// `magic` of the block: `"kiln-spt"`.
pub const SPT_EXT_MAGIC: u64 = u64::from_le_bytes(*b"kiln-spt");

/// What a guest writes to the `stop_ack` word to declare that it handles
/// stop requests: `"stop-ok\0"`.
pub const KILN_STOP_ACK: u64 = u64::from_le_bytes(*b"stop-ok\0");

/// The `data.u64` of the stop event in the epoll set (`~2U`: never a
/// handle, and not `SPT_INTERNAL_TIMERFD`).
pub const KILN_SPT_STOP_EVENT: u64 = !2u32 as u64;

const _: () = assert!(KILN_SPT_STOP_EVENT != crate::spt::SPT_INTERNAL_TIMERFD);

/// kiln-spt's block after the boot info. All OUT.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SptExt {
    /// OUT: [`SPT_EXT_MAGIC`].
    pub magic: u64,
    /// OUT: the extensions offered (`kiln_abi::hvt_ext` feature bits).
    pub features: u64,
    /// OUT: address of the word a guest writes [`KILN_STOP_ACK`] to, or 0.
    pub stop_ack: u64,
}

const _: () = assert!(core::mem::size_of::<SptExt>() == 24);
const _: () = assert!(core::mem::offset_of!(SptExt, magic) == 0);
const _: () = assert!(core::mem::offset_of!(SptExt, features) == 8);
const _: () = assert!(core::mem::offset_of!(SptExt, stop_ack) == 16);

/// The first address past the block.
pub const SPT_EXT_END: u64 = SPT_EXT_BASE + core::mem::size_of::<SptExt>() as u64;

/// Whether a block at [`SPT_EXT_BASE`] can be kiln's, given the boot info
/// (read at [`SPT_BOOT_INFO_BASE`]): the command line and the manifest
/// both start past it. The caller then checks `magic`.
pub const fn may_follow(bi: &SptBootInfo) -> bool {
    bi.mft >= SPT_EXT_END && bi.cmdline >= SPT_EXT_END
}

/// Whether `ext`, read at [`SPT_EXT_BASE`] under boot info `bi`, is kiln's.
pub const fn present(bi: &SptBootInfo, ext: &SptExt) -> bool {
    may_follow(bi) && ext.magic == SPT_EXT_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bi(mft: u64, cmdline: u64) -> SptBootInfo {
        SptBootInfo {
            mft,
            cmdline,
            ..SptBootInfo::default()
        }
    }

    #[test]
    fn the_block_is_believed_only_before_the_manifest_and_command_line() {
        let ext = SptExt {
            magic: SPT_EXT_MAGIC,
            features: 1 << 8,
            stop_ack: 0x7f00_0000_0800,
        };
        assert!(present(&bi(SPT_EXT_END, SPT_EXT_END + 200), &ext));
        // solo5-spt's layout: the command line right after the boot info.
        assert!(!present(&bi(SPT_EXT_BASE + 100, SPT_EXT_BASE), &ext));
        assert!(!present(&bi(SPT_EXT_BASE, SPT_EXT_BASE + 300), &ext));
        let other = SptExt { magic: 0, ..ext };
        assert!(!present(&bi(SPT_EXT_END, SPT_EXT_END + 200), &other));
    }

    #[test]
    fn constants_spell_what_they_say() {
        assert_eq!(&SPT_EXT_MAGIC.to_le_bytes(), b"kiln-spt");
        assert_eq!(&KILN_STOP_ACK.to_le_bytes(), b"stop-ok\0");
        assert_eq!(SPT_EXT_BASE, SPT_BOOT_INFO_BASE + 40);
        assert_eq!(SptExt::default().as_bytes().len(), 24);
    }
}
