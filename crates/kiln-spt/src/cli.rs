//! The command line, compatible with solo5-spt:
//! `kiln-spt [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]`.
//!
//! The parsing is [`kiln_tender::cli`]'s, for the spt target.

use std::ffi::OsString;

use crate::module::Module;

pub use kiln_tender::cli::{Command, Config, DEFAULT_MEM_MB};

/// Why the command line was refused.
pub type CliError = kiln_tender::cli::CliError<kiln_tender::Spt>;

/// kiln-spt's debugging flag: the guest process waits for gdb to attach
/// to it before its first instruction (docs/debugging.md).
pub const GDB: &str = "--gdb";

/// The `--help` text.
pub fn usage(modules: &[Box<dyn Module>]) -> String {
    let mut text = kiln_tender::cli::usage::<kiln_tender::Spt, _>(modules);
    text.push_str(
        "\ndebugging:\n  --gdb\n      before the guest's first instruction, print the guest process's pid\n      and the command that attaches gdb to it (`gdb -p PID KERNEL`), and\n      wait until a debugger traces it\n",
    );
    text
}

/// Takes [`GDB`] out of the tender's flags (those before KERNEL): the
/// remaining arguments, and whether it was given.
pub fn take_gdb(args: Vec<OsString>) -> (Vec<OsString>, bool) {
    kiln_tender::cli::take_switch(args, GDB)
}

/// Parses the arguments after the program name.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    modules: &mut [Box<dyn Module>],
) -> Result<Command, CliError> {
    kiln_tender::cli::parse::<kiln_tender::Spt, _>(args, modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn gdb_is_taken_before_the_kernel_only() {
        let (rest, gdb) = take_gdb(os(&["--mem=8", "--gdb", "k", "--gdb"]));
        assert_eq!(rest, os(&["--mem=8", "k", "--gdb"]));
        assert!(gdb);
        let (rest, gdb) = take_gdb(os(&["--", "--gdb"]));
        assert_eq!(rest, os(&["--", "--gdb"]));
        assert!(!gdb);
    }
}
