//! The command line, compatible with solo5-spt:
//! `kiln-spt [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]`.
//!
//! The parsing is [`kiln_tender::cli`]'s, for the spt target.

use std::ffi::OsString;

use crate::module::Module;

pub use kiln_tender::cli::{Command, Config, DEFAULT_MEM_MB};

/// Why the command line was refused.
pub type CliError = kiln_tender::cli::CliError<kiln_tender::Spt>;

/// The `--help` text.
pub fn usage(modules: &[Box<dyn Module>]) -> String {
    kiln_tender::cli::usage::<kiln_tender::Spt, _>(modules)
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
        use crate::module::ModuleError;

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
