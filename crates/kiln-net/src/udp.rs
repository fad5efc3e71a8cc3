//! UDP sockets: handles on smoltcp UDP sockets owned by the stack.

use alloc::rc::Rc;
use core::future::poll_fn;
use core::net::SocketAddr;
use core::task::Poll;

use kiln_devices::StackError;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::IpEndpoint;

use crate::stack::{Shared, socket_addr};

/// A bound UDP socket of [`NetStack`](crate::NetStack). Dropping it unbinds
/// the port; datagrams still queued for sending are discarded.
///
/// The stack neither fragments nor reassembles IP packets: a datagram must
/// fit the interface's MTU (1472 bytes of payload over IPv4 on Ethernet,
/// 1452 over IPv6); `send_to` refuses larger ones with
/// [`StackError::MessageTooLarge`].
pub struct UdpSocket {
    shared: Rc<Shared>,
    handle: SocketHandle,
    local: SocketAddr,
    /// The interface's MTU: the largest IP packet.
    mtu: usize,
}

const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;

impl UdpSocket {
    pub(crate) fn new(
        shared: Rc<Shared>,
        handle: SocketHandle,
        local: SocketAddr,
        mtu: usize,
    ) -> UdpSocket {
        UdpSocket {
            shared,
            handle,
            local,
            mtu,
        }
    }
}

impl kiln_devices::UdpSocket for UdpSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> Result<(), StackError> {
        if to.port() == 0 || to.ip().is_unspecified() {
            return Err(StackError::InvalidInput);
        }
        let endpoint = IpEndpoint::new(to.ip().into(), to.port());
        // The stack does not fragment: a datagram must fit one IP packet.
        let headers = match to {
            SocketAddr::V4(_) => IPV4_HEADER_LEN,
            SocketAddr::V6(_) => IPV6_HEADER_LEN,
        } + UDP_HEADER_LEN;
        if buf.len() + headers > self.mtu {
            return Err(StackError::MessageTooLarge);
        }
        poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            let socket = state.sockets.get_mut::<udp::Socket>(self.handle);
            if buf.len() > socket.payload_send_capacity() {
                return Poll::Ready(Err(StackError::MessageTooLarge));
            }
            match socket.send_slice(buf, endpoint) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(udp::SendError::BufferFull) => {
                    socket.register_send_waker(cx.waker());
                    Poll::Pending
                }
                Err(udp::SendError::Unaddressable) => Poll::Ready(Err(StackError::Unreachable)),
            }
        })
        .await?;
        self.shared.wake_driver();
        Ok(())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), StackError> {
        poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            let socket = state.sockets.get_mut::<udp::Socket>(self.handle);
            match socket.recv() {
                Ok((data, meta)) => {
                    let n = data.len().min(buf.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    Poll::Ready(Ok((n, socket_addr(meta.endpoint))))
                }
                Err(udp::RecvError::Exhausted) => {
                    socket.register_recv_waker(cx.waker());
                    Poll::Pending
                }
                Err(udp::RecvError::Truncated) => Poll::Ready(Err(StackError::MessageTooLarge)),
            }
        })
        .await
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let mut state = self.shared.state.borrow_mut();
        state.sockets.remove(self.handle);
        state.release_udp_port(self.local.port());
    }
}
