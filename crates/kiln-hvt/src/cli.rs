//! The command line, compatible with solo5-hvt:
//! `kiln-hvt [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]`.
//!
//! The parsing is [`kiln_tender::cli`]'s, for the hvt target.

use std::ffi::OsString;

use crate::module::Module;

pub use kiln_tender::cli::{Command, Config, DEFAULT_MEM_MB};

/// Why the command line was refused.
pub type CliError = kiln_tender::cli::CliError<kiln_tender::Hvt>;

/// kiln-hvt's own flag: solo5-hvt's page protection instead of kiln's
/// (docs/solo5-compat.md).
pub const SOLO5_PROTECTION: &str = "--solo5-protection";

/// The `--help` text.
pub fn usage(modules: &[Box<dyn Module>]) -> String {
    let mut text = kiln_tender::cli::usage::<kiln_tender::Hvt, _>(modules);
    text.push_str(
        "\ndebugging:\n  --gdb[=ADDR:PORT]\n      stop at the guest's entry point and wait for gdb on ADDR:PORT\n      [default: 127.0.0.1:1234] (needs a tender built with the gdb module)\n  --dumpcore=DIR\n      when the guest aborts or faults, write an ELF core file to\n      DIR/core.kiln-hvt.PID, for `gdb IMAGE CORE`\n\nprotection:\n  --solo5-protection\n      map data, heap and stack executable and leave the boot data writable,\n      as solo5-hvt does (kiln-hvt maps them NX and read-only)\n",
    );
    text
}

/// Takes [`SOLO5_PROTECTION`] out of the tender's flags (those before
/// KERNEL): the remaining arguments, and whether it was given.
pub fn take_solo5_protection(args: Vec<OsString>) -> (Vec<OsString>, bool) {
    kiln_tender::cli::take_switch(args, SOLO5_PROTECTION)
}

/// The gdb stub's flag: `--gdb` or `--gdb=ADDR:PORT`.
pub const GDB: &str = "--gdb";
/// Where the gdb stub listens by default (gdb's `target remote :1234`).
pub const GDB_DEFAULT: &str = "127.0.0.1:1234";
/// The core file flag: `--dumpcore=DIR` or `--dumpcore DIR`.
pub const DUMPCORE: &str = "--dumpcore";

/// kiln-hvt's debugging flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebugFlags {
    /// Listen for gdb here and stop the guest at its entry point.
    pub gdb: Option<std::net::SocketAddr>,
    /// Write a core file here when the guest aborts or faults.
    pub dumpcore: Option<std::path::PathBuf>,
}

/// A debugging flag that was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DebugFlagError {
    /// `--gdb=` with something that is not ADDR:PORT.
    #[error("--gdb={0}: not an address and port; hint: --gdb=127.0.0.1:1234")]
    GdbAddress(String),
    /// `--dumpcore` without a directory.
    #[error("--dumpcore needs a directory; hint: --dumpcore=DIR")]
    DumpcoreDir,
    /// `--gdb` given to a tender built without the gdb module.
    #[error(
        "--gdb: this kiln-hvt was built without the gdb module; hint: `kiln run -t hvt --gdb` builds one with it, or build kiln-hvt with `--features gdb`"
    )]
    NoGdb,
}

/// Takes `--gdb[=ADDR:PORT]` and `--dumpcore[=]DIR` out of the tender's
/// flags (those before KERNEL).
pub fn take_debug_flags(
    args: Vec<OsString>,
) -> Result<(Vec<OsString>, DebugFlags), DebugFlagError> {
    let mut out = Vec::with_capacity(args.len());
    let mut flags = DebugFlags::default();
    let mut in_flags = true;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        if in_flags && (text == "--" || !text.starts_with('-')) {
            in_flags = false;
        }
        if !in_flags {
            out.push(arg);
            continue;
        }
        if text == GDB {
            flags.gdb = Some(GDB_DEFAULT.parse().map_err(|_| DebugFlagError::NoGdb)?);
        } else if let Some(addr) = text.strip_prefix("--gdb=") {
            flags.gdb = Some(
                addr.parse()
                    .map_err(|_| DebugFlagError::GdbAddress(addr.to_string()))?,
            );
        } else if text == DUMPCORE {
            let dir = args.next().ok_or(DebugFlagError::DumpcoreDir)?;
            flags.dumpcore = Some(dir.into());
        } else if let Some(dir) = text.strip_prefix("--dumpcore=") {
            if dir.is_empty() {
                return Err(DebugFlagError::DumpcoreDir);
            }
            flags.dumpcore = Some(dir.into());
        } else {
            out.push(arg);
        }
    }
    if flags.gdb.is_some() && !cfg!(feature = "gdb") {
        return Err(DebugFlagError::NoGdb);
    }
    Ok((out, flags))
}

/// Parses the arguments after the program name.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    modules: &mut [Box<dyn Module>],
) -> Result<Command, CliError> {
    kiln_tender::cli::parse::<kiln_tender::Hvt, _>(args, modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_flags_are_taken_before_the_kernel_only() {
        let (rest, flags) =
            take_debug_flags(os(&["--mem=8", "--dumpcore", "/tmp", "k", "--gdb"])).unwrap();
        assert_eq!(rest, os(&["--mem=8", "k", "--gdb"]));
        assert_eq!(flags.dumpcore, Some("/tmp".into()));
        assert_eq!(flags.gdb, None);
        assert_eq!(
            take_debug_flags(os(&["--dumpcore"])),
            Err(DebugFlagError::DumpcoreDir)
        );
        assert_eq!(
            take_debug_flags(os(&["--dumpcore="])),
            Err(DebugFlagError::DumpcoreDir)
        );
        let gdb = take_debug_flags(os(&["--gdb=127.0.0.1:9", "k"]));
        if cfg!(feature = "gdb") {
            assert_eq!(gdb.unwrap().1.gdb, Some("127.0.0.1:9".parse().unwrap()));
            assert_eq!(
                take_debug_flags(os(&["--gdb", "k"])).unwrap().1.gdb,
                Some(GDB_DEFAULT.parse().unwrap())
            );
            assert_eq!(
                take_debug_flags(os(&["--gdb=nowhere", "k"])),
                Err(DebugFlagError::GdbAddress("nowhere".into()))
            );
        } else {
            assert_eq!(gdb, Err(DebugFlagError::NoGdb));
        }
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_protection_flag_is_taken_before_the_kernel_only() {
        assert_eq!(
            take_solo5_protection(os(&[
                "--mem=8",
                "--solo5-protection",
                "k",
                "--solo5-protection"
            ])),
            (os(&["--mem=8", "k", "--solo5-protection"]), true)
        );
        assert_eq!(
            take_solo5_protection(os(&["--", "--solo5-protection"])),
            (os(&["--", "--solo5-protection"]), false)
        );
    }
}
