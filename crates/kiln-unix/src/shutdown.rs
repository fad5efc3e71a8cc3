//! The shutdown device on unix: SIGTERM (what `kiln stop` sends), blocked
//! and read from a signalfd registered with the reactor, so that the
//! application awaits it like any other event.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::task::Poll;

use crate::reactor::{Interest, Platform, Registration};
use crate::sys;

/// SIGTERM as a shutdown request. While this device exists, SIGTERM no
/// longer ends the process: the application decides when to return.
pub struct Shutdown {
    // Declared before `fd`: deregistered before the descriptor closes.
    registration: Registration,
    fd: OwnedFd,
    requested: Cell<bool>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("requested", &self.requested.get())
            .finish()
    }
}

impl Shutdown {
    /// Blocks SIGTERM and watches for it with `platform`.
    pub fn new(platform: &'static Platform) -> io::Result<Shutdown> {
        let fd = sys::sigterm_fd()?;
        Ok(Shutdown {
            registration: Registration::new(platform, fd.as_raw_fd()),
            fd,
            requested: Cell::new(false),
        })
    }
}

impl kiln_devices::Shutdown for Shutdown {
    fn requested(&self) -> impl Future<Output = ()> {
        poll_fn(|cx| {
            if self.requested.get() {
                return Poll::Ready(());
            }
            // One signalfd_siginfo is 128 bytes.
            let mut info = [0u8; 128];
            match sys::read(self.fd.as_fd(), &mut info) {
                Ok(n) if n > 0 => {
                    self.requested.set(true);
                    Poll::Ready(())
                }
                _ => {
                    self.registration.register(Interest::Readable, cx.waker());
                    Poll::Pending
                }
            }
        })
    }
}
