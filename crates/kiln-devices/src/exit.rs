//! How the value an entry function returns becomes the unikernel's exit
//! status.

use alloc::string::{String, ToString};
use core::fmt::Display;

/// The status a unikernel exits with: a code (0 is success) and, on failure,
/// a message that the platform prints before exiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, 0 to 255.
    pub code: u8,
    /// Printed to the console (stderr on unix) before exiting.
    pub message: Option<String>,
}

impl ExitStatus {
    /// Success: code 0, no message.
    pub const SUCCESS: ExitStatus = ExitStatus {
        code: 0,
        message: None,
    };
}

/// A value an entry function may return:
///
/// - `()`: exit 0;
/// - `u8`: exit with that code;
/// - `Result<T, E>` with `T` one of these and `E: Display`: `Ok` as `T`,
///   `Err(e)` exits 1 after printing `error: {e}`.
pub trait Termination {
    /// Converts `self` to an exit status.
    fn exit_status(self) -> ExitStatus;
}

impl Termination for () {
    fn exit_status(self) -> ExitStatus {
        ExitStatus::SUCCESS
    }
}

impl Termination for u8 {
    fn exit_status(self) -> ExitStatus {
        ExitStatus {
            code: self,
            message: None,
        }
    }
}

impl Termination for ExitStatus {
    fn exit_status(self) -> ExitStatus {
        self
    }
}

impl<T: Termination, E: Display> Termination for Result<T, E> {
    fn exit_status(self) -> ExitStatus {
        match self {
            Ok(t) => t.exit_status(),
            Err(e) => ExitStatus {
                code: 1,
                message: Some(e.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_to_codes() {
        assert_eq!(().exit_status(), ExitStatus::SUCCESS);
        assert_eq!(7u8.exit_status().code, 7);
        let err: Result<(), &str> = Err("disk on fire");
        let status = err.exit_status();
        assert_eq!(status.code, 1);
        assert_eq!(status.message.as_deref(), Some("disk on fire"));
        let ok: Result<u8, &str> = Ok(3);
        assert_eq!(ok.exit_status().code, 3);
    }
}
