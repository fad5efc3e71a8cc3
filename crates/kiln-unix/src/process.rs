//! The process around a unikernel: its arguments and its exit.

use std::io::Write;

use kiln_devices::ExitStatus;

/// The command line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// An argument is not valid UTF-8.
    #[error("argument {position} is not valid UTF-8: {lossy:?}")]
    NotUnicode {
        /// Its position on the command line (1 is the first argument).
        position: usize,
        /// The argument with invalid sequences replaced by U+FFFD.
        lossy: String,
    },
}

/// The process's arguments, without the program name.
pub fn args() -> Result<Vec<String>, ArgsError> {
    std::env::args_os()
        .enumerate()
        .skip(1)
        .map(|(position, arg)| {
            arg.into_string().map_err(|arg| ArgsError::NotUnicode {
                position,
                lossy: arg.to_string_lossy().into_owned(),
            })
        })
        .collect()
}

/// Ends the process with `status`: prints `error: {message}` to stderr if
/// there is a message, then exits with `status.code`. Nothing is buffered,
/// so there is nothing else to flush.
pub fn exit(status: ExitStatus) -> ! {
    if let Some(message) = &status.message {
        // Nothing can be done if stderr is gone; the exit code still says it.
        let _ = writeln!(std::io::stderr(), "error: {message}");
    }
    std::process::exit(i32::from(status.code))
}
