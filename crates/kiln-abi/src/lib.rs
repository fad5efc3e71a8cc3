//! The Solo5 ABI, version 2, x86_64: the contract between a kiln
//! freestanding image and the tender (`kiln-hvt`, `kiln-spt`) that runs it.
//!
//! This crate is `#![no_std]`, has no `unsafe`, and is used by both sides:
//! the guest (`kiln-solo5` and the crates `kiln configure` generates) and the
//! tenders. Every shared structure is `#[repr(C)]`, each field is marked IN
//! (written by the guest, read by the tender) or OUT (written by the tender),
//! and sizes and offsets are asserted at compile time against the values the
//! Solo5 headers give (`include/solo5/hvt_abi.h`, `spt_abi.h`, `mft_abi.h`,
//! `elf_abi.h`, `solo5.h`).
//!
//! Modules, from the bottom:
//!
//! - [`status`]: exit statuses and hypercall result codes (`solo5.h`);
//! - [`note`]: ELF note headers, the Solo5 note name and types and the ABI
//!   note ([`AbiNote`]);
//! - [`mft`]: the application manifest: entries, the [`MftNote`] a guest
//!   emits, and the checked parser [`mft::Manifest`] the tenders use;
//! - [`hvt`]: the hvt boot info, hypercall numbers and argument structures;
//! - [`spt`]: the spt boot info and low memory layout;
//! - [`hvt_ring`]: Solo5's ring I/O for net devices
//!   (`HVT_FEATURE_RING_IO`): the boot info's extra fields and the ring;
//! - [`hvt_ext`]: kiln's own extension to the hvt ABI, not Solo5's: the
//!   CPUID leaf that tells a guest it runs under kiln-hvt, and the
//!   NET_EXCHANGE hypercall (several frames each way and a wait in one
//!   VM exit), and the STOP_ENABLE hypercall (a stop request the guest
//!   sees at its next wait);
//! - [`spt_ext`]: kiln's extension to the spt ABI: a block after the boot
//!   info offering the same stop request to spt guests.
//!
//! # Emitting the notes from a guest
//!
//! A freestanding image carries two ELF notes that the tender reads before
//! it loads anything: the ABI note (which target and ABI version the image
//! was built for) and the manifest (the image's devices). Both are built by
//! `const fn`s, so generated code declares them as statics:
//!
//! ```
//! #[unsafe(link_section = ".note.solo5.abi")]
//! #[used]
//! static ABI: kiln_abi::AbiNote = kiln_abi::AbiNote::hvt();
//!
//! #[unsafe(link_section = ".note.solo5.manifest")]
//! #[used]
//! static MFT: kiln_abi::MftNote<2> = kiln_abi::MftNote::new([
//!     kiln_abi::MftEntry::net("service"),
//!     kiln_abi::MftEntry::block("disk"),
//! ]);
//! # assert_eq!(MFT.entry_count(), 3);
//! ```
//!
//! The section names are [`note::ABI_NOTE_SECTION`] and
//! [`note::MFT_NOTE_SECTION`]. Both note types are 4-byte aligned (as
//! `elf_abi.h` asks), so the linker may place them in one `PT_NOTE` segment
//! or in two; the linker script must keep both sections (`KEEP`) and map them
//! to a `PT_NOTE` program header. The manifest always starts with the
//! reserved entry Solo5 requires, so `MftNote<N>` holds `N + 1` entries and a
//! device's handle is its position in the array passed to
//! [`MftNote::new`] plus one. Invalid names (empty, longer than
//! [`mft::MFT_NAME_MAX`], characters other than `[A-Za-z0-9_-]`), duplicate
//! names and more than [`mft::MFT_MAX_ENTRIES`]` - 1` devices are compile
//! errors in a `static`:
//!
//! ```compile_fail
//! static MFT: kiln_abi::MftNote<2> = kiln_abi::MftNote::new([
//!     kiln_abi::MftEntry::net("same"),
//!     kiln_abi::MftEntry::block("same"),
//! ]);
//! ```
//!
//! # Reading the notes in a tender
//!
//! Every shared structure derives zerocopy's `FromBytes` (and `IntoBytes`
//! where it has no padding), so a tender reads a copy from untrusted bytes
//! and writes one out without field-by-field code. A tender finds the notes
//! in the image's `PT_NOTE` program headers (kiln's tenders and
//! `kiln-elftool` walk them with the `object` crate), keeps Solo5's by name
//! and type ([`note::is_solo5_note`]) and validates their descriptors:
//!
//! ```
//! use kiln_abi::{AbiTarget, mft::Manifest, note::{self, AbiInfo, NoteHeader}};
//! use zerocopy::{FromBytes, IntoBytes};
//! # static ABI: kiln_abi::AbiNote = kiln_abi::AbiNote::hvt();
//! # static MFT: kiln_abi::MftNote<1> = kiln_abi::MftNote::new([kiln_abi::MftEntry::net("service")]);
//! # let mut buf = [0u8; 512];
//! # let n = MFT.encode(&mut buf).unwrap();
//! # let notes = [ABI.as_bytes(), &buf[..n]];
//! // `notes` holds the bytes of each note.
//! for bytes in notes {
//!     let (header, _) = NoteHeader::read_from_prefix(bytes).unwrap();
//!     let name = &header.name[..header.namesz as usize];
//!     let desc = &bytes[20..20 + header.descsz as usize];
//!     if note::is_solo5_note(name, header.kind, note::ABI_NOTE_TYPE) {
//!         let abi = AbiInfo::parse(desc).unwrap();
//!         assert_eq!(abi.target, AbiTarget::Hvt as u32);
//!     } else if note::is_solo5_note(name, header.kind, note::MFT_NOTE_TYPE) {
//!         let mft = Manifest::from_note_desc(desc).unwrap();
//!         assert_eq!(mft.entry(1).unwrap().name, "service");
//!     }
//! }
//! ```
#![no_std]
#![deny(unsafe_code)]

pub mod hvt;
pub mod hvt_ext;
pub mod hvt_ring;
pub mod mft;
pub mod note;
pub mod spt;
pub mod spt_ext;
pub mod status;

pub use mft::{MftEntry, MftNote, MftType};
pub use note::{AbiInfo, AbiNote, AbiTarget};
