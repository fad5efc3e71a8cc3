//! The tap ioctls, the only `unsafe` code of the crate: `TUNSETIFF`,
//! `TUNGETIFF`, `TUNSETOFFLOAD` and `SIOCGIFMTU`, which rustix does not wrap.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::fs::{Mode, OFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// `struct ifreq` with the member these ioctls use: the name, then the
/// flags (TUNSETIFF, TUNGETIFF) or the MTU (SIOCGIFMTU), both `int`-sized
/// at most, then padding up to the union's 24 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    value: libc::c_int,
    pad: [u8; 20],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == std::mem::size_of::<libc::ifreq>());

impl IfReq {
    /// A request naming `name`, which the caller checked is 1 to
    /// `IFNAMSIZ - 1` bytes without NUL.
    fn new(name: &str, value: libc::c_int) -> IfReq {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            value,
            pad: [0; 20],
        };
        for (dst, src) in req.name.iter_mut().zip(name.as_bytes()) {
            *dst = *src;
        }
        req
    }
}

/// `ret`, or the error a negative return value stands for.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A datagram socket to ask interface ioctls on.
fn ioctl_socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Whether an interface called `name` exists.
pub(crate) fn interface_exists(name: &str) -> io::Result<bool> {
    let sock = ioctl_socket()?;
    match rustix::net::netdevice::name_to_index(&sock, name) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::NODEV) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Opens `/dev/net/tun` non-blocking and close-on-exec and attaches it to
/// the tap `name` (created if absent) without packet information, with
/// `IFF_VNET_HDR` if `vnet`.
pub(crate) fn attach(name: &str, vnet: bool) -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        "/dev/net/tun",
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let vnet = if vnet { libc::IFF_VNET_HDR } else { 0 };
    let mut req = IfReq::new(name, libc::IFF_TAP | libc::IFF_NO_PI | vnet);
    // SAFETY: TUNSETIFF reads a `struct ifreq` (name and `short` flags, the
    // low half of `value` on little-endian x86_64) and may write the
    // chosen name back; `IfReq` has its size and layout and lives across
    // the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) })?;
    Ok(fd)
}

/// `TUNSETOFFLOAD` with the `TUN_F_*` flags `flags`.
pub(crate) fn set_offload(fd: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    set_offload_raw(fd.as_raw_fd(), flags)
}

/// `TUNSETOFFLOAD` on descriptor number `fd`, open or not: one system
/// call, no allocation (`io::Error` from the error number).
pub(crate) fn set_offload_raw(fd: RawFd, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument (the flags) by value and
    // reads no memory of ours; on a closed descriptor, or one that is not
    // a tap, it fails without effect.
    check(unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(flags)) }).map(drop)
}

/// The name of the interface tap descriptor `fd` is attached to
/// (`TUNGETIFF`).
pub(crate) fn attached_name(fd: BorrowedFd<'_>) -> io::Result<String> {
    let mut req = IfReq::new("", 0);
    // SAFETY: TUNGETIFF writes a `struct ifreq`, of which `IfReq` has the
    // size and layout; `req` lives across the call. On a descriptor that
    // is not a tun/tap device it fails without writing.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut req as *mut IfReq) })?;
    let len = req.name.iter().position(|&b| b == 0).unwrap_or(0);
    String::from_utf8(req.name[..len].to_vec())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The MTU of interface `name` (`SIOCGIFMTU` on a datagram socket).
pub(crate) fn interface_mtu(name: &str) -> io::Result<libc::c_int> {
    let sock = ioctl_socket()?;
    let mut req = IfReq::new(name, 0);
    // SAFETY: SIOCGIFMTU reads the name and writes the MTU (an `int`, at
    // `value`) of a `struct ifreq`, of which `IfReq` has the size and
    // layout; `req` lives across the call.
    check(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFMTU as _,
            &mut req as *mut IfReq,
        )
    })?;
    Ok(req.value)
}

/// Forks the guard process for the tap `tap` (see `crate::guard`): it
/// waits for end of file on `alive` (the read end of a pipe whose write
/// end only the caller holds), then clears the tap's offloads, closes it
/// and exits, which closes `done` (the write end of a pipe the caller
/// reads). The child's pid, in the caller.
pub(crate) fn fork_guard(tap: RawFd, alive: RawFd, done: RawFd) -> io::Result<libc::pid_t> {
    // SAFETY: `fork` copies the calling thread only, so the child may not
    // take a lock another thread held or allocate: `guard` makes only
    // system calls (async-signal-safe) on numbers and stack memory, and
    // never returns into the caller's code.
    let pid = check(unsafe { libc::fork() })?;
    if pid == 0 {
        guard(tap, alive, done);
    }
    Ok(pid)
}

/// The guard process's whole life (in the child of [`fork_guard`]).
fn guard(tap: RawFd, alive: RawFd, done: RawFd) -> ! {
    // SAFETY: (the whole block) only system calls that take numbers or
    // point to this stack frame's memory and the static name, each valid
    // for the call; `_exit` ends the process without running anything of
    // the parent's (no atexit handler, no destructor).
    unsafe {
        // Its own process group, so that a signal to the tender's group
        // (`kiln stop`'s SIGKILL after its timeout, a terminal's ^C) does
        // not end it before the tender: it ends when the tender is gone.
        libc::setpgid(0, 0);
        for signal in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGPIPE,
        ] {
            libc::signal(signal, libc::SIG_IGN);
        }
        libc::prctl(libc::PR_SET_NAME, c"kiln-tap-guard".as_ptr());
        // Nothing of the tender's but the tap and its two pipe ends: a
        // descriptor kept here (the standard ones, an inherited socket,
        // another guard's pipe) would outlive the tender.
        close_all_but([tap, alive, done]);
        let mut byte = 0u8;
        loop {
            let n = libc::read(alive, (&raw mut byte).cast(), 1);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                break;
            }
        }
        libc::ioctl(tap, libc::TUNSETOFFLOAD, 0 as libc::c_ulong);
        // Closed before `done` (at exit), so that the tap is free for the
        // next reader when the tender sees end of file there.
        libc::close(tap);
        libc::_exit(0)
    }
}

/// Closes every descriptor but the three of `keep`: `close_range` over
/// the gaps, or one `close` at a time (up to 65,536) on a kernel without
/// it. No allocation: the guard calls it after `fork`.
fn close_all_but(mut keep: [RawFd; 3]) {
    keep.sort_unstable();
    let mut first: u32 = 0;
    for fd in keep {
        let Ok(fd) = u32::try_from(fd) else { continue };
        if fd > first {
            close_range(first, fd - 1);
        }
        first = first.max(fd.saturating_add(1));
    }
    close_range(first, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range takes numbers; it closes descriptors this
    // process holds and nothing else.
    if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) } == 0 {
        return;
    }
    for fd in first..=last.min(65_535) {
        // SAFETY: closing a descriptor number; not open is EBADF.
        unsafe { libc::close(fd as RawFd) };
    }
}

/// Closes descriptor number `fd` (async-signal-safe).
pub(crate) fn close_raw(fd: RawFd) {
    // SAFETY: closing a number the caller owns and forgets.
    unsafe { libc::close(fd) };
}

/// Reads `fd` until end of file or an error other than EINTR
/// (async-signal-safe: one `read` at a time into a stack buffer).
pub(crate) fn read_to_eof_raw(fd: RawFd) {
    let mut buf = [0u8; 16];
    loop {
        // SAFETY: `buf` is 16 writable bytes for the call.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 || (n < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return;
        }
    }
}
