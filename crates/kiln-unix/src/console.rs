//! The console device: unbuffered writes to standard output.

use std::io;

use kiln_devices::ConsoleError;

use crate::sys;

/// The console: every write goes straight to file descriptor 1 with
/// `write(2)`.
#[derive(Debug, Clone, Copy)]
pub struct Console {
    fd: i32,
}

impl Console {
    /// The process's standard output.
    pub fn stdout() -> Console {
        Console { fd: 1 }
    }
}

/// Writes all of `bytes` to `fd`, looping on partial writes and EINTR, and
/// waiting when the descriptor is non-blocking and full.
pub(crate) fn write_all(fd: i32, mut bytes: &[u8]) -> Result<(), ConsoleError> {
    while !bytes.is_empty() {
        match sys::write(fd, bytes) {
            // write(2) returns 0 only for an empty buffer, or for a sink
            // that accepts nothing more.
            Ok(0) => return Err(ConsoleError::Closed),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => {
                    sys::wait_writable(fd).map_err(|e| io_error(&e))?;
                }
                Some(libc::EPIPE) => return Err(ConsoleError::Closed),
                _ => return Err(io_error(&e)),
            },
        }
    }
    Ok(())
}

fn io_error(e: &io::Error) -> ConsoleError {
    ConsoleError::Io(e.raw_os_error().unwrap_or(libc::EIO))
}

impl kiln_devices::Console for Console {
    fn write(&self, bytes: &[u8]) -> Result<(), ConsoleError> {
        write_all(self.fd, bytes)
    }
}
