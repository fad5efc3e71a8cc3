//! The one error type of the benchmark command.

use std::path::PathBuf;

use thiserror::Error;

/// Why a measurement or a preparation step failed.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A file operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("cannot start {program}: {source}; hint: {hint}")]
    Spawn {
        /// The program.
        program: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
        /// How to get it.
        hint: &'static str,
    },
    /// A program exited with a failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A program did not finish in time.
    #[error("`{command}` did not finish within {secs} s")]
    Timeout {
        /// The command line.
        command: String,
        /// The bound.
        secs: u64,
    },
    /// A program's output could not be read as expected.
    #[error("cannot read {what} from the output of {program}: {output}")]
    Parse {
        /// The figure looked for.
        what: &'static str,
        /// The program.
        program: &'static str,
        /// The output, shortened.
        output: String,
    },
    /// wrk ran its whole load without completing one request.
    #[error("wrk completed no request in {secs} s (socket errors: {errors})")]
    NoRequest {
        /// How long the load lasted.
        secs: u32,
        /// wrk's socket error counts.
        errors: String,
    },
    /// Something else about the setup is wrong.
    #[error("{0}")]
    Setup(String),
}

impl BenchError {
    /// An [`BenchError::Io`].
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// The last `max` characters of `text`, trimmed, on one line.
pub fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    let start = text.char_indices().rev().nth(max).map_or(0, |(i, _)| i);
    text[start..].replace('\n', " | ")
}
