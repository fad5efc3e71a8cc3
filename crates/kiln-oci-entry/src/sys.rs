//! Every `unsafe` operation of the entrypoint: interface ioctls, the tap,
//! the netlink socket, `mknod` and clearing close-on-exec.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCGIFADDR: libc::c_ulong = 0x8915;
const SIOCGIFNETMASK: libc::c_ulong = 0x891b;
const SIOCGIFMTU: libc::c_ulong = 0x8921;
const SIOCSIFMTU: libc::c_ulong = 0x8922;
const SIOCGIFHWADDR: libc::c_ulong = 0x8927;
const SIOCGIFINDEX: libc::c_ulong = 0x8933;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_UP: u16 = 0x1;
const IFF_TAP: u16 = 0x0002;
const IFF_NO_PI: u16 = 0x1000;

/// `struct ifreq`: a name and a 24-byte union, read and written as bytes.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<IfReq> {
        let mut req = IfReq {
            name: [0; 16],
            data: [0; 24],
        };
        if name.is_empty() || name.len() >= req.name.len() || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {name:?}"),
            ));
        }
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(req)
    }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A socket for interface ioctls.
pub struct Ctl(OwnedFd);

impl Ctl {
    /// Opens an `AF_INET` datagram socket.
    pub fn open() -> io::Result<Ctl> {
        // SAFETY: plain socket(2); the result is checked and owned at once.
        let fd = check(unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(Ctl(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ioctl(&self, request: libc::c_ulong, req: &mut IfReq) -> io::Result<()> {
        // SAFETY: every request used here reads or writes a `struct ifreq`,
        // which `IfReq` matches in size (40 bytes) and layout.
        check(unsafe { libc::ioctl(self.0.as_raw_fd(), request as _, req as *mut IfReq) })?;
        Ok(())
    }

    fn get(&self, iface: &str, request: libc::c_ulong) -> io::Result<[u8; 24]> {
        let mut req = IfReq::new(iface)?;
        self.ioctl(request, &mut req)?;
        Ok(req.data)
    }

    /// The interface's index.
    pub fn index(&self, iface: &str) -> io::Result<u32> {
        let d = self.get(iface, SIOCGIFINDEX)?;
        Ok(u32::from_ne_bytes([d[0], d[1], d[2], d[3]]))
    }

    /// The interface's MTU.
    pub fn mtu(&self, iface: &str) -> io::Result<u32> {
        let d = self.get(iface, SIOCGIFMTU)?;
        Ok(u32::from_ne_bytes([d[0], d[1], d[2], d[3]]))
    }

    /// Sets the interface's MTU.
    pub fn set_mtu(&self, iface: &str, mtu: u32) -> io::Result<()> {
        let mut req = IfReq::new(iface)?;
        req.data[..4].copy_from_slice(&mtu.to_ne_bytes());
        self.ioctl(SIOCSIFMTU, &mut req)
    }

    /// The interface's MAC address.
    pub fn mac(&self, iface: &str) -> io::Result<[u8; 6]> {
        // A sockaddr: family (2 bytes), then the address.
        let d = self.get(iface, SIOCGIFHWADDR)?;
        Ok([d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    /// The interface's (first) IPv4 address, or `None` if it has none.
    pub fn ipv4(&self, iface: &str) -> io::Result<Option<(Ipv4Addr, Ipv4Addr)>> {
        // A sockaddr_in: family, port, then the address.
        let addr = match self.get(iface, SIOCGIFADDR) {
            Ok(d) => Ipv4Addr::new(d[4], d[5], d[6], d[7]),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => return Ok(None),
            Err(e) => return Err(e),
        };
        let d = self.get(iface, SIOCGIFNETMASK)?;
        Ok(Some((addr, Ipv4Addr::new(d[4], d[5], d[6], d[7]))))
    }

    /// Brings the interface up.
    pub fn up(&self, iface: &str) -> io::Result<()> {
        let d = self.get(iface, SIOCGIFFLAGS)?;
        let flags = u16::from_ne_bytes([d[0], d[1]]) | IFF_UP;
        let mut req = IfReq::new(iface)?;
        req.data[..2].copy_from_slice(&flags.to_ne_bytes());
        self.ioctl(SIOCSIFFLAGS, &mut req)
    }
}

/// Creates `/dev/net/tun` (character device 10:200) if it is missing:
/// engines do not always put it in a container's `/dev`, though runc's
/// default device rules let a container use it.
pub fn ensure_tun_node() -> io::Result<()> {
    const PATH: &str = "/dev/net/tun";
    if std::path::Path::new(PATH).exists() {
        return Ok(());
    }
    std::fs::create_dir_all("/dev/net")?;
    let path = CString::new(PATH).map_err(io::Error::other)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(10, 200)) })?;
    Ok(())
}

/// Creates the tap interface `name` and returns its descriptor, which
/// survives `exec` (the tender adopts it with `--net:NAME=@FD`).
pub fn open_tap(name: &str) -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let fd = OwnedFd::from(file);
    let mut req = IfReq::new(name)?;
    req.data[..2].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq`
    // matches; `fd` is an open /dev/net/tun descriptor.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) })?;
    keep_on_exec(fd.as_raw_fd())?;
    Ok(fd)
}

/// Clears close-on-exec on `fd`.
fn keep_on_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; results are checked.
    unsafe {
        let flags = check(libc::fcntl(fd, libc::F_GETFD))?;
        check(libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC))?;
    }
    Ok(())
}

/// A `NETLINK_ROUTE` socket.
pub struct Netlink(OwnedFd);

impl Netlink {
    /// Opens and binds a route netlink socket.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the result is checked and owned at once.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(Netlink(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends one message.
    pub fn send(&self, message: &[u8]) -> io::Result<()> {
        // SAFETY: `message` is a valid buffer of its length; the kernel
        // address is the zeroed default (pid 0).
        let sent = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.0.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram into `buf`; returns its length.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid, writable buffer of its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// The last stop signal received, 0 if none.
static PENDING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn record(signal: libc::c_int) {
    PENDING.store(signal, std::sync::atomic::Ordering::SeqCst);
}

/// The signals an engine or a terminal stops a container with.
pub const STOP_SIGNALS: [libc::c_int; 4] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// Records the stop signals instead of ignoring them (a container's first
/// process gets no default action for them); the child's `exec` resets
/// them to their defaults.
pub fn catch_stop_signals() -> io::Result<()> {
    for signal in STOP_SIGNALS {
        // SAFETY: a zeroed sigaction with a handler that only stores to an
        // atomic (async-signal-safe); no SA_RESTART, so waitpid returns EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            check(libc::sigaction(signal, &action, std::ptr::null_mut()))?;
        }
    }
    Ok(())
}

/// Takes the pending stop signal, if any.
pub fn take_signal() -> Option<libc::c_int> {
    match PENDING.swap(0, std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Sends `signal` to `pid`.
pub fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; a failure (child gone) is harmless.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// What `wait_any` saw.
pub enum Waited {
    /// A process ended: its pid and its wait status.
    Exited(u32, libc::c_int),
    /// A signal arrived first.
    Interrupted,
    /// No child is left.
    NoChild,
}

/// Waits for any child (a container's first process also reaps orphans).
pub fn wait_any() -> Waited {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes the status to a valid local.
    let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
    if pid > 0 {
        Waited::Exited(pid as u32, status)
    } else if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
        Waited::Interrupted
    } else {
        Waited::NoChild
    }
}
