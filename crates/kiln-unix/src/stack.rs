//! The `socket` stack: TCP and UDP over the host's non-blocking sockets,
//! woken by the reactor.
//!
//! Every operation first tries the system call; only when it would block
//! (EAGAIN) does the task register interest and return `Pending`. IPv4 and
//! IPv6 are both supported; IPv4 peers of dual-stack IPv6 sockets are
//! reported as IPv4 addresses. The calls follow socket(7), tcp(7), udp(7)
//! and ipv6(7); errno values map to [`StackError`] in one place,
//! `error_from_code`.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::net::SocketType;
use std::task::{Context, Poll};

use kiln_devices::StackError;

use crate::reactor::{Interest, Platform, Registration};
use crate::sys;

/// Connections a listener queues before `accept` (the kernel caps it at
/// `net.core.somaxconn`).
const BACKLOG: libc::c_int = 4096;

/// Maps an OS error code to the stack's error.
pub(crate) fn error_from_code(code: i32) -> StackError {
    match code {
        libc::EADDRINUSE => StackError::AddressInUse,
        libc::EADDRNOTAVAIL => StackError::AddressNotAvailable,
        libc::ECONNREFUSED => StackError::ConnectionRefused,
        libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => StackError::ConnectionReset,
        libc::ETIMEDOUT => StackError::TimedOut,
        libc::ENOTCONN => StackError::NotConnected,
        libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN | libc::EHOSTDOWN => {
            StackError::Unreachable
        }
        libc::EMFILE | libc::ENFILE => StackError::TooManySockets,
        libc::EMSGSIZE => StackError::MessageTooLarge,
        libc::EINVAL | libc::EAFNOSUPPORT | libc::EDESTADDRREQ => StackError::InvalidInput,
        code => StackError::Io(code),
    }
}

fn stack_error(e: &io::Error) -> StackError {
    error_from_code(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Runs `op` until it succeeds, fails, or would block; in the last case
/// registers `cx`'s waker for `interest`.
fn poll_io<T>(
    registration: &Registration,
    interest: Interest,
    cx: &Context<'_>,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<Result<T, StackError>> {
    loop {
        match op() {
            Ok(value) => return Poll::Ready(Ok(value)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                registration.register(interest, cx.waker());
                return Poll::Pending;
            }
            Err(e) => return Poll::Ready(Err(stack_error(&e))),
        }
    }
}

/// An IPv4 address inside an IPv6 one (`::ffff:a.b.c.d`) as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::new(IpAddr::V4(ip), a.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The host's TCP/IP stack, through its sockets.
#[derive(Debug, Clone, Copy)]
pub struct SocketStack {
    platform: &'static Platform,
}

impl SocketStack {
    /// A stack whose sockets wake tasks through `platform`.
    pub fn new(platform: &'static Platform) -> SocketStack {
        SocketStack { platform }
    }
}

impl kiln_devices::Stack for SocketStack {
    type TcpListener = TcpListener;
    type TcpStream = TcpStream;
    type UdpSocket = UdpSocket;

    async fn listen_tcp(&self, addr: SocketAddr) -> Result<TcpListener, StackError> {
        let e = |e: io::Error| stack_error(&e);
        let fd = sys::socket(&addr, SocketType::STREAM).map_err(e)?;
        sys::set_reuseaddr(&fd).map_err(e)?;
        sys::bind(&fd, &addr).map_err(e)?;
        sys::listen(&fd, BACKLOG).map_err(e)?;
        let local = sys::local_addr(&fd).map_err(e)?;
        Ok(TcpListener {
            registration: Registration::new(self.platform, fd.as_raw_fd()),
            fd,
            local,
        })
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> Result<TcpStream, StackError> {
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(StackError::InvalidInput);
        }
        let e = |e: io::Error| stack_error(&e);
        let fd = sys::socket(&addr, SocketType::STREAM).map_err(e)?;
        match sys::connect(&fd, &addr) {
            Ok(()) => {}
            // Either way the connection goes on in the background.
            Err(err) if matches!(err.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) => {}
            Err(err) => return Err(stack_error(&err)),
        }
        let registration = Registration::new(self.platform, fd.as_raw_fd());
        let peer = poll_fn(|cx| {
            match sys::take_socket_error(&fd) {
                Ok(0) => {}
                Ok(code) => return Poll::Ready(Err(error_from_code(code))),
                Err(err) => return Poll::Ready(Err(stack_error(&err))),
            }
            match sys::peer_addr(&fd) {
                Ok(peer) => Poll::Ready(Ok(peer)),
                Err(err) if err.raw_os_error() == Some(libc::ENOTCONN) => {
                    registration.register(Interest::Writable, cx.waker());
                    Poll::Pending
                }
                Err(err) => Poll::Ready(Err(stack_error(&err))),
            }
        })
        .await?;
        no_delay(&fd)?;
        let local = sys::local_addr(&fd).map_err(e)?;
        Ok(TcpStream {
            registration,
            fd,
            local,
            peer: canonical(peer),
            write_shut: false,
        })
    }

    async fn bind_udp(&self, addr: SocketAddr) -> Result<UdpSocket, StackError> {
        let e = |e: io::Error| stack_error(&e);
        let fd = sys::socket(&addr, SocketType::DGRAM).map_err(e)?;
        sys::bind(&fd, &addr).map_err(e)?;
        let local = sys::local_addr(&fd).map_err(e)?;
        Ok(UdpSocket {
            registration: Registration::new(self.platform, fd.as_raw_fd()),
            fd,
            local,
        })
    }

    /// The `nameserver` lines of the host's `/etc/resolv.conf`.
    async fn dns_servers(&self) -> Vec<std::net::IpAddr> {
        std::fs::read_to_string("/etc/resolv.conf")
            .map(|text| resolv_conf_servers(&text))
            .unwrap_or_default()
    }

    /// The search list of the host's `/etc/resolv.conf`.
    async fn dns_search(&self) -> Vec<String> {
        std::fs::read_to_string("/etc/resolv.conf")
            .map(|text| resolv_conf_search(&text))
            .unwrap_or_default()
    }
}

/// Turns Nagle's algorithm off on a connection, as kiln's direct stack does:
/// applications write whole responses, and Nagle would only hold back
/// their last segment until the peer's delayed ACK.
fn no_delay(fd: &OwnedFd) -> Result<(), StackError> {
    sys::set_nodelay(fd).map_err(|e| stack_error(&e))
}

/// A listening TCP socket of the [`SocketStack`].
#[derive(Debug)]
pub struct TcpListener {
    // Declared before `fd` so that it is deregistered before the close.
    registration: Registration,
    fd: OwnedFd,
    local: SocketAddr,
}

impl kiln_devices::TcpListener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&self) -> Result<(TcpStream, SocketAddr), StackError> {
        let (fd, peer) = poll_fn(|cx| {
            poll_io(&self.registration, Interest::Readable, cx, || {
                loop {
                    match sys::accept(&self.fd) {
                        // The connection was reset while queued: take the next.
                        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                        other => return other,
                    }
                }
            })
        })
        .await?;
        no_delay(&fd)?;
        let local = sys::local_addr(&fd).map_err(|e| stack_error(&e))?;
        let peer = canonical(peer);
        let stream = TcpStream {
            registration: Registration::new(self.registration.platform(), fd.as_raw_fd()),
            fd,
            local,
            peer,
            write_shut: false,
        };
        Ok((stream, peer))
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// A connected TCP socket of the [`SocketStack`]. Dropping it closes the
/// connection.
#[derive(Debug)]
pub struct TcpStream {
    registration: Registration,
    fd: OwnedFd,
    local: SocketAddr,
    peer: SocketAddr,
    /// Whether `shutdown` was called: later writes fail with NotConnected
    /// (the kernel would say EPIPE, which also means a reset).
    write_shut: bool,
}

impl kiln_devices::TcpStream for TcpStream {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, StackError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (registration, fd) = (&self.registration, &self.fd);
        poll_fn(|cx| poll_io(registration, Interest::Readable, cx, || sys::recv(fd, buf))).await
    }

    async fn write(&mut self, buf: &[u8]) -> Result<usize, StackError> {
        if self.write_shut {
            return Err(StackError::NotConnected);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let (registration, fd) = (&self.registration, &self.fd);
        poll_fn(|cx| poll_io(registration, Interest::Writable, cx, || sys::send(fd, buf))).await
    }

    async fn shutdown(&mut self) -> Result<(), StackError> {
        sys::shutdown_write(&self.fd).map_err(|e| stack_error(&e))?;
        self.write_shut = true;
        Ok(())
    }

    fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// A bound UDP socket of the [`SocketStack`].
#[derive(Debug)]
pub struct UdpSocket {
    registration: Registration,
    fd: OwnedFd,
    local: SocketAddr,
}

impl kiln_devices::UdpSocket for UdpSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> Result<(), StackError> {
        // Match the destination to the socket's family: an IPv6 socket
        // reaches IPv4 hosts through mapped addresses.
        let to = match (self.local, to) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            (SocketAddr::V4(_), SocketAddr::V6(_)) => canonical(to),
            _ => to,
        };
        let sent = poll_fn(|cx| {
            poll_io(&self.registration, Interest::Writable, cx, || {
                sys::send_to(&self.fd, buf, &to)
            })
        })
        .await?;
        if sent < buf.len() {
            return Err(StackError::MessageTooLarge);
        }
        Ok(())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), StackError> {
        let (len, from) = poll_fn(|cx| {
            poll_io(&self.registration, Interest::Readable, cx, || {
                sys::recv_from(&self.fd, buf)
            })
        })
        .await?;
        Ok((len, canonical(from)))
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

#[cfg(test)]
mod tests {
    use kiln_devices::{Stack as _, TcpListener as _};

    use super::*;

    /// Regression: the socket stack left Nagle on, so the last segment of
    /// a response could wait for the peer's delayed ACK.
    #[test]
    fn connections_have_nagle_off() {
        let stack = SocketStack::new(crate::platform());
        kiln_rt::block_on(crate::platform(), async {
            let listener = stack
                .listen_tcp("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let client = stack.connect_tcp(listener.local).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            for stream in [&client, &server] {
                assert!(sys::nodelay(&stream.fd).unwrap());
            }
        });
    }

    #[test]
    fn errno_values_map_to_precise_errors() {
        assert_eq!(error_from_code(libc::EADDRINUSE), StackError::AddressInUse);
        assert_eq!(
            error_from_code(libc::ECONNREFUSED),
            StackError::ConnectionRefused
        );
        assert_eq!(
            error_from_code(libc::ECONNRESET),
            StackError::ConnectionReset
        );
        assert_eq!(error_from_code(libc::EPIPE), StackError::ConnectionReset);
        assert_eq!(error_from_code(libc::ENOTCONN), StackError::NotConnected);
        assert_eq!(error_from_code(libc::EHOSTUNREACH), StackError::Unreachable);
        assert_eq!(error_from_code(libc::EMFILE), StackError::TooManySockets);
        assert_eq!(error_from_code(libc::EMSGSIZE), StackError::MessageTooLarge);
        assert_eq!(error_from_code(libc::EACCES), StackError::Io(libc::EACCES));
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:80".parse().unwrap());
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}

/// The addresses of the `nameserver` lines of a resolv.conf(5) text.
fn resolv_conf_servers(text: &str) -> Vec<std::net::IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next()?.split('%').next()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The search list of a resolv.conf(5) text: the domains of its last
/// `search` or `domain` line.
fn resolv_conf_search(text: &str) -> Vec<String> {
    text.lines()
        .rev()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            matches!(words.next(), Some("search" | "domain"))
                .then(|| words.map(|w| w.trim_end_matches('.').to_string()).collect())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod resolv_conf_tests {
    use super::{resolv_conf_search, resolv_conf_servers};

    #[test]
    fn the_last_search_or_domain_line_is_the_search_list() {
        let text = "search a.test b.test.\nnameserver 10.0.0.53\n";
        assert_eq!(resolv_conf_search(text), ["a.test", "b.test"]);
        let text = "search a.test\ndomain c.test\n";
        assert_eq!(resolv_conf_search(text), ["c.test"]);
        assert!(resolv_conf_search("nameserver 10.0.0.53\n").is_empty());
    }

    #[test]
    fn nameserver_lines_are_read() {
        let text = "# generated\nsearch example.org\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\n";
        assert_eq!(
            resolv_conf_servers(text),
            vec![
                "10.0.0.53".parse::<std::net::IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }
}
