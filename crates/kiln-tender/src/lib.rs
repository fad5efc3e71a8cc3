//! What kiln's two tenders (`kiln-hvt`, `kiln-spt`) share on the host side:
//! the parts that are the same logic on both, parameterised by the ABI
//! target where a message or a limit differs.
//!
//! Layering, from the bottom:
//!
//! - [`target`]: the [`Target`] trait and its two markers, [`Hvt`] and
//!   [`Spt`], with what differs between them (names, limits, texts);
//! - [`module`]: the part of a tender module both tenders have (its flags
//!   and the devices they name), the list of every module kiln has, and
//!   `--prefix:NAME=VALUE` flag splitting;
//! - [`elf`]: the pure image validator ([`elf::Image::parse`], the
//!   tenders' fuzz target), parameterised by the target;
//! - [`sys`]: every `unsafe` operation (tap, inherited descriptors);
//! - [`net`]: the net module's flags and host side (tap or descriptor);
//! - [`block`]: the block module's flags and host side (a file);
//! - [`cli`]: the solo5-compatible command line
//!   `TENDER [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]`.
//!
//! Each tender keeps what is its own (KVM or seccomp, hypercalls or filter
//! rules, guest memory) and re-exports these under its own module names.
#![deny(unsafe_code)]

pub mod block;
pub mod cli;
pub mod elf;
pub mod module;
pub mod net;
pub mod sys;
pub mod target;

pub use target::{Hvt, Spt, Target};
