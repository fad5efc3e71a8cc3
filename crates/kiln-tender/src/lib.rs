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
//! - [`sys`]: every `unsafe` operation (adopting inherited descriptors,
//!   the core file's creation and naming; taps are opened by `kiln-tap`);
//! - [`seccomp`]: allow-lists as data ([`seccomp::Rule`]), compiled to a
//!   BPF filter that kills (hvt) or traps (spt) on anything else;
//! - [`bpf`]: the compact compiler of those rules kiln-spt's guest filter
//!   uses (a binary search over call numbers, shared blocks, 64-bit sums),
//!   so that a manifest of 63 devices fits the kernel's 4,096 instructions;
//! - [`net`]: the net module's flags and host side (tap or descriptor);
//! - [`block`]: the block module's flags and host side (a file);
//! - [`devices`]: fitting the device flags to the image's manifest and
//!   attaching each device;
//! - [`image`]: reading KERNEL and checking it against `--mem`;
//! - [`dumpcore`]: `--dumpcore=DIR`'s ELF core file of a failed guest
//!   (notes, memory segments from either tender's guest memory, the file
//!   created unnamed in DIR and named there only once written);
//! - [`stop`]: SIGTERM and SIGINT turned into the stop request of kiln's
//!   STOP extension for a guest that declared it handles one, Solo5's
//!   behaviour otherwise;
//! - [`cli`]: the solo5-compatible command line
//!   `TENDER [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]`.
//!
//! Each tender keeps what is its own (KVM or seccomp, hypercalls or filter
//! rules, guest memory) and re-exports these under its own module names.
#![deny(unsafe_code)]

pub mod block;
pub mod bpf;
pub mod cli;
pub mod devices;
pub mod dumpcore;
pub mod elf;
pub mod image;
pub mod module;
pub mod net;
pub mod seccomp;
pub mod stop;
pub mod sys;
pub mod target;

pub use target::{Hvt, Spt, Target};

/// Maps a guest exit status to the tender's process exit code: 0 to 255 as
/// they are, anything else 255.
pub fn exit_code(status: i32) -> u8 {
    u8::try_from(status).unwrap_or(255)
}

/// An error and its sources, one per line.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(&format!("\n  caused by: {s}"));
        source = s.source();
    }
    out
}

/// An error as tender `T`'s `main` prints it: `kiln-hvt: error: ...`, then
/// each source on a line of its own.
pub fn report<T: Target>(err: &(dyn std::error::Error + 'static)) -> String {
    format!("{}: error: {}", T::TENDER, chain(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_chain_sources() {
        let inner = std::io::Error::other("disk on fire");
        let outer = crate::devices::DevicesError::<Spt>::Attach {
            path: "k.spt".into(),
            source: module::ModuleError::Open {
                name: "d".into(),
                what: "'x.img'".into(),
                source: inner,
            },
        };
        assert_eq!(
            report::<Spt>(&outer),
            "kiln-spt: error: k.spt: cannot attach devices\n  caused by: device 'd': cannot open 'x.img'\n  caused by: disk on fire"
        );
        assert_eq!(exit_code(256), 255);
        assert_eq!(exit_code(-1), 255);
        assert_eq!(exit_code(7), 7);
    }
}
