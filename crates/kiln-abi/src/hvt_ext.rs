//! kiln's extension to the hvt ABI (not part of Solo5): a CPUID leaf by
//! which a guest discovers that its tender is kiln-hvt, and the
//! NET_EXCHANGE hypercall, which writes several frames, reads several
//! frames and waits like POLL, all in one VM exit.
//!
//! A Solo5 guest never uses any of this, and a kiln guest under a tender
//! without the extension (Solo5's `solo5-hvt`) finds no signature at
//! [`KILN_CPUID_LEAF`] and keeps to the standard NETREAD, NETWRITE and POLL
//! hypercalls. `docs/hvt-extensions.md` describes the design.
//!
//! # Discovery
//!
//! `cpuid` with `eax` = [`KILN_CPUID_LEAF`] (in the range Intel and AMD
//! reserve for hypervisors) returns [`KILN_CPUID_SIGNATURE`] in `ebx`,
//! `ecx`, `edx` and the extensions offered ([`KILN_FEATURE_NET_EXCHANGE`],
//! ...) as bits of `eax`. KVM answers a leaf the tender did not set with
//! another leaf's values, never with the signature.
//!
//! # STOP
//!
//! With [`KILN_FEATURE_STOP`] offered, a guest that handles stop requests
//! makes STOP_ENABLE ([`KILN_STOP_ENABLE_PORT`], an [`HcStopEnable`]) once.
//! From then on the tender turns the first SIGTERM or SIGINT into a stop
//! request: any wait (POLL, NET_EXCHANGE) returns at once, and before the
//! guest resumes the tender writes [`KILN_STOP_REQUESTED`] to the guest's
//! word. A second signal, or a signal before STOP_ENABLE, does what
//! Solo5's `solo5-hvt` does: the tender exits with status 1.
//!
//! # BLOCK_EXCHANGE
//!
//! With [`KILN_FEATURE_BLOCK_EXCHANGE`] offered, a 32-bit `out` to
//! [`KILN_BLOCK_EXCHANGE_PORT`] with the guest address of an
//! [`HcBlockExchange`] performs its `count` [`BlockRequest`]s in order,
//! each exactly as the BLOCK_READ or BLOCK_WRITE it stands for (a write
//! has been handed to the host's `pwrite(2)` when the call returns), and
//! sets each request's `ret`. A table or buffer outside guest memory, a
//! count above [`BLOCK_EXCHANGE_MAX_REQUESTS`], an unknown `op`, or a read
//! buffer that overlaps another read buffer, the table or the argument
//! stops the guest before any request is performed; an unknown handle or a
//! misaligned or out-of-range request gets `Einval` alone.
//!
//! # NET_EXCHANGE
//!
//! A 32-bit `out` to [`KILN_NET_EXCHANGE_PORT`] (inside the hvt hypercall
//! port range, far above Solo5's numbers) with the guest address of an
//! [`HcNetExchange`]. The tender, for the one net device `handle`:
//!
//! 1. writes each of the `tx_count` frames of the [`ExchangeTx`] array at
//!    `tx` to the device, in order, one `write(2)` each (as NETWRITE);
//! 2. reads frames into the buffers of the [`ExchangeRx`] array at `rx`,
//!    in order, until the device has no more or `rx_count` are filled;
//! 3. if it read none and `timeout_nsecs` is non-zero, waits like POLL (on
//!    every device, to the nanosecond) and, if the device became ready,
//!    reads again as in 2;
//! 4. writes the OUT fields: frames written, frames read (each buffer's
//!    `len`), the ready set of all devices as POLL reports it, and `ret`.
//!
//! Counts above [`EXCHANGE_MAX_FRAMES`], zero-length or oversized TX
//! frames, empty RX buffers and addresses outside guest memory stop the
//! guest with an error; an unknown handle returns
//! [`crate::status::Solo5Result::Einval`] with nothing done. A frame the
//! host refuses to take is counted as not written and the ones after it
//! are not tried (`ret` is then `Eunspec`); frames already read are
//! reported either way.
//!
//! # NET_EXCHANGE_AREA
//!
//! With [`KILN_FEATURE_NET_RX_AREA`] offered, a 32-bit `out` to
//! [`KILN_NET_EXCHANGE_AREA_PORT`] with the guest address of an
//! [`HcNetExchangeArea`] does what NET_EXCHANGE does, but reads frames
//! into one receive area, packed (a length, the frame, padding to 8
//! bytes; [`area_record_len`]), as many as fit: many small frames or
//! several 64 KiB segments in one exit. An area outside writable guest
//! memory or above [`EXCHANGE_AREA_MAX`], or a frame cap of 0 or larger
//! than the area, stops the guest before anything is sent.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The CPUID leaf of kiln's signature.
pub const KILN_CPUID_LEAF: u32 = 0x4000_0100;

/// `ebx`, `ecx`, `edx` of [`KILN_CPUID_LEAF`]: `"kiln-hvt-ext"` in
/// little-endian 4-byte groups.
pub const KILN_CPUID_SIGNATURE: [u32; 3] = [
    u32::from_le_bytes(*b"kiln"),
    u32::from_le_bytes(*b"-hvt"),
    u32::from_le_bytes(*b"-ext"),
];

/// Feature bit (in `eax` of [`KILN_CPUID_LEAF`]): the tender serves
/// NET_EXCHANGE with the argument layout of this module.
pub const KILN_FEATURE_NET_EXCHANGE: u32 = 1 << 0;

/// Feature bit (in `eax` of [`KILN_CPUID_LEAF`], and in `features` of
/// kiln-spt's block, `crate::spt_ext`): the guest declared
/// [`crate::note::KILN_GUEST_VNET_HDR`] in its features note and the
/// tender opened every net device with `IFF_VNET_HDR` and the kernel took
/// checksum and TCP segmentation offload: every frame the guest sends or
/// receives starts with a 10-byte `struct virtio_net_hdr` (virtio 1.2,
/// 5.1.6, no `num_buffers`), and frames may be up to
/// [`VNET_MAX_FRAME`] bytes after it.
pub const KILN_FEATURE_VNET_HDR: u32 = 1 << 1;

/// Length of the virtio-net header in front of each frame with
/// [`KILN_FEATURE_VNET_HDR`].
pub const VNET_HEADER_LEN: u64 = 10;

/// The largest frame (Ethernet header included, virtio-net header not)
/// with [`KILN_FEATURE_VNET_HDR`]: an Ethernet header, an IPv6 header and
/// 65535 bytes of payload.
pub const VNET_MAX_FRAME: u64 = 14 + 40 + 65535;

/// The features a guest may use, from the four registers of `cpuid`
/// [`KILN_CPUID_LEAF`] (`[eax, ebx, ecx, edx]`): zero unless the
/// signature is there.
pub const fn features(regs: [u32; 4]) -> u32 {
    if regs[1] == KILN_CPUID_SIGNATURE[0]
        && regs[2] == KILN_CPUID_SIGNATURE[1]
        && regs[3] == KILN_CPUID_SIGNATURE[2]
    {
        regs[0]
    } else {
        0
    }
}

/// The hypercall number of NET_EXCHANGE (port
/// [`crate::hvt::HVT_HYPERCALL_PIO_BASE`]` + 0x40`).
pub const KILN_NET_EXCHANGE_NR: u16 = 0x40;

/// The port of NET_EXCHANGE.
pub const KILN_NET_EXCHANGE_PORT: u16 = crate::hvt::HVT_HYPERCALL_PIO_BASE + KILN_NET_EXCHANGE_NR;

// Clear of Solo5's numbers, inside the 256 ports hvt guests may reach.
const _: () = assert!(KILN_NET_EXCHANGE_NR >= 4 * crate::hvt::HVT_HYPERCALL_MAX);
const _: () = assert!(KILN_NET_EXCHANGE_NR < 0x100);

/// Most TX frames, and most RX buffers, one exchange may name.
pub const EXCHANGE_MAX_FRAMES: u64 = 64;

/// One frame to send.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ExchangeTx {
    /// IN: guest address of the Ethernet frame.
    pub data: u64,
    /// IN: frame length (non-zero, at most the MTU plus an Ethernet header
    /// with a VLAN tag).
    pub len: u64,
}

const _: () = assert!(core::mem::size_of::<ExchangeTx>() == 16);
const _: () = assert!(core::mem::offset_of!(ExchangeTx, data) == 0);
const _: () = assert!(core::mem::offset_of!(ExchangeTx, len) == 8);

/// One buffer to receive a frame in.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ExchangeRx {
    /// IN: guest address of the buffer.
    pub data: u64,
    /// IN: buffer size (non-zero; a longer frame is cut to it).
    pub cap: u64,
    /// OUT: the frame's length, for the first `rx_read` buffers.
    pub len: u64,
}

const _: () = assert!(core::mem::size_of::<ExchangeRx>() == 24);
const _: () = assert!(core::mem::offset_of!(ExchangeRx, data) == 0);
const _: () = assert!(core::mem::offset_of!(ExchangeRx, cap) == 8);
const _: () = assert!(core::mem::offset_of!(ExchangeRx, len) == 16);

/// The argument of NET_EXCHANGE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, Immutable, KnownLayout)]
pub struct HcNetExchange {
    /// IN: the interface's handle (its manifest index).
    pub handle: u64,
    /// IN: how long to wait at most when no frame was read, in nanoseconds
    /// from the call; 0: do not wait.
    pub timeout_nsecs: u64,
    /// IN: guest address of `tx_count` [`ExchangeTx`].
    pub tx: u64,
    /// IN: number of frames to send, at most [`EXCHANGE_MAX_FRAMES`].
    pub tx_count: u64,
    /// IN: guest address of `rx_count` [`ExchangeRx`].
    pub rx: u64,
    /// IN: number of receive buffers, at most [`EXCHANGE_MAX_FRAMES`].
    pub rx_count: u64,
    /// OUT: frames written, from the first.
    pub tx_written: u64,
    /// OUT: frames read, into the first `rx_read` buffers.
    pub rx_read: u64,
    /// OUT: bit `h` set when the device with handle `h` is ready, as POLL
    /// reports it (for `handle`: more frames may be waiting).
    pub ready_set: u64,
    /// OUT: a [`crate::status::Solo5Result`].
    pub ret: i32,
}

const _: () = assert!(core::mem::size_of::<HcNetExchange>() == 80);
const _: () = assert!(core::mem::offset_of!(HcNetExchange, handle) == 0);
const _: () = assert!(core::mem::offset_of!(HcNetExchange, timeout_nsecs) == 8);
const _: () = assert!(core::mem::offset_of!(HcNetExchange, tx) == 16);
const _: () = assert!(core::mem::offset_of!(HcNetExchange, tx_count) == 24);
const _: () = assert!(core::mem::offset_of!(HcNetExchange, rx) == 32);
const _: () = assert!(core::mem::offset_of!(HcNetExchange, rx_count) == 40);
const _: () = assert!(core::mem::offset_of!(HcNetExchange, tx_written) == 48);
const _: () = assert!(core::mem::offset_of!(HcNetExchange, rx_read) == 56);
const _: () = assert!(core::mem::offset_of!(HcNetExchange, ready_set) == 64);
const _: () = assert!(core::mem::offset_of!(HcNetExchange, ret) == 72);

/// Feature bit (in `eax` of [`KILN_CPUID_LEAF`]): the tender serves
/// NET_EXCHANGE_AREA ([`KILN_NET_EXCHANGE_AREA_PORT`], an
/// [`HcNetExchangeArea`]): NET_EXCHANGE with the frames read packed into
/// one receive area instead of one buffer each.
pub const KILN_FEATURE_NET_RX_AREA: u32 = 1 << 3;

/// The hypercall number of NET_EXCHANGE_AREA (port
/// [`crate::hvt::HVT_HYPERCALL_PIO_BASE`]` + 0x42`).
pub const KILN_NET_EXCHANGE_AREA_NR: u16 = 0x42;

/// The port of NET_EXCHANGE_AREA.
pub const KILN_NET_EXCHANGE_AREA_PORT: u16 =
    crate::hvt::HVT_HYPERCALL_PIO_BASE + KILN_NET_EXCHANGE_AREA_NR;

const _: () = assert!(KILN_NET_EXCHANGE_AREA_NR >= 4 * crate::hvt::HVT_HYPERCALL_MAX);
const _: () = assert!(KILN_NET_EXCHANGE_AREA_NR < 0x100);

/// Largest receive area one NET_EXCHANGE_AREA may name (`rx_area_len`).
pub const EXCHANGE_AREA_MAX: u64 = 4 << 20;

/// Bytes in front of each frame in a receive area: its length, a
/// little-endian `u64`. Each record starts at a multiple of
/// [`EXCHANGE_AREA_ALIGN`] from the area's start.
pub const EXCHANGE_AREA_RECORD_HEADER: u64 = 8;

/// Alignment of each record in a receive area, from the area's start.
pub const EXCHANGE_AREA_ALIGN: u64 = 8;

/// Where the record after one holding a frame of `len` bytes starts, from
/// the start of the record: the header, the frame, padding to
/// [`EXCHANGE_AREA_ALIGN`].
/// Saturates rather than overflow for a length no frame has.
pub const fn area_record_len(len: u64) -> u64 {
    EXCHANGE_AREA_RECORD_HEADER
        .saturating_add(len)
        .saturating_add(EXCHANGE_AREA_ALIGN - 1)
        & !(EXCHANGE_AREA_ALIGN - 1)
}

/// The argument of NET_EXCHANGE_AREA: NET_EXCHANGE's, with one receive
/// area instead of a table of buffers. The tender reads frames into the
/// area one after the other, each as a record (a little-endian `u64`
/// length, the frame, padding to 8 bytes), and reads another only while
/// at least [`EXCHANGE_AREA_RECORD_HEADER`]` + rx_frame_cap` bytes are left.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, Immutable, KnownLayout)]
pub struct HcNetExchangeArea {
    /// IN: the interface's handle (its manifest index).
    pub handle: u64,
    /// IN: how long to wait at most when no frame was read, in nanoseconds
    /// from the call; 0: do not wait.
    pub timeout_nsecs: u64,
    /// IN: guest address of `tx_count` [`ExchangeTx`].
    pub tx: u64,
    /// IN: number of frames to send, at most [`EXCHANGE_MAX_FRAMES`].
    pub tx_count: u64,
    /// IN: guest address of the receive area (writable guest memory).
    pub rx_area: u64,
    /// IN: its length, at most [`EXCHANGE_AREA_MAX`]; 0: read nothing.
    pub rx_area_len: u64,
    /// IN: the most bytes one frame may take (a longer one is cut to it);
    /// non-zero, and with its record header at most `rx_area_len` when
    /// `rx_area_len` is not 0.
    pub rx_frame_cap: u64,
    /// OUT: frames written, from the first.
    pub tx_written: u64,
    /// OUT: frames read into the area, one record each, from its start.
    pub rx_read: u64,
    /// OUT: bytes of the area the records take.
    pub rx_used: u64,
    /// OUT: bit `h` set when the device with handle `h` is ready, as POLL
    /// reports it (for `handle`: more frames may be waiting).
    pub ready_set: u64,
    /// OUT: a [`crate::status::Solo5Result`].
    pub ret: i32,
}

const _: () = assert!(core::mem::size_of::<HcNetExchangeArea>() == 96);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, handle) == 0);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, timeout_nsecs) == 8);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, tx) == 16);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, tx_count) == 24);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, rx_area) == 32);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, rx_area_len) == 40);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, rx_frame_cap) == 48);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, tx_written) == 56);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, rx_read) == 64);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, rx_used) == 72);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, ready_set) == 80);
const _: () = assert!(core::mem::offset_of!(HcNetExchangeArea, ret) == 88);

/// Feature bit (in `eax` of [`KILN_CPUID_LEAF`]): the tender serves
/// BLOCK_EXCHANGE with the argument layout of this module. (Bit 1 is
/// taken by another data-path extension.)
pub const KILN_FEATURE_BLOCK_EXCHANGE: u32 = 1 << 2;

/// The hypercall number of BLOCK_EXCHANGE (port
/// [`crate::hvt::HVT_HYPERCALL_PIO_BASE`]` + 0x41`).
pub const KILN_BLOCK_EXCHANGE_NR: u16 = 0x41;

/// The port of BLOCK_EXCHANGE.
pub const KILN_BLOCK_EXCHANGE_PORT: u16 =
    crate::hvt::HVT_HYPERCALL_PIO_BASE + KILN_BLOCK_EXCHANGE_NR;

const _: () = assert!(KILN_BLOCK_EXCHANGE_NR >= 4 * crate::hvt::HVT_HYPERCALL_MAX);
const _: () = assert!(KILN_BLOCK_EXCHANGE_NR < 0x100);
const _: () = assert!(KILN_BLOCK_EXCHANGE_NR != KILN_NET_EXCHANGE_NR);
const _: () = assert!(KILN_NET_EXCHANGE_AREA_NR != KILN_NET_EXCHANGE_NR);
const _: () = assert!(KILN_NET_EXCHANGE_AREA_NR != KILN_BLOCK_EXCHANGE_NR);

/// Most requests one BLOCK_EXCHANGE may name.
pub const BLOCK_EXCHANGE_MAX_REQUESTS: u64 = 256;

/// [`BlockRequest::op`]: read `len` bytes at `offset` into `data`.
pub const BLOCK_OP_READ: u32 = 1;
/// [`BlockRequest::op`]: write the `len` bytes at `data` to `offset`.
pub const BLOCK_OP_WRITE: u32 = 2;

/// One request of a BLOCK_EXCHANGE: what one BLOCK_READ or BLOCK_WRITE
/// would do.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct BlockRequest {
    /// IN: the block device (its manifest index).
    pub handle: u64,
    /// IN: byte offset on the device, a multiple of its sector size.
    pub offset: u64,
    /// IN: guest address of the data (written) or the buffer (read).
    pub data: u64,
    /// IN: bytes to move, a non-zero multiple of the sector size.
    pub len: u64,
    /// IN: [`BLOCK_OP_READ`] or [`BLOCK_OP_WRITE`].
    pub op: u32,
    /// OUT: a [`crate::status::Solo5Result`] for this request.
    pub ret: i32,
}

const _: () = assert!(core::mem::size_of::<BlockRequest>() == 40);
const _: () = assert!(core::mem::offset_of!(BlockRequest, handle) == 0);
const _: () = assert!(core::mem::offset_of!(BlockRequest, offset) == 8);
const _: () = assert!(core::mem::offset_of!(BlockRequest, data) == 16);
const _: () = assert!(core::mem::offset_of!(BlockRequest, len) == 24);
const _: () = assert!(core::mem::offset_of!(BlockRequest, op) == 32);
const _: () = assert!(core::mem::offset_of!(BlockRequest, ret) == 36);

/// The argument of BLOCK_EXCHANGE.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HcBlockExchange {
    /// IN: guest address of `count` [`BlockRequest`]s.
    pub requests: u64,
    /// IN: number of requests, at most [`BLOCK_EXCHANGE_MAX_REQUESTS`].
    pub count: u64,
    /// OUT: requests performed (each with its `ret` set): `count`.
    pub done: u64,
}

const _: () = assert!(core::mem::size_of::<HcBlockExchange>() == 24);
const _: () = assert!(core::mem::offset_of!(HcBlockExchange, requests) == 0);
const _: () = assert!(core::mem::offset_of!(HcBlockExchange, count) == 8);
const _: () = assert!(core::mem::offset_of!(HcBlockExchange, done) == 16);

/// Feature bit (in `eax` of [`KILN_CPUID_LEAF`]): the tender serves
/// STOP_ENABLE, after which SIGTERM and SIGINT become a stop request the
/// guest sees at its next wait instead of ending the tender
/// (`docs/hvt-extensions.md`, "STOP"). Bit 8, clear of the low bits other
/// data-path extensions take.
pub const KILN_FEATURE_STOP: u32 = 1 << 8;

/// The hypercall number of STOP_ENABLE (port
/// [`crate::hvt::HVT_HYPERCALL_PIO_BASE`]` + 0x48`).
pub const KILN_STOP_ENABLE_NR: u16 = 0x48;

/// The port of STOP_ENABLE.
pub const KILN_STOP_ENABLE_PORT: u16 = crate::hvt::HVT_HYPERCALL_PIO_BASE + KILN_STOP_ENABLE_NR;

const _: () = assert!(KILN_STOP_ENABLE_NR >= 4 * crate::hvt::HVT_HYPERCALL_MAX);
const _: () = assert!(KILN_STOP_ENABLE_NR < 0x100);
const _: () = assert!(KILN_STOP_ENABLE_NR != KILN_NET_EXCHANGE_NR);
const _: () = assert!(KILN_STOP_ENABLE_NR != KILN_BLOCK_EXCHANGE_NR);
const _: () = assert!(KILN_STOP_ENABLE_NR != KILN_NET_EXCHANGE_AREA_NR);

/// What the tender writes to the guest's stop word when a stop was
/// requested (the word is zero until then).
pub const KILN_STOP_REQUESTED: u64 = 1;

/// The argument of STOP_ENABLE: the guest declares that it handles stop
/// requests and names the word the tender sets when one comes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HcStopEnable {
    /// IN: guest address of an 8-byte, 8-aligned word in writable guest
    /// memory. The tender writes [`KILN_STOP_REQUESTED`] there, while the
    /// guest is stopped in a hypercall, once a stop has been requested.
    pub word: u64,
}

const _: () = assert!(core::mem::size_of::<HcStopEnable>() == 8);
const _: () = assert!(core::mem::offset_of!(HcStopEnable, word) == 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_spells_kiln_hvt_ext() {
        let bytes: [u8; 12] = {
            let mut b = [0u8; 12];
            for (chunk, word) in b.chunks_exact_mut(4).zip(KILN_CPUID_SIGNATURE) {
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            b
        };
        assert_eq!(&bytes, b"kiln-hvt-ext");
    }

    #[test]
    fn features_need_the_whole_signature() {
        let [b, c, d] = KILN_CPUID_SIGNATURE;
        assert_eq!(features([1, b, c, d]), KILN_FEATURE_NET_EXCHANGE);
        assert_eq!(features([1, b, c, d ^ 1]), 0);
        assert_eq!(features([1, 0, c, d]), 0);
        // What KVM answers for a leaf nobody set: another leaf's values.
        assert_eq!(features([0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]), 0);
    }

    #[test]
    fn stop_enable_is_a_port_of_its_own() {
        assert_eq!(KILN_STOP_ENABLE_PORT, 0x548);
        assert_eq!(
            crate::hvt::Hypercall::from_port(KILN_STOP_ENABLE_PORT),
            None
        );
        let [b, c, d] = KILN_CPUID_SIGNATURE;
        let both = KILN_FEATURE_NET_EXCHANGE | KILN_FEATURE_STOP;
        assert_eq!(
            features([both, b, c, d]) & KILN_FEATURE_STOP,
            KILN_FEATURE_STOP
        );
    }

    #[test]
    fn block_exchange_has_bit_2_and_port_0x541() {
        assert_eq!(KILN_FEATURE_BLOCK_EXCHANGE, 4);
        assert_eq!(KILN_BLOCK_EXCHANGE_PORT, 0x541);
        assert_eq!(
            crate::hvt::Hypercall::from_port(KILN_BLOCK_EXCHANGE_PORT),
            None
        );
    }

    #[test]
    fn net_exchange_area_has_bit_3_and_port_0x542() {
        assert_eq!(KILN_FEATURE_NET_RX_AREA, 8);
        assert_eq!(KILN_NET_EXCHANGE_AREA_PORT, 0x542);
        assert_eq!(
            crate::hvt::Hypercall::from_port(KILN_NET_EXCHANGE_AREA_PORT),
            None
        );
        // A record: 8 bytes of length, the frame, padding to 8.
        assert_eq!(area_record_len(0), 8);
        assert_eq!(area_record_len(1), 16);
        assert_eq!(area_record_len(60), 72);
        assert_eq!(area_record_len(65_599), 65_608);
        assert_eq!(area_record_len(u64::MAX), u64::MAX - 7);
    }

    #[test]
    fn the_port_is_in_the_hypercall_range_but_no_solo5_call() {
        assert_eq!(KILN_NET_EXCHANGE_PORT, 0x540);
        assert_eq!(
            crate::hvt::Hypercall::from_port(KILN_NET_EXCHANGE_PORT),
            None
        );
    }
}
