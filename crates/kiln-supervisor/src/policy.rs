//! The restart policy: which exits restart a unikernel, after how long, and
//! when the daemon gives up. The exit-status table follows albatross
//! (robur-coop/albatross, `src/vmm_core.ml`, `should_restart`); the
//! differences are kiln's and are listed in docs/supervisor.md.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proto::Restart;

/// How a unikernel's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it (not one `kiln stop` sent).
    Signal(i32),
    /// It ended while the daemon was not running, so its status is unknown.
    Unknown,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
            Exit::Unknown => f.write_str("an unknown status"),
        }
    }
}

/// What an exit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Exit 0: the unikernel finished.
    Clean,
    /// Exit 60 to 64 (albatross: reserved, help, usage; 64 is also what
    /// kiln's generated crates exit with on a bad runtime argument):
    /// starting it again with the same arguments cannot help.
    Usage,
    /// Anything else: 1 (an `Err` from the entry function, a device that
    /// could not be attached), 255 (abort), other codes, a signal, an
    /// unknown status.
    Failure,
}

impl Exit {
    /// Classifies the exit.
    pub fn class(self) -> Class {
        match self {
            Exit::Code(0) => Class::Clean,
            Exit::Code(60..=64) => Class::Usage,
            _ => Class::Failure,
        }
    }
}

/// Whether `policy` starts the unikernel again after `exit`.
pub fn should_restart(policy: Restart, exit: Exit) -> bool {
    match (policy, exit.class()) {
        (_, Class::Usage) | (Restart::Never, _) => false,
        (Restart::OnFailure, Class::Clean) => false,
        (Restart::OnFailure, Class::Failure) | (Restart::Always, _) => true,
    }
}

/// The backoff settings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The delay before the first restart.
    pub first: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Restarts in a row (each after a run shorter than `healthy`) before
    /// the daemon gives up and marks the unikernel failed.
    pub limit: u32,
    /// A run at least this long resets the count.
    pub healthy: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(30),
            limit: 10,
            healthy: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before restart number `n` in a row (1 for the first):
    /// `first`, doubled each time, at most `max`.
    pub fn delay(&self, n: u32) -> Duration {
        let shift = n.saturating_sub(1).min(20);
        self.first.saturating_mul(1 << shift).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_table() {
        use Restart::*;
        let cases = [
            (Exit::Code(0), [false, false, true]),
            (Exit::Code(1), [false, true, true]),
            (Exit::Code(2), [false, true, true]),
            (Exit::Code(63), [false, false, false]),
            (Exit::Code(64), [false, false, false]),
            (Exit::Code(65), [false, true, true]),
            (Exit::Code(255), [false, true, true]),
            (Exit::Signal(9), [false, true, true]),
            (Exit::Unknown, [false, true, true]),
        ];
        for (exit, expect) in cases {
            for (policy, want) in [Never, OnFailure, Always].into_iter().zip(expect) {
                assert_eq!(should_restart(policy, exit), want, "{policy:?} {exit:?}");
            }
        }
    }

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(50), Duration::from_secs(30));
    }
}
