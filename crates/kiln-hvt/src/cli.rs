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
        "\nprotection:\n  --solo5-protection\n      map data, heap and stack executable and leave the boot data writable,\n      as solo5-hvt does (kiln-hvt maps them NX and read-only)\n",
    );
    text
}

/// Takes [`SOLO5_PROTECTION`] out of the tender's flags (those before
/// KERNEL): the remaining arguments, and whether it was given.
pub fn take_solo5_protection(args: Vec<OsString>) -> (Vec<OsString>, bool) {
    let mut out = Vec::with_capacity(args.len());
    let mut given = false;
    let mut in_flags = true;
    for arg in args {
        if in_flags && arg == SOLO5_PROTECTION {
            given = true;
            continue;
        }
        if in_flags && (arg == "--" || !arg.to_string_lossy().starts_with('-')) {
            in_flags = false;
        }
        out.push(arg);
    }
    (out, given)
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
