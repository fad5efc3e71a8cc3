//! The hvt ABI (`hvt_abi.h`, version 2, x86_64): boot info, hypercall
//! numbers and hypercall argument structures.
//!
//! A hypercall is a 32-bit `out` to port [`HVT_HYPERCALL_PIO_BASE`]` + nr`
//! whose value is the guest-physical address of the call's argument
//! structure (guest memory is identity-mapped and below 4 GiB). The tender
//! reads the IN fields, performs the call and writes the OUT fields before
//! the guest resumes. Guest pointers inside the structures are `u64`
//! guest-physical addresses (`HVT_GUEST_PTR`), never dereferenced directly by
//! the tender.
//!
//! The tender reads an argument structure as a copy (`FromBytes`), never in
//! place. Those whose last field, `ret`, leaves trailing padding are not
//! `IntoBytes`: the tender writes back only their OUT fields, as Solo5's
//! tenders do.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `HVT_ABI_VERSION`: the version the ABI note of an hvt image carries.
pub const HVT_ABI_VERSION: u32 = 2;
/// `HVT_GUEST_MIN_BASE`: lowest address a segment may be loaded at.
pub const HVT_GUEST_MIN_BASE: u64 = 0x10_0000;
/// `HVT_HYPERCALL_PIO_BASE`: the port of hypercall 0.
pub const HVT_HYPERCALL_PIO_BASE: u16 = 0x500;
/// `HVT_CMDLINE_SIZE`: most bytes of the command line, terminator included.
pub const HVT_CMDLINE_SIZE: usize = 8192;
/// `HVT_HALT_COOKIE_MAX`: bytes the tender may read at a halt cookie.
pub const HVT_HALT_COOKIE_MAX: usize = 512;

/// Guest low memory, below [`HVT_GUEST_MIN_BASE`], as kiln's tender lays it
/// out (the values of Solo5's `hvt_cpu_x86_64.h`). A guest only relies on
/// `%rdi` pointing at the boot info; the rest is informative.
pub mod layout {
    /// The GDT (null, code, data descriptors).
    pub const GDT_BASE: u64 = 0x1000;
    /// The PML4 page table (`%cr3`).
    pub const PML4_BASE: u64 = 0x2000;
    /// The page-directory-pointer table.
    pub const PDPTE_BASE: u64 = 0x3000;
    /// The page directory of the first GiB. Those of the other GiBs and
    /// the 4 KiB page tables of the first 2 MiB and of the image follow the
    /// command line, page-aligned; none of the tables, the GDT or the null
    /// page is mapped for the guest.
    pub const PDE_BASE: u64 = 0x4000;
    /// The boot info ([`super::HvtBootInfo`] and always the net ring's
    /// fields, [`crate::hvt_ring::HvtBootInfoRing`], zero when no ring is
    /// offered), followed by the copy of the manifest (8-byte aligned) and
    /// then the command line: mapped read-only. kiln-hvt puts the net ring
    /// itself in the last pages below [`super::HVT_GUEST_MIN_BASE`].
    pub const BOOT_INFO_BASE: u64 = 0x5000;
    /// Guest memory is a multiple of this (2 MiB), the page size the
    /// tender maps it with above the image.
    pub const GUEST_PAGE_SIZE: u64 = 0x20_0000;
}

/// `struct hvt_boot_info`: passed in `%rdi` to the entry point. All OUT
/// (written by the tender before the guest starts).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvtBootInfo {
    /// OUT: guest memory size in bytes; the stack starts at its top
    /// (`%rsp = mem_size - 8`).
    pub mem_size: u64,
    /// OUT: first address after the loaded image (its highest segment end).
    pub kernel_end: u64,
    /// OUT: TSC frequency in Hz.
    pub cpu_cycle_freq: u64,
    /// OUT: guest address of the NUL-terminated command line.
    pub cmdline: u64,
    /// OUT: guest address of the manifest (`struct mft`), with each attached
    /// entry's `info` and `attached` filled in.
    pub mft: u64,
}

const _: () = assert!(core::mem::size_of::<HvtBootInfo>() == 40);
const _: () = assert!(core::mem::offset_of!(HvtBootInfo, mem_size) == 0);
const _: () = assert!(core::mem::offset_of!(HvtBootInfo, kernel_end) == 8);
const _: () = assert!(core::mem::offset_of!(HvtBootInfo, cpu_cycle_freq) == 16);
const _: () = assert!(core::mem::offset_of!(HvtBootInfo, cmdline) == 24);
const _: () = assert!(core::mem::offset_of!(HvtBootInfo, mft) == 32);

/// `enum hvt_hypercall`: hypercall numbers (the port is
/// [`HVT_HYPERCALL_PIO_BASE`]` + nr`).
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hypercall {
    /// [`HcWalltime`]: wall-clock time.
    Walltime = 1,
    /// [`HcPuts`]: write to the console.
    Puts = 2,
    /// [`HcPoll`]: wait for I/O or a timeout.
    Poll = 3,
    /// [`HcBlockWrite`].
    BlockWrite = 4,
    /// [`HcBlockRead`].
    BlockRead = 5,
    /// [`HcNetWrite`].
    NetWrite = 6,
    /// [`HcNetRead`].
    NetRead = 7,
    /// [`HcHalt`]: stop the guest.
    Halt = 8,
}

/// `HVT_HYPERCALL_MAX`: one past the highest hypercall number.
pub const HVT_HYPERCALL_MAX: u16 = 9;

impl Hypercall {
    /// Decodes a hypercall number.
    pub const fn from_nr(nr: u16) -> Option<Self> {
        match nr {
            1 => Some(Self::Walltime),
            2 => Some(Self::Puts),
            3 => Some(Self::Poll),
            4 => Some(Self::BlockWrite),
            5 => Some(Self::BlockRead),
            6 => Some(Self::NetWrite),
            7 => Some(Self::NetRead),
            8 => Some(Self::Halt),
            _ => None,
        }
    }

    /// Decodes the port of a hypercall `out`.
    pub const fn from_port(port: u16) -> Option<Self> {
        match port.checked_sub(HVT_HYPERCALL_PIO_BASE) {
            Some(nr) => Self::from_nr(nr),
            None => None,
        }
    }

    /// The port the guest writes to for this hypercall.
    pub const fn port(self) -> u16 {
        HVT_HYPERCALL_PIO_BASE + self as u16
    }

    /// The hypercall's name, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Walltime => "walltime",
            Self::Puts => "puts",
            Self::Poll => "poll",
            Self::BlockWrite => "block write",
            Self::BlockRead => "block read",
            Self::NetWrite => "net write",
            Self::NetRead => "net read",
            Self::Halt => "halt",
        }
    }

    /// Size of the hypercall's argument structure.
    pub const fn arg_size(self) -> usize {
        match self {
            Self::Walltime => core::mem::size_of::<HcWalltime>(),
            Self::Puts => core::mem::size_of::<HcPuts>(),
            Self::Poll => core::mem::size_of::<HcPoll>(),
            Self::BlockWrite => core::mem::size_of::<HcBlockWrite>(),
            Self::BlockRead => core::mem::size_of::<HcBlockRead>(),
            Self::NetWrite => core::mem::size_of::<HcNetWrite>(),
            Self::NetRead => core::mem::size_of::<HcNetRead>(),
            Self::Halt => core::mem::size_of::<HcHalt>(),
        }
    }
}

/// `struct hvt_hc_walltime`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HcWalltime {
    /// OUT: nanoseconds since the Unix epoch.
    pub nsecs: u64,
}

const _: () = assert!(core::mem::size_of::<HcWalltime>() == 8);
const _: () = assert!(core::mem::offset_of!(HcWalltime, nsecs) == 0);

/// `struct hvt_hc_puts`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HcPuts {
    /// IN: guest address of the bytes to write.
    pub data: u64,
    /// IN: number of bytes.
    pub len: u64,
}

const _: () = assert!(core::mem::size_of::<HcPuts>() == 16);
const _: () = assert!(core::mem::offset_of!(HcPuts, data) == 0);
const _: () = assert!(core::mem::offset_of!(HcPuts, len) == 8);

/// `struct hvt_hc_block_write`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, Immutable, KnownLayout)]
pub struct HcBlockWrite {
    /// IN: the device's handle (its manifest index).
    pub handle: u64,
    /// IN: byte offset on the device, a multiple of the sector size.
    pub offset: u64,
    /// IN: guest address of the data.
    pub data: u64,
    /// IN: number of bytes, a multiple of the sector size.
    pub len: u64,
    /// OUT: a [`crate::status::Solo5Result`].
    pub ret: i32,
}

const _: () = assert!(core::mem::size_of::<HcBlockWrite>() == 40);
const _: () = assert!(core::mem::offset_of!(HcBlockWrite, handle) == 0);
const _: () = assert!(core::mem::offset_of!(HcBlockWrite, offset) == 8);
const _: () = assert!(core::mem::offset_of!(HcBlockWrite, data) == 16);
const _: () = assert!(core::mem::offset_of!(HcBlockWrite, len) == 24);
const _: () = assert!(core::mem::offset_of!(HcBlockWrite, ret) == 32);

/// `struct hvt_hc_block_read`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, Immutable, KnownLayout)]
pub struct HcBlockRead {
    /// IN: the device's handle (its manifest index).
    pub handle: u64,
    /// IN: byte offset on the device, a multiple of the sector size.
    pub offset: u64,
    /// IN: guest address of the buffer.
    pub data: u64,
    /// IN/OUT: buffer size in, bytes read out.
    pub len: u64,
    /// OUT: a [`crate::status::Solo5Result`].
    pub ret: i32,
}

const _: () = assert!(core::mem::size_of::<HcBlockRead>() == 40);
const _: () = assert!(core::mem::offset_of!(HcBlockRead, handle) == 0);
const _: () = assert!(core::mem::offset_of!(HcBlockRead, offset) == 8);
const _: () = assert!(core::mem::offset_of!(HcBlockRead, data) == 16);
const _: () = assert!(core::mem::offset_of!(HcBlockRead, len) == 24);
const _: () = assert!(core::mem::offset_of!(HcBlockRead, ret) == 32);

/// `struct hvt_hc_net_write`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, Immutable, KnownLayout)]
pub struct HcNetWrite {
    /// IN: the interface's handle (its manifest index).
    pub handle: u64,
    /// IN: guest address of the Ethernet frame.
    pub data: u64,
    /// IN: frame length.
    pub len: u64,
    /// OUT: a [`crate::status::Solo5Result`].
    pub ret: i32,
}

const _: () = assert!(core::mem::size_of::<HcNetWrite>() == 32);
const _: () = assert!(core::mem::offset_of!(HcNetWrite, handle) == 0);
const _: () = assert!(core::mem::offset_of!(HcNetWrite, data) == 8);
const _: () = assert!(core::mem::offset_of!(HcNetWrite, len) == 16);
const _: () = assert!(core::mem::offset_of!(HcNetWrite, ret) == 24);

/// `struct hvt_hc_net_read`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, Immutable, KnownLayout)]
pub struct HcNetRead {
    /// IN: the interface's handle (its manifest index).
    pub handle: u64,
    /// IN: guest address of the buffer.
    pub data: u64,
    /// IN/OUT: buffer size in, frame length out.
    pub len: u64,
    /// OUT: a [`crate::status::Solo5Result`]; `Again` when no frame waits.
    pub ret: i32,
}

const _: () = assert!(core::mem::size_of::<HcNetRead>() == 32);
const _: () = assert!(core::mem::offset_of!(HcNetRead, handle) == 0);
const _: () = assert!(core::mem::offset_of!(HcNetRead, data) == 8);
const _: () = assert!(core::mem::offset_of!(HcNetRead, len) == 16);
const _: () = assert!(core::mem::offset_of!(HcNetRead, ret) == 24);

/// `struct hvt_hc_poll`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, Immutable, KnownLayout)]
pub struct HcPoll {
    /// IN: how long to wait at most, in nanoseconds from the call.
    pub timeout_nsecs: u64,
    /// OUT: bit `h` set when the device with handle `h` is ready.
    pub ready_set: u64,
    /// OUT: 1 if any device is ready, else 0.
    pub ret: i32,
}

const _: () = assert!(core::mem::size_of::<HcPoll>() == 24);
const _: () = assert!(core::mem::offset_of!(HcPoll, timeout_nsecs) == 0);
const _: () = assert!(core::mem::offset_of!(HcPoll, ready_set) == 8);
const _: () = assert!(core::mem::offset_of!(HcPoll, ret) == 16);

/// `struct hvt_hc_halt`.
///
/// kiln convention for the cookie: with `exit_status` 255
/// ([`crate::status::EXIT_ABORT`]) a non-zero `cookie` is the guest address
/// of a NUL-terminated UTF-8 message of at most [`HVT_HALT_COOKIE_MAX`]
/// bytes, which the tender prints with a register dump. Other statuses
/// ignore the cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, Immutable, KnownLayout)]
pub struct HcHalt {
    /// IN: guest address of the cookie, or 0.
    pub cookie: u64,
    /// IN: the exit status for the tender to return.
    pub exit_status: i32,
}

const _: () = assert!(core::mem::size_of::<HcHalt>() == 16);
const _: () = assert!(core::mem::offset_of!(HcHalt, cookie) == 0);
const _: () = assert!(core::mem::offset_of!(HcHalt, exit_status) == 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_round_trip() {
        for nr in 1..HVT_HYPERCALL_MAX {
            let hc = Hypercall::from_nr(nr).unwrap();
            assert_eq!(Hypercall::from_port(hc.port()), Some(hc));
        }
        assert_eq!(Hypercall::from_port(0x500), None);
        assert_eq!(Hypercall::from_port(0x509), None);
        assert_eq!(Hypercall::from_port(0x4ff), None);
        assert_eq!(Hypercall::Puts.port(), 0x502);
        assert_eq!(Hypercall::Halt.port(), 0x508);
    }

    #[test]
    fn boot_info_bytes_are_little_endian_fields() {
        let bi = HvtBootInfo {
            mem_size: 1,
            kernel_end: 2,
            cpu_cycle_freq: 3,
            cmdline: 4,
            mft: 5,
        };
        let b = bi.as_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(b[8], 2);
        assert_eq!(b[16], 3);
        assert_eq!(b[24], 4);
        assert_eq!(b[32], 5);
    }
}
