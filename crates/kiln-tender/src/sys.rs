//! Every `unsafe` operation of the shared code: opening a tap interface and
//! adopting an inherited descriptor, both made non-blocking; the core
//! file's unnamed creation and naming (`--dumpcore`).
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

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    pad: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Opens the existing tap interface `name` (non-blocking, no packet info);
/// `ENODEV` if there is no interface of that name (TUNSETIFF would create
/// one).
pub fn open_tap(name: &str) -> io::Result<OwnedFd> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let cname =
        std::ffi::CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `cname` is a NUL-terminated string that outlives the call.
    if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let fd = OwnedFd::from(file);
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: TUNSETIFF reads a `struct ifreq`, of which `IfReq` has the
    // layout and size; `req` lives across the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) })?;
    // A tap keeps the offloads its last reader negotiated (kiln's unix
    // target asks for checksum and segmentation offload), killed or not:
    // frames with partial checksums and 64 KiB segments would then reach
    // a guest that has no virtio-net header to read them with. Best
    // effort: a kernel without TUNSETOFFLOAD has no offloads to clear.
    // SAFETY: TUNSETOFFLOAD takes its argument (the offload flags) by
    // value and reads no memory.
    let _ = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD as _, 0 as libc::c_ulong) };
    set_nonblocking(fd.as_raw_fd())?;
    Ok(fd)
}

/// `TUNGETIFF`: `_IOR('T', 210, unsigned int)`.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;

/// `struct ifreq` as SIOCGIFMTU fills it: the name and the MTU.
#[repr(C)]
struct IfReqMtu {
    name: [u8; libc::IFNAMSIZ],
    mtu: libc::c_int,
    pad: [u8; 20],
}

const _: () = assert!(std::mem::size_of::<IfReqMtu>() == 40);

/// The MTU of the tap interface `fd` is attached to (`TUNGETIFF` for its
/// name, then `SIOCGIFMTU`); `None` when `fd` is not a tap (an inherited
/// socket, say) or the interface cannot be asked.
pub fn tap_mtu(fd: RawFd) -> Option<u32> {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        pad: [0; 22],
    };
    // SAFETY: TUNGETIFF writes a `struct ifreq`, of which `IfReq` has the
    // layout and size; `req` lives across the call. On a descriptor that is
    // not a tun/tap device it fails without writing.
    check(unsafe { libc::ioctl(fd, TUNGETIFF as _, &mut req as *mut IfReq) }).ok()?;
    let mut ask = IfReqMtu {
        name: req.name,
        mtu: 0,
        pad: [0; 20],
    };
    // SAFETY: a plain socket(2) call; its result is owned below.
    let sock =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
            .ok()?;
    // SAFETY: `sock` was just created and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: SIOCGIFMTU reads the name and writes the MTU of a `struct
    // ifreq`, of which `IfReqMtu` has the layout and size; `ask` lives
    // across the call.
    check(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFMTU as _,
            &mut ask as *mut IfReqMtu,
        )
    })
    .ok()?;
    u32::try_from(ask.mtu).ok()
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
    set_nonblocking(fd)?;
    // SAFETY: the descriptor is open (checked above) and was handed to the
    // tender on its command line to own; nothing else in the process uses it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an open descriptor change only its flags.
    unsafe {
        let flags = check(libc::fcntl(fd, libc::F_GETFL))?;
        check(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
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
        // SAFETY: F_GETFL only queries the flags of the open descriptor.
        let flags = unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        drop(owned);
        assert!(adopt_fd(fd, 3).is_err(), "a closed descriptor was adopted");
        assert_eq!(
            adopt_fd(-1, 0).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }

    #[test]
    fn bad_tap_names_are_refused_before_any_system_call() {
        for name in ["", "a-name-longer-than-15", "nul\0"] {
            assert_eq!(
                open_tap(name).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{name:?}"
            );
        }
    }
}
