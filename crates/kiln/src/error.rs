//! The errors of `kiln` and how they become messages and exit codes.

use std::path::PathBuf;

use kiln_config::ConfigError;

/// Why a `kiln` command failed.
#[derive(Debug, thiserror::Error)]
pub enum KilnError {
    /// The configuration is invalid, or configuring failed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `kiln new` was given a bad name or an existing directory.
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// The fix.
        hint: String,
    },
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What kiln was doing (`create`, `remove`, `copy ... to`).
        action: String,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// cargo could not be started or failed.
    #[error("{0}")]
    Build(String),
    /// A disk image could not be made.
    #[error("cannot make the disk image")]
    Image(#[source] kiln_store::image::ImageError),
}

impl KilnError {
    /// The exit code: 2 for usage and configuration errors, 1 for build and
    /// run failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            KilnError::Config(e) => e.exit_code(),
            KilnError::Usage { .. } => 2,
            KilnError::Io { .. } | KilnError::Build(_) | KilnError::Image(_) => 1,
        }
    }

    /// An I/O error while doing `action` on `path`.
    pub fn io(
        action: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> KilnError {
        KilnError::Io {
            action: action.into(),
            path: path.into(),
            source,
        }
    }
}

/// Whether stderr gets colours: not with `NO_COLOR`, not when it is not a
/// terminal.
pub fn color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Renders `error` for stderr.
pub fn render(error: &KilnError) -> String {
    match error {
        KilnError::Config(ConfigError::Invalid(located)) => {
            kiln_config::diagnostic::render(located, color())
        }
        KilnError::Config(e) => {
            let mut s = format!("error: {e}");
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                s.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            s.push('\n');
            if let Some(help) = miette::Diagnostic::help(e) {
                s.push_str(&format!("  hint: {help}\n"));
            }
            s
        }
        KilnError::Usage { message, hint } => format!("error: {message}\n  hint: {hint}\n"),
        KilnError::Image(e) => {
            // The image error's message may carry a `hint:` line of its own.
            let mut s = format!("error: {error}: {e}");
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                s.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            s.push('\n');
            s
        }
        other => format!("error: {other}\n"),
    }
}
