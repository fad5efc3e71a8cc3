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
        "\ndebugging:\n  --gdb[=ADDR:PORT]\n      stop at the guest's entry point and wait for gdb on ADDR:PORT\n      [default: 127.0.0.1:1234] (needs a tender built with the gdb module)\n  --gdb-port=N\n      the port for --gdb, as solo5-hvt takes it [default: 1234]; kiln-hvt\n      listens on 127.0.0.1 (solo5-hvt: every address): to listen elsewhere\n      give --gdb=ADDR:PORT instead, e.g. --gdb=0.0.0.0:1234\n  --dumpcore=DIR\n      when the guest aborts or faults, write an ELF core file to\n      DIR/core.kiln-hvt.PID, for `gdb IMAGE CORE`\n\nnet ring:\n  --no-net-ring\n      do not offer Solo5's net ring: the guest uses the hypercalls (as\n      solo5-hvt's flag; KILN_HVT_NO_RING_IO=1 does the same)\n\nmemory:\n  --no-huge-pages\n      keep guest memory on the host's small pages (by default kiln-hvt asks\n      for transparent huge pages: less CPU per byte, about 2 MiB more resident)\n\nprotection:\n  --solo5-protection\n      map data, heap and stack executable and leave the boot data writable,\n      as solo5-hvt does (kiln-hvt maps them NX and read-only)\n",
    );
    text
}

/// solo5-hvt's core flag that keeps the net ring from being offered (the
/// guest uses the hypercalls), as `KILN_HVT_NO_RING_IO=1` does.
pub const NO_NET_RING: &str = "--no-net-ring";

/// Takes [`NO_NET_RING`] out of the tender's flags (those before KERNEL):
/// the remaining arguments, and whether it was given.
pub fn take_no_net_ring(args: Vec<OsString>) -> (Vec<OsString>, bool) {
    kiln_tender::cli::take_switch(args, NO_NET_RING)
}

/// kiln-hvt's flag that keeps guest memory on the host's small pages
/// (by default it asks for transparent huge pages: [`crate::sys::Mapping::advise_huge_pages`]).
pub const NO_HUGE_PAGES: &str = "--no-huge-pages";

/// Takes [`NO_HUGE_PAGES`] out of the tender's flags (those before
/// KERNEL): the remaining arguments, and whether it was given.
pub fn take_no_huge_pages(args: Vec<OsString>) -> (Vec<OsString>, bool) {
    kiln_tender::cli::take_switch(args, NO_HUGE_PAGES)
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
/// solo5-hvt's port flag: `--gdb-port=N` sets the port the stub listens on
/// (at kiln's default address, 127.0.0.1; solo5-hvt listens on every
/// address), without turning the stub on.
pub const GDB_PORT: &str = "--gdb-port=";
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
    /// `--gdb-port=` with something that is not a port (solo5-hvt's
    /// message, and its exit status 1).
    #[error(
        "Malformed argument to --gdb-port: {0:?} is not a port from 0 to 65535; hint: --gdb-port=1234"
    )]
    GdbPort(String),
    /// `--gdb-port=N` beside `--gdb=ADDR:PORT`, which gives the port too.
    #[error(
        "--gdb-port={port} and --gdb={addr} both give the port; hint: --gdb={addr} alone, or --gdb --gdb-port={port} (listens on 127.0.0.1)"
    )]
    GdbPortTwice {
        /// The port of `--gdb-port`.
        port: String,
        /// The address of `--gdb=`.
        addr: String,
    },
    /// `--dumpcore` without a directory.
    #[error("--dumpcore needs a directory; hint: --dumpcore=DIR")]
    DumpcoreDir,
    /// `--gdb` or `--gdb-port` given to a tender built without the gdb
    /// module.
    #[error(
        "{0}: this kiln-hvt was built without the gdb module; hint: `kiln run -t hvt --gdb` builds one with it, or build kiln-hvt with `--features gdb`"
    )]
    NoGdb(&'static str),
}

/// The port of `--gdb-port=N`: decimal digits only, 0 to 65535 (solo5-hvt's
/// range; 0 lets the host choose, and the stub prints the port it got).
fn gdb_port(text: &str) -> Result<u16, DebugFlagError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DebugFlagError::GdbPort(text.to_string()));
    }
    text.parse()
        .map_err(|_| DebugFlagError::GdbPort(text.to_string()))
}

/// Takes `--gdb[=ADDR:PORT]`, `--gdb-port=N` and `--dumpcore[=]DIR` out of
/// the tender's flags (those before KERNEL).
pub fn take_debug_flags(
    args: Vec<OsString>,
) -> Result<(Vec<OsString>, DebugFlags), DebugFlagError> {
    let mut out = Vec::with_capacity(args.len());
    let mut flags = DebugFlags::default();
    let mut gdb_addr: Option<String> = None;
    let mut port: Option<(u16, String)> = None;
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
            flags.gdb = Some(
                GDB_DEFAULT
                    .parse()
                    .map_err(|_| DebugFlagError::NoGdb(GDB))?,
            );
            gdb_addr = None;
        } else if let Some(addr) = text.strip_prefix("--gdb=") {
            flags.gdb = Some(
                addr.parse()
                    .map_err(|_| DebugFlagError::GdbAddress(addr.to_string()))?,
            );
            gdb_addr = Some(addr.to_string());
        } else if let Some(n) = text.strip_prefix(GDB_PORT) {
            port = Some((gdb_port(n)?, n.to_string()));
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
    if let Some((port, text)) = port {
        if !cfg!(feature = "gdb") {
            return Err(DebugFlagError::NoGdb("--gdb-port"));
        }
        if let Some(addr) = gdb_addr {
            return Err(DebugFlagError::GdbPortTwice { port: text, addr });
        }
        // As solo5-hvt: the port is kept for `--gdb`, given before or after.
        if let Some(addr) = &mut flags.gdb {
            addr.set_port(port);
        }
    }
    if flags.gdb.is_some() && !cfg!(feature = "gdb") {
        return Err(DebugFlagError::NoGdb(GDB));
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
            assert_eq!(gdb, Err(DebugFlagError::NoGdb(GDB)));
        }
    }

    /// solo5-hvt's `--gdb-port=N` (gdb module): the port for `--gdb`,
    /// before or after it, on kiln's address; alone it turns nothing on;
    /// a malformed port is refused with solo5-hvt's message.
    #[test]
    fn gdb_port_sets_the_port_of_the_stub() {
        let taken = |args: &[&str]| take_debug_flags(os(args)).map(|(rest, f)| (rest, f.gdb));
        if cfg!(feature = "gdb") {
            let want = Some("127.0.0.1:4321".parse().unwrap());
            assert_eq!(
                taken(&["--gdb", "--gdb-port=4321", "k", "--gdb-port=9"]),
                Ok((os(&["k", "--gdb-port=9"]), want))
            );
            assert_eq!(taken(&["--gdb-port=4321", "--gdb", "k"]).unwrap().1, want);
            assert_eq!(
                taken(&["--gdb-port=0", "--gdb", "k"]).unwrap().1,
                Some("127.0.0.1:0".parse().unwrap())
            );
            assert_eq!(
                taken(&["--gdb-port=65535", "--gdb", "k"]).unwrap().1,
                Some("127.0.0.1:65535".parse().unwrap())
            );
            assert_eq!(taken(&["--gdb-port=4321", "k"]), Ok((os(&["k"]), None)));
            assert!(matches!(
                taken(&["--gdb=0.0.0.0:1", "--gdb-port=2", "k"]),
                Err(DebugFlagError::GdbPortTwice { .. })
            ));
        } else {
            assert_eq!(
                taken(&["--gdb-port=4321", "k"]),
                Err(DebugFlagError::NoGdb("--gdb-port"))
            );
        }
        for bad in [
            "",
            "x",
            "65536",
            "-1",
            "+1",
            " 1",
            "12ab",
            "99999999999999999999",
        ] {
            let flag = format!("--gdb-port={bad}");
            let err = take_debug_flags(os(&["--gdb", &flag, "k"])).unwrap_err();
            assert_eq!(err, DebugFlagError::GdbPort(bad.into()));
            assert!(
                err.to_string()
                    .starts_with("Malformed argument to --gdb-port"),
                "{err}"
            );
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
