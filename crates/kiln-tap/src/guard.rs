//! The guard of a tap opened with offloads: a small process that clears
//! them (`TUNSETOFFLOAD` 0) once the process that opened the tap is gone,
//! however it ended.
//!
//! A tap keeps the offloads its last reader set, and a reader that opens
//! it without `IFF_VNET_HDR` (Solo5's tenders, any plain tap program)
//! then gets TCP segments of up to 64 KiB and partial checksums (see
//! `docs/bulk.md`, "A killed reader's offloads"). kiln clears them on
//! every end it controls; a process killed with SIGKILL, or by a signal it
//! does not catch, clears nothing. The guard covers those ends: forked
//! when the tap is opened, it holds the tap (the same open file) and the
//! read end of a pipe whose write end only the opener holds. When the
//! opener's descriptors close, whatever ended it, the guard reads end of
//! file, clears the offloads, closes the tap and exits.
//!
//! It runs in a process group of its own with the usual stop signals
//! ignored, so that a signal to the opener's group (`kiln stop`'s SIGKILL)
//! leaves it to do its work, and it keeps no other descriptor of the
//! opener's (not its standard output, not an inherited socket).
//!
//! On every end the opener controls, [`Guard::stop`] (or [`stop_raw`] from
//! a signal handler) closes the pipe and waits for the guard to have
//! closed the tap, so that the tap is free for the next reader when the
//! opener exits. After a SIGKILL the guard holds the tap for the moment it
//! takes to wake and clear it: [`crate::open`] waits for it
//! ([`crate::BUSY_WAIT`]); another program started in that moment gets
//! `EBUSY`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use crate::sys;

/// A running guard (see the module's documentation). Dropping it stops
/// it as [`Guard::stop`] does.
#[derive(Debug)]
pub struct Guard {
    pid: libc::pid_t,
    alive: Option<OwnedFd>,
    done: Option<OwnedFd>,
}

/// A guard's numbers, for code that cannot drop a [`Guard`] (a signal
/// handler, a seccomp filter that must name the descriptors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawGuard {
    /// The guard's process id.
    pub pid: libc::pid_t,
    /// The write end of the pipe the guard waits on.
    pub alive: RawFd,
    /// The read end of the pipe the guard closes as it exits.
    pub done: RawFd,
}

impl Guard {
    /// Forks the guard of `tap`.
    pub fn spawn(tap: BorrowedFd<'_>) -> io::Result<Guard> {
        use rustix::pipe::{PipeFlags, pipe_with};
        let (alive_r, alive_w) = pipe_with(PipeFlags::CLOEXEC)?;
        let (done_r, done_w) = pipe_with(PipeFlags::CLOEXEC)?;
        let pid = sys::fork_guard(tap.as_raw_fd(), alive_r.as_raw_fd(), done_w.as_raw_fd())?;
        Ok(Guard {
            pid,
            alive: Some(alive_w),
            done: Some(done_r),
        })
    }

    /// The guard's process id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Gives the descriptors up to the caller, who stops the guard with
    /// [`stop_raw`] and may reap it with [`reap`].
    pub fn into_raw(mut self) -> RawGuard {
        let alive = self.alive.take().map_or(-1, IntoRawFd::into_raw_fd);
        let done = self.done.take().map_or(-1, IntoRawFd::into_raw_fd);
        let pid = self.pid;
        // Not dropped: that would stop and reap the guard.
        std::mem::forget(self);
        RawGuard { pid, alive, done }
    }

    /// Stops the guard: it clears the tap's offloads (the caller is done
    /// with them), closes the tap and exits; returns once it has, and
    /// reaps it.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let alive = self.alive.take().map_or(-1, IntoRawFd::into_raw_fd);
        let done = self.done.take().map_or(-1, IntoRawFd::into_raw_fd);
        stop_raw(alive, done);
        reap(self.pid);
    }
}

/// Stops a guard from its numbers: closes `alive` (the guard then clears
/// the offloads, closes the tap and exits), reads `done` to end of file
/// (the guard has closed the tap) and closes it. Only `close` and `read`:
/// async-signal-safe. A negative number is skipped.
pub fn stop_raw(alive: RawFd, done: RawFd) {
    if alive >= 0 {
        sys::close_raw(alive);
    }
    if done >= 0 {
        sys::read_to_eof_raw(done);
        sys::close_raw(done);
    }
}

/// Reaps the stopped guard `pid` (`waitpid`), so that it does not stay a
/// zombie while the opener lives on. An error (already reaped) is
/// ignored.
pub fn reap(pid: libc::pid_t) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}
