//! The `--log` argument every unikernel takes: which log records are kept,
//! as a default level and levels per target (`info`,
//! `warn,kiln_net=debug`, `kiln_net::driver=trace,www=off`).
//!
//! A record's target is the module path that logged it unless the call
//! names another (`www::access`); a directive `T=LEVEL` applies to target
//! `T` and every target under it (`T::...`), and the longest such `T` wins.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub use log::LevelFilter;

/// The level of records kept when `--log` is not given.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::Info;

/// What `--log` accepts, for error messages.
pub const LOG_EXPECTED: &str = "LEVEL or TARGET=LEVEL, comma-separated, with LEVEL one of off, error, warn, info, debug, trace";

/// A parsed `--log` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    default: LevelFilter,
    /// `(target, level)`, longest target first.
    targets: Vec<(String, LevelFilter)>,
}

impl Default for LogFilter {
    fn default() -> Self {
        LogFilter {
            default: DEFAULT_LEVEL,
            targets: Vec::new(),
        }
    }
}

/// Why a `--log` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilterError {
    /// The directive that did not parse.
    pub directive: String,
}

impl fmt::Display for LogFilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not {LOG_EXPECTED}", self.directive)
    }
}

fn level(text: &str) -> Option<LevelFilter> {
    text.parse().ok()
}

fn valid_target(t: &str) -> bool {
    !t.is_empty()
        && t.split("::").all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

impl LogFilter {
    /// Keeps records at `level` and above from every target.
    pub fn new(level: LevelFilter) -> LogFilter {
        LogFilter {
            default: level,
            targets: Vec::new(),
        }
    }

    /// The filter of an image started without `--log`: the application's
    /// own records (`app`, its crate name) from `info`, every other
    /// target's (kiln's boot information, the stack, drivers) from `warn`.
    /// So a unikernel's console shows what its application says, as a
    /// program's output does; `--log=info` adds the platform's.
    pub fn application(app: &str) -> LogFilter {
        let mut targets = Vec::new();
        let app = app.replace('-', "_");
        if valid_target(&app) {
            targets.push((app, LevelFilter::Info));
        }
        LogFilter {
            default: LevelFilter::Warn,
            targets,
        }
    }

    /// Parses `spec`: comma-separated directives, each a level (the
    /// default for every target) or `TARGET=LEVEL`. Crate names may be
    /// written with `-` (`kiln-net`), as in `Cargo.toml`; targets use `_`.
    pub fn parse(spec: &str) -> Result<LogFilter, LogFilterError> {
        let mut filter = LogFilter::default();
        let error = |d: &str| LogFilterError {
            directive: d.into(),
        };
        if spec.trim().is_empty() {
            return Err(error(spec));
        }
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                None => filter.default = level(directive).ok_or_else(|| error(directive))?,
                Some((target, lvl)) => {
                    let target = target.trim().replace('-', "_");
                    let lvl = level(lvl.trim()).ok_or_else(|| error(directive))?;
                    if !valid_target(&target) {
                        return Err(error(directive));
                    }
                    filter.targets.retain(|(t, _)| *t != target);
                    filter.targets.push((target, lvl));
                }
            }
        }
        filter
            .targets
            .sort_by_key(|(t, _)| core::cmp::Reverse(t.len()));
        Ok(filter)
    }

    /// The most detailed level a record of `target` may have and be kept.
    pub fn level(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .find(|(t, _)| {
                target
                    .strip_prefix(t.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
            .map_or(self.default, |(_, l)| *l)
    }

    /// The most detailed level any target keeps: records above it are
    /// dropped by the `log` macros before their arguments are evaluated.
    pub fn max_level(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|(_, l)| *l)
            .fold(self.default, core::cmp::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_targets() {
        let f = LogFilter::parse("warn,kiln_net=debug,kiln_net::driver=trace,www=off").unwrap();
        assert_eq!(f.level("kiln_net"), LevelFilter::Debug);
        assert_eq!(f.level("kiln_net::stack"), LevelFilter::Debug);
        assert_eq!(f.level("kiln_net::driver"), LevelFilter::Trace);
        assert_eq!(
            f.level("kiln_network"),
            LevelFilter::Warn,
            "a prefix only at ::"
        );
        assert_eq!(f.level("www::access"), LevelFilter::Off);
        assert_eq!(f.level("other"), LevelFilter::Warn);
        assert_eq!(f.max_level(), LevelFilter::Trace);
    }

    #[test]
    fn without_log_the_application_speaks_and_the_platform_warns() {
        let f = LogFilter::application("my-app");
        assert_eq!(f.level("my_app"), LevelFilter::Info);
        assert_eq!(f.level("my_app::http"), LevelFilter::Info);
        assert_eq!(f.level("my_apps"), LevelFilter::Warn);
        assert_eq!(f.level("kiln"), LevelFilter::Warn);
        assert_eq!(f.level("kiln_net::stack"), LevelFilter::Warn);
        assert_eq!(f.max_level(), LevelFilter::Info);
    }

    #[test]
    fn defaults_case_and_dashes() {
        assert_eq!(LogFilter::default().level("x"), LevelFilter::Info);
        let f = LogFilter::parse("DEBUG").unwrap();
        assert_eq!(f.max_level(), LevelFilter::Debug);
        let f = LogFilter::parse("kiln-net=error, ").unwrap();
        assert_eq!(f.level("kiln_net::tcp"), LevelFilter::Error);
        assert_eq!(f.level("www"), LevelFilter::Info);
        assert_eq!(f.max_level(), LevelFilter::Info);
        let f = LogFilter::parse("off").unwrap();
        assert_eq!(f.max_level(), LevelFilter::Off);
        // The later directive for a target wins.
        let f = LogFilter::parse("a=debug,a=warn").unwrap();
        assert_eq!(f.level("a"), LevelFilter::Warn);
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            " ",
            "loud",
            "www=",
            "=debug",
            "a b=info",
            "a:::b=info",
            "a=info=x",
            "www::=info",
        ] {
            assert!(LogFilter::parse(bad).is_err(), "{bad:?}");
        }
        let e = LogFilter::parse("info,www=chatty").unwrap_err();
        assert_eq!(e.directive, "www=chatty");
    }
}
