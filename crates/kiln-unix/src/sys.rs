//! Every system call kiln-unix makes, as safe functions returning `io::Result`.
//!
//! This is the only module with `unsafe` code. Each function checks the
//! lengths it passes to the kernel against the Rust slices it was given, so
//! the callers above need no further care.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub(crate) use libc::pollfd;

/// Converts a `-1`-on-error return value to `io::Result`, taking the error
/// from `errno`.
fn check<T: Copy + PartialOrd + Default>(ret: T) -> io::Result<T> {
    if ret < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Reads `clock` as nanoseconds since its origin.
fn clock_nanos(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks used here
    // (CLOCK_MONOTONIC, CLOCK_REALTIME) exist on every Linux, so the call
    // cannot fail and `ts` is always written.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// CLOCK_MONOTONIC in nanoseconds.
pub(crate) fn monotonic_nanos() -> u64 {
    clock_nanos(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch (0 before it).
pub(crate) fn realtime_nanos() -> u64 {
    clock_nanos(libc::CLOCK_REALTIME)
}

/// Makes writes to a closed pipe or socket fail with EPIPE instead of
/// killing the process.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE runs no code in signal context
    // and affects only how the kernel treats the signal.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Blocks SIGTERM for the calling thread (the unikernel's only one) and
/// returns a non-blocking signalfd that reports it instead.
pub(crate) fn sigterm_fd() -> io::Result<OwnedFd> {
    // SAFETY: `set` is a local sigset_t that sigemptyset initialises before
    // any other use; sigaddset, pthread_sigmask and signalfd read it (and
    // write nothing else); signalfd returns a new descriptor or -1.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Sets the calling thread's timer slack to 1 ns, so that timeouts expire as
/// close to their deadline as the scheduler allows (the default slack lets
/// the kernel defer them by 50 µs to batch wake-ups).
pub(crate) fn minimise_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and no pointers;
    // it cannot fail for a positive value.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}

/// Has glibc's malloc serve allocations of 64 KiB and more with fresh
/// `mmap(2)` pages, always. Large zeroed allocations (the direct stack's
/// socket buffers: 64 KiB and 128 KiB for a bulk TCP socket) then cost
/// resident memory only where they are used: `calloc` clears the memory
/// it carves from the heap, which makes every page resident, and does not
/// clear fresh mappings. glibc's default threshold is 128 KiB but rises
/// to the size of any mapped block freed, after which such buffers come
/// from the heap again (www's peak RSS under wrk: 7.1 MiB, 3.7 MiB with
/// this, docs/bulk.md). Other C libraries are left as they are.
pub(crate) fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers; it returns 0 on a refused value
    // and changes nothing then.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// `ppoll(2)` over `fds`: blocks until one is ready or `timeout` passes
/// (`None` = no timeout). Returns the number of entries with `revents` set.
pub(crate) fn ppoll(fds: &mut [pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|d| libc::timespec {
        // Capped at i64::MAX seconds: x86_64's time_t, on glibc and musl
        // (naming libc::time_t is deprecated on musl).
        tv_sec: d
            .as_secs()
            .min(i64::MAX as u64)
            .try_into()
            .unwrap_or(i32::MAX.into()),
        tv_nsec: libc::c_long::from(d.subsec_nanos()),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |ts| ts as *const libc::timespec);
    let nfds = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `fds` points to `nfds` valid pollfd entries that the kernel
    // may write (`revents`); `ts_ptr` is null or points to a timespec that
    // lives until the call returns; a null sigmask leaves the mask as is.
    let n = check(unsafe { libc::ppoll(fds.as_mut_ptr(), nfds, ts_ptr, std::ptr::null()) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Fills `buf` from the kernel's random generator, blocking only until it
/// is seeded (at boot).
pub(crate) fn getrandom(mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        match check(n) {
            Ok(n) => {
                let n = usize::try_from(n).unwrap_or(0);
                buf = buf.get_mut(n..).unwrap_or_default();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `write(2)`: writes some of `buf` to `fd`.
pub(crate) fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes; writing to a
    // bad fd only returns EBADF.
    let n = check(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `read(2)`: reads up to `buf.len()` bytes from `fd`.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Blocks until `fd` is writable (used by the console when stdout is a
/// non-blocking file description shared with another process).
pub(crate) fn wait_writable(fd: RawFd) -> io::Result<()> {
    let mut pfd = [pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    }];
    ppoll(&mut pfd, None).map(drop)
}

/// The address family of `addr`.
pub(crate) fn family(addr: &SocketAddr) -> libc::c_int {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// A socket address in the kernel's layout.
enum RawAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawAddr {
    fn new(addr: &SocketAddr) -> RawAddr {
        match addr {
            SocketAddr::V4(a) => RawAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    // The octets are already in network order.
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => RawAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    fn as_ptr(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            RawAddr::V4(a) => (
                (a as *const libc::sockaddr_in).cast(),
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            RawAddr::V6(a) => (
                (a as *const libc::sockaddr_in6).cast(),
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// Storage for an address the kernel returns.
struct AddrBuf {
    storage: MaybeUninit<libc::sockaddr_storage>,
    len: libc::socklen_t,
}

impl AddrBuf {
    fn new() -> AddrBuf {
        AddrBuf {
            storage: MaybeUninit::zeroed(),
            len: mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    fn as_mut_ptr(&mut self) -> (*mut libc::sockaddr, *mut libc::socklen_t) {
        (self.storage.as_mut_ptr().cast(), &mut self.len)
    }

    /// The address the kernel wrote, or EAFNOSUPPORT for a family other
    /// than IPv4 and IPv6.
    fn to_socket_addr(&self) -> io::Result<SocketAddr> {
        // SAFETY: the storage was zero-initialised, and sockaddr_storage is
        // plain integers, so every bit pattern is valid.
        let storage = unsafe { self.storage.assume_init_ref() };
        let len = usize::try_from(self.len).unwrap_or(0);
        match libc::c_int::from(storage.ss_family) {
            libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote a sockaddr_in (family AF_INET,
                // length checked); sockaddr_storage is at least as large
                // and as aligned as any sockaddr type.
                let a = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                Ok(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for a sockaddr_in6.
                let a = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
        }
    }
}

/// Takes ownership of a descriptor the kernel just returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful socket/accept/open
    // call, so it is open and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A non-blocking, close-on-exec socket.
pub(crate) fn socket(domain: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    let ty = ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers.
    let fd = check(unsafe { libc::socket(domain, ty, 0) })?;
    Ok(owned(fd))
}

/// Sets an integer socket option.
pub(crate) fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a c_int that lives until the call returns, and the
    // length passed is its size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Reads and clears the socket's pending error (SO_ERROR): 0 if none.
pub(crate) fn take_socket_error(fd: &OwnedFd) -> io::Result<i32> {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
}

/// `getsockopt(2)` of an `int` option.
pub(crate) fn getsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds the
    // size of `value`.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// `bind(2)`.
pub(crate) fn bind(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<()> {
    let raw = RawAddr::new(addr);
    let (ptr, len) = raw.as_ptr();
    // SAFETY: `ptr` points to a sockaddr of `len` bytes that outlives the call.
    check(unsafe { libc::bind(fd.as_raw_fd(), ptr, len) }).map(drop)
}

/// `listen(2)`.
pub(crate) fn listen(fd: &OwnedFd, backlog: libc::c_int) -> io::Result<()> {
    // SAFETY: listen(2) takes no pointers.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) }).map(drop)
}

/// `connect(2)`; on a non-blocking socket usually EINPROGRESS.
pub(crate) fn connect(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<()> {
    let raw = RawAddr::new(addr);
    let (ptr, len) = raw.as_ptr();
    // SAFETY: `ptr` points to a sockaddr of `len` bytes that outlives the call.
    check(unsafe { libc::connect(fd.as_raw_fd(), ptr, len) }).map(drop)
}

/// `accept4(2)`: a non-blocking, close-on-exec connection and its peer.
pub(crate) fn accept(fd: &OwnedFd) -> io::Result<(OwnedFd, SocketAddr)> {
    let mut buf = AddrBuf::new();
    let (ptr, len) = buf.as_mut_ptr();
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: `ptr`/`len` describe writable storage of `*len` bytes.
    let conn = owned(check(unsafe {
        libc::accept4(fd.as_raw_fd(), ptr, len, flags)
    })?);
    Ok((conn, buf.to_socket_addr()?))
}

/// `getsockname(2)`.
pub(crate) fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    let mut buf = AddrBuf::new();
    let (ptr, len) = buf.as_mut_ptr();
    // SAFETY: `ptr`/`len` describe writable storage of `*len` bytes.
    check(unsafe { libc::getsockname(fd.as_raw_fd(), ptr, len) })?;
    buf.to_socket_addr()
}

/// `getpeername(2)`; ENOTCONN while a connect is in progress.
pub(crate) fn peer_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    let mut buf = AddrBuf::new();
    let (ptr, len) = buf.as_mut_ptr();
    // SAFETY: `ptr`/`len` describe writable storage of `*len` bytes.
    check(unsafe { libc::getpeername(fd.as_raw_fd(), ptr, len) })?;
    buf.to_socket_addr()
}

/// `send(2)` without SIGPIPE.
pub(crate) fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let n = check(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `recv(2)`.
pub(crate) fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = check(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `sendto(2)` without SIGPIPE.
pub(crate) fn send_to(fd: &OwnedFd, buf: &[u8], to: &SocketAddr) -> io::Result<usize> {
    let raw = RawAddr::new(to);
    let (ptr, len) = raw.as_ptr();
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes; `ptr` points
    // to a sockaddr of `len` bytes; both outlive the call.
    let n = check(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            ptr,
            len,
        )
    })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `recvfrom(2)`: one datagram, truncated to `buf`, and its sender.
pub(crate) fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let mut addr = AddrBuf::new();
    let (ptr, len) = addr.as_mut_ptr();
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `ptr`/`len`
    // describe writable storage of `*len` bytes.
    let n = check(unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            ptr,
            len,
        )
    })?;
    Ok((usize::try_from(n).unwrap_or(0), addr.to_socket_addr()?))
}

/// `shutdown(2)`.
pub(crate) fn shutdown(fd: &OwnedFd, how: libc::c_int) -> io::Result<()> {
    // SAFETY: shutdown(2) takes no pointers.
    check(unsafe { libc::shutdown(fd.as_raw_fd(), how) }).map(drop)
}

/// Opens `/dev/net/tun` non-blocking and attaches it to the tap interface
/// `ifname` (created if absent) without packet information headers.
///
/// `ifname` must be 1 to `IFNAMSIZ - 1` bytes without NUL; callers check.
///
/// With `vnet`, frames carry a `struct virtio_net_hdr` (`IFF_VNET_HDR`).
pub(crate) fn open_tap(ifname: &str, vnet: bool) -> io::Result<OwnedFd> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let path = c"/dev/net/tun";
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let fd = owned(check(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?);
    // SAFETY: ifreq is plain integers, arrays and a union of such, so the
    // all-zero pattern is valid.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    let vnet = if vnet { libc::IFF_VNET_HDR } else { 0 };
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | vnet) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is; it
    // lives until the call returns.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) })?;
    Ok(fd)
}

/// Tells the kernel which offloaded frames the tap's reader takes
/// (`TUNSETOFFLOAD` with `TUN_F_*` flags).
pub(crate) fn set_tap_offload(fd: BorrowedFd<'_>, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long
    // of flags); it reads no memory of ours.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(flags),
        )
    })?;
    Ok(())
}

/// The MTU of interface `ifname` (`SIOCGIFMTU` on a datagram socket).
///
/// `ifname` must be 1 to `IFNAMSIZ - 1` bytes without NUL; callers check.
pub(crate) fn interface_mtu(ifname: &str) -> io::Result<usize> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM)?;
    // SAFETY: ifreq is plain integers, arrays and a union of such, so the
    // all-zero pattern is valid.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the name and writes the MTU of one ifreq,
    // which `req` is; it lives until the call returns.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU as _, &mut req) })?;
    // SAFETY: SIOCGIFMTU succeeded, so the union holds `ifru_mtu`.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    usize::try_from(mtu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}
