//! TCP/UDP stacks: the host's sockets (`socket` on unix) or kiln's own
//! TCP/IP stack over a network interface (`direct`, every target).
//!
//! A unikernel written against [`Stack`] runs unchanged on either.

use alloc::vec::Vec;
use core::future::Future;
use core::net::SocketAddr;

/// Why a stack operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StackError {
    /// The local address is already bound.
    #[error("address in use")]
    AddressInUse,
    /// The local address does not belong to this stack.
    #[error("address not available")]
    AddressNotAvailable,
    /// The peer refused the connection.
    #[error("connection refused")]
    ConnectionRefused,
    /// The peer reset the connection.
    #[error("connection reset")]
    ConnectionReset,
    /// The connection or operation timed out.
    #[error("timed out")]
    TimedOut,
    /// The socket is not connected, or its write side is shut down.
    #[error("not connected")]
    NotConnected,
    /// No route to the destination.
    #[error("destination unreachable")]
    Unreachable,
    /// The stack has no room for another socket.
    #[error("too many sockets")]
    TooManySockets,
    /// A datagram is larger than the stack can send or the buffer can hold.
    #[error("message too large")]
    MessageTooLarge,
    /// An argument is invalid (for example, port 0 for a connect).
    #[error("invalid argument")]
    InvalidInput,
    /// The host reported an I/O error with this OS error code.
    #[error("network I/O error (os error {0})")]
    Io(i32),
}

/// How a TCP listener's connections are set up, for
/// [`Stack::listen_tcp_with`]. The default asks for nothing beyond the
/// stack's own settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenOptions {
    /// Bytes each accepted connection should buffer on receive (its
    /// window), like `SO_RCVBUF` on a listening socket: a receiver of bulk
    /// data asks for more than the stack's default. A hint: a stack
    /// clamps it to its own bounds, or sizes windows itself (the host's).
    pub recv_buffer: Option<usize>,
    /// Bytes each accepted connection should buffer on send (the most it
    /// has in flight), like `SO_SNDBUF` on a listening socket: a sender
    /// of bulk data asks for more than the stack's default. A hint: a
    /// stack clamps it to its own bounds, or sizes buffers itself (the
    /// host's).
    pub send_buffer: Option<usize>,
}

impl ListenOptions {
    /// Asks for `bytes` of receive buffer per connection.
    pub fn recv_buffer(mut self, bytes: usize) -> Self {
        self.recv_buffer = Some(bytes);
        self
    }

    /// Asks for `bytes` of send buffer per connection.
    pub fn send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = Some(bytes);
        self
    }
}

/// A TCP/UDP stack.
pub trait Stack {
    /// A listening TCP socket.
    type TcpListener: TcpListener<Stream = Self::TcpStream>;
    /// A connected TCP socket.
    type TcpStream: TcpStream;
    /// A bound UDP socket.
    type UdpSocket: UdpSocket;

    /// Listens for TCP connections on `addr` (an unspecified IP means every
    /// address of the stack).
    fn listen_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Self::TcpListener, StackError>>;

    /// Listens as [`listen_tcp`](Stack::listen_tcp) does, with `options`
    /// for the connections it accepts. The default ignores them.
    fn listen_tcp_with(
        &self,
        addr: SocketAddr,
        options: ListenOptions,
    ) -> impl Future<Output = Result<Self::TcpListener, StackError>> {
        let _ = options;
        self.listen_tcp(addr)
    }

    /// Opens a TCP connection to `addr`.
    fn connect_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Self::TcpStream, StackError>>;

    /// Binds a UDP socket to `addr`.
    fn bind_udp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Self::UdpSocket, StackError>>;

    /// The DNS servers the network's configuration names (DHCP's on kiln's
    /// own stack, the host's resolver configuration for host sockets);
    /// waits for a configuration still coming (a DHCP lease). Empty when
    /// there are none.
    fn dns_servers(&self) -> impl Future<Output = Vec<core::net::IpAddr>> {
        async { Vec::new() }
    }

    /// The DNS search domains the network's configuration names (DHCP's
    /// Domain Search option on kiln's own stack, the host's resolver
    /// configuration for host sockets); waits as
    /// [`dns_servers`](Stack::dns_servers) does. Empty when there are none.
    fn dns_search(&self) -> impl Future<Output = Vec<alloc::string::String>> {
        async { Vec::new() }
    }
}

/// A listening TCP socket.
pub trait TcpListener {
    /// The connections it accepts.
    type Stream: TcpStream;

    /// Waits for the next connection; returns it with the peer's address.
    fn accept(&self) -> impl Future<Output = Result<(Self::Stream, SocketAddr), StackError>>;

    /// The address it listens on.
    fn local_addr(&self) -> SocketAddr;
}

/// A connected TCP socket. Dropping it closes the connection.
pub trait TcpStream {
    /// Reads into `buf`; `Ok(0)` means the peer closed its side.
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = Result<usize, StackError>>;

    /// Writes some of `buf`, returning how much was accepted (at least one
    /// byte unless `buf` is empty).
    fn write(&mut self, buf: &[u8]) -> impl Future<Output = Result<usize, StackError>>;

    /// Writes all of `buf`.
    fn write_all(&mut self, mut buf: &[u8]) -> impl Future<Output = Result<(), StackError>> {
        async move {
            while !buf.is_empty() {
                let n = self.write(buf).await?;
                buf = buf.get(n..).ok_or(StackError::InvalidInput)?;
            }
            Ok(())
        }
    }

    /// Shuts down the write side (sends FIN once queued data is sent);
    /// reading may go on.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), StackError>>;

    /// The peer's address.
    fn peer_addr(&self) -> SocketAddr;

    /// The local address.
    fn local_addr(&self) -> SocketAddr;
}

/// A bound UDP socket.
pub trait UdpSocket {
    /// Sends one datagram to `to`.
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> impl Future<Output = Result<(), StackError>>;

    /// Receives one datagram; returns its length and sender. A datagram
    /// longer than `buf` is truncated to it.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = Result<(usize, SocketAddr), StackError>>;

    /// The address it is bound to.
    fn local_addr(&self) -> SocketAddr;
}
