//! The system calls std does not wrap: `wait4` (a child's CPU time), clearing `FD_CLOEXEC`, and `kill` with any signal.

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use crate::process::Usage;

/// `wait4(pid, WNOHANG)`: the child's end and CPU time once it has
/// exited (it is then reaped), `None` while it runs.
pub(crate) fn wait4_nohang(pid: u32) -> Result<Option<Usage>, std::io::Error> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::other(format!("pid {pid} out of range")))?;
    let mut status = 0;
    // SAFETY: `rusage` is plain data; all zeroes is a valid value for
    // wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to locals valid for writes for the whole
    // call; WNOHANG makes it return at once.
    let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if rc != pid {
        return Ok(None);
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Ok(Some(Usage {
        code,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
    }))
}

/// Clears `FD_CLOEXEC` on `fd`, so that children inherit it.
pub(crate) fn clear_cloexec(fd: impl AsFd) -> Result<(), std::io::Error> {
    // SAFETY: F_SETFD on a descriptor the caller borrows, so open for the
    // whole call; it changes only that descriptor's flags.
    let rc = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_SETFD, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `kill(pid, signal)`.
pub(crate) fn kill(pid: u32, signal: libc::c_int) -> Result<(), std::io::Error> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::other(format!("pid {pid} out of range")))?;
    // SAFETY: kill(2) takes no pointers and changes no memory of ours.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
