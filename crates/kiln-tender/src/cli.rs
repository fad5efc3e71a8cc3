//! The command line both tenders share, compatible with solo5-hvt and
//! solo5-spt: `TENDER [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]`.
//!
//! Module flags have a device name inside the flag (`--net:service=tap0`),
//! so each module parses its own; a flag of a module that was compiled out
//! is named as such.

use std::ffi::OsString;
use std::marker::PhantomData;
use std::path::PathBuf;

use thiserror::Error;

use crate::module::{KNOWN, ModuleError, ModuleFlags};
use crate::target::Target;

/// Default guest memory in MiB.
pub const DEFAULT_MEM_MB: u64 = 512;

/// Why the command line of tender `T` was refused.
#[derive(Debug, Error)]
pub enum CliError<T: Target> {
    /// An argument is not UTF-8.
    #[error("argument {arg:?} is not valid UTF-8")]
    NotUtf8 {
        /// The argument, lossily.
        arg: String,
    },
    /// No KERNEL.
    #[error(
        "no KERNEL given; hint: {} [--mem=MB] [--net:NAME=IFACE] [--block:NAME=PATH] [--] KERNEL [ARGS...]",
        T::TENDER
    )]
    MissingKernel,
    /// `--mem` does not parse.
    #[error("bad flag {flag}: expected --mem=MB with MB a whole number of MiB")]
    BadMem {
        /// The flag.
        flag: String,
    },
    /// A flag no module knows.
    #[error("unknown flag {flag}; hint: see {} --help", T::TENDER)]
    UnknownFlag {
        /// The flag.
        flag: String,
    },
    /// A flag of a compiled-out module.
    #[error(
        "{flag}: this {tender} was built without the {module} module; hint: build {tender} with --features {module}",
        tender = T::TENDER
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
    /// Never constructed: carries the target type.
    #[doc(hidden)]
    #[error("unreachable")]
    _Target(std::convert::Infallible, PhantomData<T>),
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

/// Takes the tender-specific switch `flag` (e.g. kiln-hvt's
/// `--solo5-protection`, kiln-spt's `--gdb`) out of the tender's flags,
/// those before KERNEL (an argument not starting with `-`, or `--`): the
/// remaining arguments, and whether it was given. The same word after
/// KERNEL belongs to the guest and stays.
pub fn take_switch(args: Vec<OsString>, flag: &str) -> (Vec<OsString>, bool) {
    let mut out = Vec::with_capacity(args.len());
    let mut given = false;
    let mut in_flags = true;
    for arg in args {
        if in_flags && arg == flag {
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

/// The `--help` text of tender `T` with `modules` built in.
pub fn usage<T: Target, M: ModuleFlags + ?Sized>(modules: &[Box<M>]) -> String {
    let mut out = format!(
        "usage: {} [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]\n\n{}\n\n\
         flags:\n  --mem=MB\n      guest memory in MiB (default {DEFAULT_MEM_MB}, at most {})\n",
        T::TENDER,
        T::ABOUT,
        T::MAX_MEM_MB
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

/// The `--version` text of tender `T`, at `version`, with `modules` built
/// in: `kiln-hvt 0.1.0 (Solo5 hvt ABI 2, modules: net, block)`.
pub fn version<T: Target, M: ModuleFlags + ?Sized>(version: &str, modules: &[Box<M>]) -> String {
    let names: Vec<&str> = modules.iter().map(|m| m.name()).collect();
    format!(
        "{} {version} (Solo5 {} ABI {}, modules: {})\n",
        T::TENDER,
        T::NAME,
        T::ABI_VERSION,
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    )
}

/// Parses the arguments after the program name of tender `T`, offering
/// each flag to `modules` in turn.
pub fn parse<T: Target, M: ModuleFlags + ?Sized>(
    args: impl IntoIterator<Item = OsString>,
    modules: &mut [Box<M>],
) -> Result<Command, CliError<T>> {
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
    use crate::target::{Hvt, Spt};

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn none() -> Vec<Box<dyn ModuleFlags>> {
        Vec::new()
    }

    /// Both modules, as a tender with default features has them.
    fn compiled() -> Vec<Box<dyn ModuleFlags>> {
        vec![
            Box::new(crate::net::NetFlags::default()),
            Box::new(crate::block::BlockFlags::default()),
        ]
    }

    fn kernel_and_guest_args_on<T: Target>(kernel: &str) {
        let mut modules = compiled();
        let cmd = parse::<T, _>(os(&["--mem=64", kernel, "--x", "y"]), &mut modules).unwrap();
        assert_eq!(
            cmd,
            Command::Run(Config {
                mem_mb: 64,
                kernel: kernel.into(),
                args: vec!["--x".into(), "y".into()],
            })
        );
        let cmd = parse::<T, _>(os(&["--", "--odd-name"]), &mut modules).unwrap();
        assert!(matches!(cmd, Command::Run(c) if c.kernel == std::path::Path::new("--odd-name")));
    }

    #[test]
    fn kernel_and_guest_args() {
        kernel_and_guest_args_on::<Hvt>("k.hvt");
        kernel_and_guest_args_on::<Spt>("k.spt");
    }

    #[test]
    fn bad_flags() {
        let mut modules = compiled();
        assert!(matches!(
            parse::<Hvt, _>(os(&["--mem=lots", "k"]), &mut modules),
            Err(CliError::BadMem { .. })
        ));
        assert!(matches!(
            parse::<Spt, _>(os(&["--frobnicate", "k"]), &mut modules),
            Err(CliError::UnknownFlag { .. })
        ));
        assert!(matches!(
            parse::<Hvt, _>(os(&[]), &mut modules),
            Err(CliError::MissingKernel)
        ));
    }

    #[test]
    fn net_flags() {
        let mut modules = compiled();
        assert!(parse::<Spt, _>(os(&["--net:service=tap0", "k"]), &mut modules).is_ok());
        let mut modules = compiled();
        assert!(matches!(
            parse::<Spt, _>(os(&["--net:service", "k"]), &mut modules),
            Err(CliError::Module(ModuleError::FlagSyntax { .. }))
        ));
        let mut modules = compiled();
        assert!(matches!(
            parse::<Hvt, _>(os(&["--net:a=tap0", "--net:a=tap1", "k"]), &mut modules),
            Err(CliError::Module(ModuleError::DuplicateFlag { .. }))
        ));
    }

    #[test]
    fn compiled_out_module_flags_name_the_feature() {
        for err in [
            parse::<Hvt, _>(os(&["--block:disk=x.img", "k"]), &mut none())
                .unwrap_err()
                .to_string(),
            parse::<Spt, _>(os(&["--block:disk=x.img", "k"]), &mut none())
                .unwrap_err()
                .to_string(),
        ] {
            assert!(err.contains("--features block"), "{err}");
        }
        let err = parse::<Hvt, _>(os(&["--block:disk=x.img", "k"]), &mut none()).unwrap_err();
        assert!(matches!(
            err,
            CliError::ModuleMissing {
                module: "block",
                ..
            }
        ));
    }

    #[test]
    fn messages_name_the_tender() {
        let err = parse::<Spt, _>(os(&["--frobnicate", "k"]), &mut none()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown flag --frobnicate; hint: see kiln-spt --help"
        );
        let err = parse::<Hvt, _>(os(&["--net:a=tap0", "k"]), &mut none()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--net:a=tap0: this kiln-hvt was built without the net module; hint: build kiln-hvt with --features net"
        );
        let err = parse::<Hvt, _>(os(&["--mem=1"]), &mut none()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no KERNEL given; hint: kiln-hvt [--mem=MB]")
        );
    }

    #[test]
    fn versions_list_the_modules() {
        assert_eq!(
            version::<Hvt, _>("1.2.3", &compiled()),
            "kiln-hvt 1.2.3 (Solo5 hvt ABI 2, modules: net, block)\n"
        );
        assert_eq!(
            version::<Spt, _>("1.2.3", &none()),
            "kiln-spt 1.2.3 (Solo5 spt ABI 2, modules: none)\n"
        );
    }

    #[test]
    fn usage_lists_missing_modules() {
        let text = usage::<Spt, _>(&none());
        assert!(text.starts_with("usage: kiln-spt [--mem=MB]"), "{text}");
        assert!(text.contains("(default 512, at most 4096)\n"), "{text}");
        assert!(
            text.ends_with("\nmodules not built in: net, block\n"),
            "{text}"
        );
        let text = usage::<Hvt, _>(&none());
        assert!(text.contains("as a KVM guest;"), "{text}");
        assert!(text.contains("(default 512, at most 65536)\n"), "{text}");
    }
}
