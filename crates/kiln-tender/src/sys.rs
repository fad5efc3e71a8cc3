//! Every `unsafe` operation of the shared code: adopting an inherited
//! descriptor, made non-blocking (taps are opened by `kiln-tap`); the
//! core file's unnamed creation and naming (`--dumpcore`).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `ret`, or the error a negative return value of a system call stands for.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of an inherited descriptor after checking it is open
/// and not below `min_fd` (`EBADF`), and makes it non-blocking (neither
/// tender nor guest may block outside their one wait).
pub fn adopt_fd(fd: RawFd, min_fd: RawFd) -> io::Result<OwnedFd> {
    if fd < min_fd.max(0) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only queries the descriptor table.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the descriptor is open (checked above) and was handed to the
    // tender on its command line to own; nothing else in the process uses it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(fd)
}

/// Opens directory `dir` and an unnamed file in it (`O_TMPFILE`),
/// which [`link_into`] names once it is written: nothing appears in
/// `dir` unless a core is written, and the name is created there, never
/// through a symbolic link. `dir` itself must not be a symbolic link
/// (ENOTDIR or ELOOP).
pub fn open_unnamed_in(dir: &std::path::Path) -> io::Result<(OwnedFd, OwnedFd)> {
    let path = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is a NUL-terminated string living across the call;
    // the result is checked.
    let dirfd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if dirfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dirfd` was just opened and is owned by nobody else.
    let dirfd = unsafe { OwnedFd::from_raw_fd(dirfd) };
    // SAFETY: "." is a NUL-terminated literal; the result is checked.
    let file = unsafe {
        libc::openat(
            dirfd.as_raw_fd(),
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if file < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `file` was just opened and is owned by nobody else.
    Ok((dirfd, unsafe { OwnedFd::from_raw_fd(file) }))
}

/// Gives the unnamed `file` the name `name` in `dir`; fails if the name
/// exists (a link is never followed or replaced).
pub fn link_into(file: RawFd, dir: RawFd, name: &str) -> io::Result<()> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let ret = unsafe { libc::linkat(file, c"".as_ptr(), dir, name.as_ptr(), libc::AT_EMPTY_PATH) };
    if ret == 0 {
        return Ok(());
    }
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc does not.
    let proc = CString::new(format!("/proc/self/fd/{file}"))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: as above.
    let ret = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc.as_ptr(),
            dir,
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopting_checks_the_descriptor() {
        let (_a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(b);
        assert_eq!(
            adopt_fd(fd, fd + 1).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        let owned = adopt_fd(fd, 3).unwrap();
        let flags = rustix::fs::fcntl_getfl(&owned).unwrap();
        assert!(flags.contains(rustix::fs::OFlags::NONBLOCK));
        drop(owned);
        assert!(adopt_fd(fd, 3).is_err(), "a closed descriptor was adopted");
        assert_eq!(
            adopt_fd(-1, 0).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }
}
