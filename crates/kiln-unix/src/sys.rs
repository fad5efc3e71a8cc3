//! Every system call kiln-unix makes, as safe functions returning `io::Result`.
//!
//! Sockets, reads and writes, clocks, random bytes and the timer slack go
//! through rustix's safe wrappers. This is the only module with `unsafe`
//! code, for what rustix does not wrap safely: the SIGPIPE disposition,
//! the SIGTERM signalfd, and `ppoll` over the reactor's own array of raw
//! descriptors (rustix's `PollFd` borrows each descriptor, which the
//! reactor's registrations do not hold).

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{
    self, AddressFamily, RecvFlags, SendFlags, SocketAddrAny, SocketFlags, SocketType, sockopt,
};
use rustix::rand::GetRandomFlags;
use rustix::time::ClockId;

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

/// Reads `clock` as nanoseconds since its origin (0 before it).
fn clock_nanos(clock: ClockId) -> u64 {
    let ts = rustix::time::clock_gettime(clock);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// CLOCK_MONOTONIC in nanoseconds.
pub(crate) fn monotonic_nanos() -> u64 {
    clock_nanos(ClockId::Monotonic)
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch (0 before it).
pub(crate) fn realtime_nanos() -> u64 {
    clock_nanos(ClockId::Realtime)
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
/// the kernel defer them by 50 µs to batch wake-ups). Best effort: it
/// cannot fail for a positive value.
pub(crate) fn minimise_timer_slack() {
    let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
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
        match rustix::rand::getrandom(&mut *buf, GetRandomFlags::empty()) {
            Ok(n) => buf = buf.get_mut(n..).unwrap_or_default(),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `write(2)`: writes some of `buf` to `fd`.
pub(crate) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::io::write(fd, buf)?)
}

/// `read(2)`: reads up to `buf.len()` bytes from `fd`.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    Ok(rustix::io::read(fd, buf)?)
}

/// Blocks until `fd` is writable (used by the console when stdout is a
/// non-blocking file description shared with another process).
pub(crate) fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut pfd = [pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    }];
    ppoll(&mut pfd, None).map(drop)
}

/// The error for a peer address that is neither IPv4 nor IPv6.
fn not_inet() -> io::Error {
    io::Error::from_raw_os_error(libc::EAFNOSUPPORT)
}

/// An address the kernel returned, as IPv4 or IPv6.
fn inet(addr: Option<SocketAddrAny>) -> io::Result<SocketAddr> {
    addr.and_then(|a| SocketAddr::try_from(a).ok())
        .ok_or_else(not_inet)
}

/// A non-blocking, close-on-exec socket of `addr`'s family.
pub(crate) fn socket(addr: &SocketAddr, ty: SocketType) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    Ok(net::socket_with(
        family,
        ty,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?)
}

/// `SO_REUSEADDR`: a listener may bind a port whose last connections are
/// still in TIME_WAIT.
pub(crate) fn set_reuseaddr(fd: &OwnedFd) -> io::Result<()> {
    Ok(sockopt::set_socket_reuseaddr(fd, true)?)
}

/// `TCP_NODELAY`: Nagle's algorithm off.
pub(crate) fn set_nodelay(fd: &OwnedFd) -> io::Result<()> {
    Ok(sockopt::set_tcp_nodelay(fd, true)?)
}

/// Whether `TCP_NODELAY` is set.
#[cfg(test)]
pub(crate) fn nodelay(fd: &OwnedFd) -> io::Result<bool> {
    Ok(sockopt::tcp_nodelay(fd)?)
}

/// Reads and clears the socket's pending error (SO_ERROR): 0 if none.
pub(crate) fn take_socket_error(fd: &OwnedFd) -> io::Result<i32> {
    Ok(match sockopt::socket_error(fd)? {
        Ok(()) => 0,
        Err(errno) => errno.raw_os_error(),
    })
}

/// `bind(2)`.
pub(crate) fn bind(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<()> {
    Ok(net::bind(fd, addr)?)
}

/// `listen(2)`.
pub(crate) fn listen(fd: &OwnedFd, backlog: i32) -> io::Result<()> {
    Ok(net::listen(fd, backlog)?)
}

/// `connect(2)`; on a non-blocking socket usually EINPROGRESS.
pub(crate) fn connect(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<()> {
    Ok(net::connect(fd, addr)?)
}

/// `accept4(2)`: a non-blocking, close-on-exec connection and its peer.
pub(crate) fn accept(fd: &OwnedFd) -> io::Result<(OwnedFd, SocketAddr)> {
    let (conn, peer) = net::acceptfrom_with(fd, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
    Ok((conn, inet(peer)?))
}

/// `getsockname(2)`.
pub(crate) fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    inet(Some(net::getsockname(fd)?))
}

/// `getpeername(2)`; ENOTCONN while a connect is in progress.
pub(crate) fn peer_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    inet(net::getpeername(fd)?)
}

/// `send(2)` without SIGPIPE.
pub(crate) fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    Ok(net::send(fd, buf, SendFlags::NOSIGNAL)?)
}

/// `recv(2)`.
pub(crate) fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(net::recv(fd, buf, RecvFlags::empty())?.0)
}

/// `sendto(2)` without SIGPIPE.
pub(crate) fn send_to(fd: &OwnedFd, buf: &[u8], to: &SocketAddr) -> io::Result<usize> {
    Ok(net::sendto(fd, buf, SendFlags::NOSIGNAL, to)?)
}

/// `recvfrom(2)`: one datagram, truncated to `buf`, and its sender.
pub(crate) fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let (n, _, from) = net::recvfrom(fd, buf, RecvFlags::empty())?;
    Ok((n, inet(from)?))
}

/// `shutdown(2)` of the sending side.
pub(crate) fn shutdown_write(fd: &OwnedFd) -> io::Result<()> {
    Ok(net::shutdown(fd, net::Shutdown::Write)?)
}
