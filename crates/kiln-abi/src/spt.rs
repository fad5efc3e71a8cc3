//! The spt ABI (`spt_abi.h`, x86_64): boot info and low memory layout.
//!
//! An spt guest runs as the tender's own process after a seccomp filter is
//! installed; it reaches the host through the few system calls the filter
//! allows, on the descriptors the boot info names.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// ABI version the ABI note of an spt image carries (kiln implements
/// version 2 on both targets).
pub const SPT_ABI_VERSION: u32 = 2;
/// `SPT_GUEST_MIN_BASE`: lowest address a segment may be loaded at.
pub const SPT_GUEST_MIN_BASE: u64 = 0x10_0000;
/// `SPT_HOST_MEM_BASE`: lowest address the tender maps guest memory at.
pub const SPT_HOST_MEM_BASE: u64 = 0x1_0000;
/// `SPT_BOOT_INFO_BASE`: where the boot info sits.
pub const SPT_BOOT_INFO_BASE: u64 = SPT_HOST_MEM_BASE + 0x1000;
/// `SPT_CMDLINE_SIZE`: most bytes of the command line, terminator included.
pub const SPT_CMDLINE_SIZE: usize = 8192;
/// Largest single block request (`pread64`/`pwrite64`) the spt tender's
/// seccomp filter allows, in bytes (or one sector, if sectors are larger).
/// The guest's spt block device splits requests to this size; tender and
/// guest must agree.
pub const SPT_BLOCK_MAX_REQUEST: u64 = 64 * 1024;
/// `SPT_INTERNAL_TIMERFD`: the `data.u64` of the timerfd in the epoll set
/// (`~1U`, so never a valid handle).
pub const SPT_INTERNAL_TIMERFD: u64 = !1u32 as u64;

/// `struct spt_boot_info`: passed in `%rdi` to the entry point. All OUT.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SptBootInfo {
    /// OUT: guest memory size in bytes.
    pub mem_size: u64,
    /// OUT: first address after the loaded image.
    pub kernel_end: u64,
    /// OUT: address of the NUL-terminated command line.
    pub cmdline: u64,
    /// OUT: address of the manifest (`struct mft`), attached entries filled in.
    pub mft: u64,
    /// OUT: the epoll set `yield` waits on; each attached device's fd is in
    /// it with `data.u64` = its handle.
    pub epollfd: i32,
    /// OUT: the timerfd `yield` arms for its deadline.
    pub timerfd: i32,
}

const _: () = assert!(core::mem::size_of::<SptBootInfo>() == 40);
const _: () = assert!(core::mem::offset_of!(SptBootInfo, mem_size) == 0);
const _: () = assert!(core::mem::offset_of!(SptBootInfo, kernel_end) == 8);
const _: () = assert!(core::mem::offset_of!(SptBootInfo, cmdline) == 16);
const _: () = assert!(core::mem::offset_of!(SptBootInfo, mft) == 24);
const _: () = assert!(core::mem::offset_of!(SptBootInfo, epollfd) == 32);
const _: () = assert!(core::mem::offset_of!(SptBootInfo, timerfd) == 36);
