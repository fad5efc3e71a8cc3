//! The command line, compatible with solo5-hvt:
//! `kiln-hvt [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]`.
//!
//! The parsing is [`kiln_tender::cli`]'s, for the hvt target.

use std::ffi::OsString;

use crate::module::Module;

pub use kiln_tender::cli::{Command, Config, DEFAULT_MEM_MB};

/// Why the command line was refused.
pub type CliError = kiln_tender::cli::CliError<kiln_tender::Hvt>;

/// The `--help` text.
pub fn usage(modules: &[Box<dyn Module>]) -> String {
    kiln_tender::cli::usage::<kiln_tender::Hvt, _>(modules)
}

/// Parses the arguments after the program name.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    modules: &mut [Box<dyn Module>],
) -> Result<Command, CliError> {
    kiln_tender::cli::parse::<kiln_tender::Hvt, _>(args, modules)
}
