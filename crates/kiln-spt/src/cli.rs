//! The command line, compatible with solo5-spt:
//! `kiln-spt [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]`.
//!
//! The parsing is [`kiln_tender::cli`]'s, for the spt target.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use crate::module::Module;

pub use kiln_tender::cli::{Command, Config, DEFAULT_MEM_MB};

/// Why the command line was refused.
pub type CliError = kiln_tender::cli::CliError<kiln_tender::Spt>;

/// kiln-spt's debugging flag: the guest process waits for gdb to attach
/// to it before its first instruction (docs/debugging.md).
pub const GDB: &str = "--gdb";

/// kiln-spt's core file flag: `--dumpcore=DIR` or `--dumpcore DIR`
/// (docs/debugging.md).
pub const DUMPCORE: &str = "--dumpcore";

/// solo5-spt's core flag: the guest's heap and stack (everything from the
/// end of its image to the top of its memory) are mapped executable too.
pub const X_EXEC_HEAP: &str = "--x-exec-heap";

/// What `--x-exec-heap` prints on stderr, solo5-spt's warning word for word.
pub const X_EXEC_HEAP_WARNING: &str = "WARNING: The use of --x-exec-heap is dangerous and not recommended as it makes the heap and stack executable.";

/// Takes [`X_EXEC_HEAP`] out of the tender's flags (those before KERNEL):
/// the remaining arguments, and whether it was given.
pub fn take_x_exec_heap(args: Vec<OsString>) -> (Vec<OsString>, bool) {
    kiln_tender::cli::take_switch(args, X_EXEC_HEAP)
}

/// `--dumpcore` without a directory.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--dumpcore needs a directory; hint: --dumpcore=DIR")]
pub struct DumpcoreDirMissing;

/// Takes `--dumpcore[=]DIR` out of the tender's flags (those before
/// KERNEL): the remaining arguments, and the directory if given.
pub fn take_dumpcore(
    args: Vec<OsString>,
) -> Result<(Vec<OsString>, Option<PathBuf>), DumpcoreDirMissing> {
    let mut out = Vec::with_capacity(args.len());
    let mut dir = None;
    let mut in_flags = true;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if in_flags && (arg == "--" || !arg.to_string_lossy().starts_with('-')) {
            in_flags = false;
        }
        if !in_flags {
            out.push(arg);
        } else if arg == DUMPCORE {
            dir = Some(PathBuf::from(args.next().ok_or(DumpcoreDirMissing)?));
        } else if let Some(d) = arg.as_bytes().strip_prefix(b"--dumpcore=") {
            if d.is_empty() {
                return Err(DumpcoreDirMissing);
            }
            dir = Some(PathBuf::from(OsStr::from_bytes(d)));
        } else {
            out.push(arg);
        }
    }
    Ok((out, dir))
}

/// The `--help` text.
pub fn usage(modules: &[Box<dyn Module>]) -> String {
    let mut text = kiln_tender::cli::usage::<kiln_tender::Spt, _>(modules);
    text.push_str(
        "\ndebugging:\n  --gdb\n      before the guest's first instruction, print the guest process's pid\n      and the command that attaches gdb to it (`gdb -p PID KERNEL`), and\n      wait until a debugger traces it\n  --dumpcore=DIR\n      when the guest aborts (exit status 255), faults or makes a forbidden\n      system call, write an ELF core file to DIR/core.kiln-spt.PID, for\n      `gdb KERNEL CORE`\n\nprotection:\n  --x-exec-heap\n      map the guest's heap and stack executable, as solo5-spt does with this\n      flag (dangerous: without it they are never executable); the boot data\n      stays read-only\n",
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
    fn dumpcore_is_taken_with_its_directory_before_the_kernel_only() {
        let (rest, dir) = take_dumpcore(os(&[
            "--mem=8",
            "--dumpcore",
            "/tmp/c",
            "k",
            "--dumpcore=x",
        ]))
        .unwrap();
        assert_eq!(rest, os(&["--mem=8", "k", "--dumpcore=x"]));
        assert_eq!(dir, Some(PathBuf::from("/tmp/c")));
        let (rest, dir) = take_dumpcore(os(&["--dumpcore=/d", "--", "k"])).unwrap();
        assert_eq!(rest, os(&["--", "k"]));
        assert_eq!(dir, Some(PathBuf::from("/d")));
        assert_eq!(take_dumpcore(os(&["--dumpcore"])), Err(DumpcoreDirMissing));
        assert_eq!(take_dumpcore(os(&["--dumpcore="])), Err(DumpcoreDirMissing));
        let (_, dir) = take_dumpcore(os(&["k", "--dumpcore", "x"])).unwrap();
        assert_eq!(dir, None);
    }

    #[test]
    fn x_exec_heap_is_taken_before_the_kernel_only() {
        let (rest, given) =
            take_x_exec_heap(os(&["--x-exec-heap", "--mem=8", "k", "--x-exec-heap"]));
        assert_eq!(rest, os(&["--mem=8", "k", "--x-exec-heap"]));
        assert!(given);
        let (rest, given) = take_x_exec_heap(os(&["--", "--x-exec-heap"]));
        assert_eq!(rest, os(&["--", "--x-exec-heap"]));
        assert!(!given);
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
