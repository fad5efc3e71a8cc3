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
