//! The command line, compatible with solo5-spt:
//! `kiln-spt [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]`.
//!
//! Module flags have a device name inside the flag (`--net:service=tap0`),
//! so each module parses its own; a flag of a module that was compiled out
//! is named as such.

use std::ffi::OsString;
use std::path::PathBuf;

use thiserror::Error;

use crate::module::{KNOWN, Module, ModuleError};

/// Default guest memory in MiB.
pub const DEFAULT_MEM_MB: u64 = 512;

/// Why the command line was refused.
#[derive(Debug, Error)]
pub enum CliError {
    /// An argument is not UTF-8.
    #[error("argument {arg:?} is not valid UTF-8")]
    NotUtf8 {
        /// The argument, lossily.
        arg: String,
    },
    /// No KERNEL.
    #[error(
        "no KERNEL given; hint: kiln-spt [--mem=MB] [--net:NAME=IFACE] [--block:NAME=PATH] [--] KERNEL [ARGS...]"
    )]
    MissingKernel,
    /// `--mem` does not parse.
    #[error("bad flag {flag}: expected --mem=MB with MB a whole number of MiB")]
    BadMem {
        /// The flag.
        flag: String,
    },
    /// A flag no module knows.
    #[error("unknown flag {flag}; hint: see kiln-spt --help")]
    UnknownFlag {
        /// The flag.
        flag: String,
    },
    /// A flag of a compiled-out module.
    #[error(
        "{flag}: this kiln-spt was built without the {module} module; hint: build kiln-spt with --features {module}"
    )]
    ModuleMissing {
        /// The flag.
        flag: String,
        /// The module.
        module: &'static str,
    },
    /// A module refused its flag.
    #[error(transparent)]
    Module(#[from] ModuleError),
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--help`.
    Help,
    /// `--version`.
    Version,
    /// Run KERNEL.
    Run(Config),
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Guest memory in MiB.
    pub mem_mb: u64,
    /// The image.
    pub kernel: PathBuf,
    /// Arguments after KERNEL, for the guest.
    pub args: Vec<String>,
}

/// The `--help` text.
pub fn usage(modules: &[Box<dyn Module>]) -> String {
    let mut out = String::from(
        "usage: kiln-spt [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]\n\n\
         Runs the spt image KERNEL as a seccomp-sandboxed process; ARGS become its command line.\n\
         The exit status is the guest's (255 if it aborts, crashes or is killed by the\n\
         seccomp filter; 1 if the tender cannot start it).\n\n\
         flags:\n  --mem=MB\n      guest memory in MiB (default 512, at most 4096)\n",
    );
    for m in modules {
        out.push_str(m.usage());
    }
    let missing: Vec<&str> = KNOWN
        .iter()
        .filter(|k| !modules.iter().any(|m| m.name() == k.name))
        .map(|k| k.name)
        .collect();
    if !missing.is_empty() {
        out.push_str(&format!("\nmodules not built in: {}\n", missing.join(", ")));
    }
    out
}

/// Parses the arguments after the program name.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    modules: &mut [Box<dyn Module>],
) -> Result<Command, CliError> {
    let mut args = args.into_iter().map(|a| {
        a.into_string().map_err(|a| CliError::NotUtf8 {
            arg: a.to_string_lossy().into_owned(),
        })
    });
    let mut mem_mb = DEFAULT_MEM_MB;
    let kernel = loop {
        let Some(arg) = args.next() else {
            return Err(CliError::MissingKernel);
        };
        let arg = arg?;
        if arg == "--" {
            break args.next().ok_or(CliError::MissingKernel)??;
        }
        if arg == "--help" || arg == "-h" {
            return Ok(Command::Help);
        }
        if arg == "--version" {
            return Ok(Command::Version);
        }
        if let Some(mb) = arg.strip_prefix("--mem=") {
            mem_mb = mb
                .parse()
                .map_err(|_| CliError::BadMem { flag: arg.clone() })?;
            continue;
        }
        if arg.starts_with('-') {
            let mut taken = false;
            for m in modules.iter_mut() {
                if m.parse_flag(&arg)? {
                    taken = true;
                    break;
                }
            }
            if taken {
                continue;
            }
            if let Some(k) = KNOWN
                .iter()
                .find(|k| k.flag_prefixes.iter().any(|p| arg.starts_with(p)))
            {
                return Err(CliError::ModuleMissing {
                    flag: arg,
                    module: k.name,
                });
            }
            return Err(CliError::UnknownFlag { flag: arg });
        }
        break arg;
    };
    let args = args.collect::<Result<Vec<_>, _>>()?;
    Ok(Command::Run(Config {
        mem_mb,
        kernel: PathBuf::from(kernel),
        args,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn kernel_and_guest_args() {
        let mut modules = crate::module::compiled();
        let cmd = parse(os(&["--mem=64", "k.spt", "--x", "y"]), &mut modules).unwrap();
        assert_eq!(
            cmd,
            Command::Run(Config {
                mem_mb: 64,
                kernel: "k.spt".into(),
                args: vec!["--x".into(), "y".into()],
            })
        );
        let cmd = parse(os(&["--", "--odd-name"]), &mut modules).unwrap();
        assert!(matches!(cmd, Command::Run(c) if c.kernel == std::path::Path::new("--odd-name")));
    }

    #[test]
    fn bad_flags() {
        let mut modules = crate::module::compiled();
        assert!(matches!(
            parse(os(&["--mem=lots", "k"]), &mut modules),
            Err(CliError::BadMem { .. })
        ));
        assert!(matches!(
            parse(os(&["--frobnicate", "k"]), &mut modules),
            Err(CliError::UnknownFlag { .. })
        ));
        assert!(matches!(
            parse(os(&[]), &mut modules),
            Err(CliError::MissingKernel)
        ));
    }

    #[cfg(feature = "net")]
    #[test]
    fn net_flags() {
        let mut modules = crate::module::compiled();
        assert!(parse(os(&["--net:service=tap0", "k"]), &mut modules).is_ok());
        let mut modules = crate::module::compiled();
        assert!(matches!(
            parse(os(&["--net:service", "k"]), &mut modules),
            Err(CliError::Module(ModuleError::FlagSyntax { .. }))
        ));
        let mut modules = crate::module::compiled();
        assert!(matches!(
            parse(os(&["--net:a=tap0", "--net:a=tap1", "k"]), &mut modules),
            Err(CliError::Module(ModuleError::DuplicateFlag { .. }))
        ));
    }

    #[test]
    fn compiled_out_module_flags_name_the_feature() {
        let mut none: Vec<Box<dyn Module>> = Vec::new();
        let err = parse(os(&["--block:disk=x.img", "k"]), &mut none).unwrap_err();
        assert!(matches!(
            err,
            CliError::ModuleMissing {
                module: "block",
                ..
            }
        ));
        assert!(err.to_string().contains("--features block"));
    }
}
