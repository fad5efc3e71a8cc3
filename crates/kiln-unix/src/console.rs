//! The console device: unbuffered writes to standard output.

use std::io;
use std::os::fd::BorrowedFd;

use kiln_devices::ConsoleError;

use crate::sys;

/// The console: every write goes straight to file descriptor 1 with
/// `write(2)`.
#[derive(Debug, Clone, Copy)]
pub struct Console {
    fd: BorrowedFd<'static>,
}

impl Console {
    /// The process's standard output.
    pub fn stdout() -> Console {
        Console {
            fd: rustix::stdio::stdout(),
        }
    }
}

/// Writes all of `bytes` to `fd`, looping on partial writes and EINTR, and
/// waiting when the descriptor is non-blocking and full.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), ConsoleError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn writes_everything_even_past_the_socket_buffer() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        // Non-blocking, so that a full buffer takes the EAGAIN path.
        ours.set_nonblocking(true).unwrap();
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).unwrap();
            got
        });
        write_all(ours.as_fd(), &data).unwrap();
        drop(ours);
        assert!(reader.join().unwrap() == data);
    }

    #[test]
    fn a_closed_reader_is_reported_as_closed() {
        crate::platform(); // SIGPIPE ignored.
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        assert_eq!(write_all(ours.as_fd(), b"hello"), Err(ConsoleError::Closed));
    }

    #[test]
    fn a_bad_descriptor_is_an_io_error() {
        // Open, but not for writing.
        let read_only = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            write_all(read_only.as_fd(), b"x"),
            Err(ConsoleError::Io(libc::EBADF))
        );
    }
}
