//! The console: a byte sink for human-readable output.

use core::fmt;

/// Why console output failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleError {
    /// The host side of the console is gone (for example, a closed pipe).
    #[error("console closed")]
    Closed,
    /// The host reported an I/O error with this OS error code.
    #[error("console I/O error (os error {0})")]
    Io(i32),
}

/// A console. Writes are synchronous and unbuffered: when `write` returns,
/// the bytes have been handed to the host (stdout on unix, the tender's
/// console on hvt and spt).
pub trait Console {
    /// Writes all of `bytes`.
    fn write(&self, bytes: &[u8]) -> Result<(), ConsoleError>;

    /// Writes `line` followed by a newline.
    fn log(&self, line: &str) -> Result<(), ConsoleError> {
        self.write(line.as_bytes())?;
        self.write(b"\n")
    }

    /// Writes formatted text, as `write!` would; see also [`Console::logf`].
    fn print(&self, args: fmt::Arguments<'_>) -> Result<(), ConsoleError> {
        match args.as_str() {
            Some(s) => self.write(s.as_bytes()),
            None => {
                let mut adaptor = Adaptor {
                    console: self,
                    error: None,
                };
                // A formatting error here can only come from `Adaptor`,
                // which records the console error that caused it.
                let _ = fmt::write(&mut adaptor, args);
                adaptor.error.map_or(Ok(()), Err)
            }
        }
    }

    /// Writes formatted text followed by a newline, as `writeln!` would.
    fn logf(&self, args: fmt::Arguments<'_>) -> Result<(), ConsoleError> {
        self.print(args)?;
        self.write(b"\n")
    }
}

impl<C: Console + ?Sized> Console for &C {
    fn write(&self, bytes: &[u8]) -> Result<(), ConsoleError> {
        (**self).write(bytes)
    }
}

struct Adaptor<'a, C: Console + ?Sized> {
    console: &'a C,
    error: Option<ConsoleError>,
}

impl<C: Console + ?Sized> fmt::Write for Adaptor<'_, C> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.console.write(s.as_bytes()).map_err(|e| {
            self.error = Some(e);
            fmt::Error
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    struct Buffer(RefCell<Vec<u8>>);

    impl Console for Buffer {
        fn write(&self, bytes: &[u8]) -> Result<(), ConsoleError> {
            self.0.borrow_mut().extend_from_slice(bytes);
            Ok(())
        }
    }

    struct Closed;

    impl Console for Closed {
        fn write(&self, _: &[u8]) -> Result<(), ConsoleError> {
            Err(ConsoleError::Closed)
        }
    }

    #[test]
    fn logf_formats_and_appends_newline() {
        let console = Buffer(RefCell::new(Vec::new()));
        console
            .logf(format_args!("{} + {} = {}", 1, 2, 1 + 2))
            .unwrap();
        console.log("done").unwrap();
        assert_eq!(&console.0.borrow()[..], b"1 + 2 = 3\ndone\n");
    }

    #[test]
    fn print_reports_the_console_error() {
        let n = 7;
        assert_eq!(Closed.print(format_args!("{n}")), Err(ConsoleError::Closed));
    }
}
