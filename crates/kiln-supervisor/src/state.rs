//! The daemon's persistent state: one JSON file, `STATE/state.json`,
//! replaced atomically (write a temporary file, fsync it, rename it over
//! the old one, fsync the directory) after every change.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::policy::Exit;
use crate::proto::Spec;

/// The state file's format version.
pub const VERSION: u32 = 1;

/// Where a unikernel is in its life, as last decided by the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// It should run (and does, unless the daemon is about to start it).
    Running,
    /// It exited and is waiting out its backoff before a restart.
    Restarting,
    /// It exited and its policy does not restart it.
    Exited,
    /// It failed too often in a row; the daemon gave up.
    Failed,
    /// `kiln stop` stopped it.
    Stopped,
}

impl Phase {
    /// Whether the daemon wants a process for it.
    pub fn wants_process(self) -> bool {
        matches!(self, Phase::Running | Phase::Restarting)
    }
}

/// One unikernel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// A number unique in this state, for tap names.
    pub id: u64,
    /// What to run.
    pub spec: Spec,
    /// Where it is in its life.
    pub phase: Phase,
    /// Bumped before every start; the process carries it in its
    /// environment.
    pub instance: u64,
    /// The process of the current instance, once started.
    pub pid: Option<i32>,
    /// Its start time in clock ticks after boot (`/proc/PID/stat`), which
    /// tells it from a later process with the same pid.
    pub start_ticks: Option<u64>,
    /// When it started, milliseconds since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// Restarts by policy since `kiln up` or `kiln start`.
    pub restarts: u32,
    /// Failures in a row (reset by a run longer than the healthy time).
    pub failures_in_row: u32,
    /// How the last process ended.
    pub last_exit: Option<Exit>,
    /// When it was created, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// Everything the daemon keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The format version.
    pub version: u32,
    /// This state's identity, in the mark of the processes it started.
    pub daemon_id: String,
    /// The next unit id.
    pub next_id: u64,
    /// The unikernels by name.
    pub units: BTreeMap<String, Unit>,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a state this daemon understands.
    #[error("{path} is not a kiln daemon state file: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
}

impl State {
    /// A new, empty state.
    pub fn new() -> State {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        State {
            version: VERSION,
            daemon_id: format!("{:x}{:x}", now.as_nanos() as u64, std::process::id()),
            next_id: 1,
            units: BTreeMap::new(),
        }
    }

    /// Reads `path`; a missing file is a new state.
    pub fn load(path: &Path) -> Result<State, StateError> {
        let display = path.display().to_string();
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::new()),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path: display,
                    source,
                });
            }
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path: display.clone(),
            message: e.to_string(),
        })?;
        if state.version != VERSION {
            return Err(StateError::Corrupt {
                path: display,
                message: format!("version {} (this daemon reads {VERSION})", state.version),
            });
        }
        Ok(state)
    }

    /// Writes the state to `path` atomically; with `durable`, also to the
    /// disk (fsync of the file before the rename, and of the directory
    /// after). Atomicity is what protects the state from the daemon's own
    /// death; durability only matters for a machine that goes down, after
    /// which no process runs any more: what only describes running
    /// processes (pids, start times) is written without it.
    pub fn save(&self, path: &Path, durable: bool) -> Result<(), StateError> {
        let io = |action, source| StateError::Io {
            action,
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| io("encode", e.into()))?;
        let mut file = File::create(&tmp).map_err(|e| io("create", e))?;
        file.write_all(&bytes).map_err(|e| io("write", e))?;
        if durable {
            file.sync_all().map_err(|e| io("fsync", e))?;
        }
        drop(file);
        fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
        if durable && let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("fsync the directory of", e))?;
        }
        Ok(())
    }
}

impl Default for State {
    fn default() -> State {
        State::new()
    }
}
