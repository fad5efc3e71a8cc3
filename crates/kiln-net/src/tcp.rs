//! TCP listeners and connections: handles on smoltcp sockets owned by the
//! stack (RFC 9293 is smoltcp's business; this is the async surface).

use alloc::rc::Rc;
use core::future::poll_fn;
use core::net::SocketAddr;
use core::task::Poll;

use kiln_devices::StackError;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use crate::stack::{Shared, socket_addr};

/// A listening TCP socket of [`NetStack`](crate::NetStack).
///
/// Connections are accepted by a backlog of listening smoltcp sockets that
/// the driver refills as soon as one connects. One task at a time should
/// wait in [`accept`](kiln_devices::TcpListener::accept).
pub struct TcpListener {
    shared: Rc<Shared>,
    local: SocketAddr,
}

impl TcpListener {
    pub(crate) fn new(shared: Rc<Shared>, local: SocketAddr) -> TcpListener {
        TcpListener { shared, local }
    }
}

impl kiln_devices::TcpListener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&self) -> Result<(TcpStream, SocketAddr), StackError> {
        let port = self.local.port();
        let handle = poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            let state = &mut *state;
            let Some(backlog) = state.listeners.get_mut(&port) else {
                return Poll::Ready(Err(StackError::NotConnected));
            };
            let mut reset = alloc::vec::Vec::new();
            let mut found = None;
            while let Some(h) = backlog.ready.pop_front() {
                let socket = state.sockets.get_mut::<tcp::Socket>(h);
                if socket.remote_endpoint().is_some() {
                    found = Some(h);
                    break;
                }
                // Reset before anyone accepted it.
                reset.push(h);
            }
            if found.is_none() {
                backlog.waker = Some(cx.waker().clone());
            }
            for h in reset {
                state.remove_tcp(h);
            }
            match found {
                Some(h) => Poll::Ready(Ok(h)),
                None => Poll::Pending,
            }
        })
        .await?;
        // The backlog has room for another connection now.
        self.shared
            .state
            .borrow_mut()
            .refill_listeners(crate::stack::smol_now());
        self.shared.wake_driver();
        let stream = TcpStream::new(self.shared.clone(), handle, None);
        let peer = stream.peer;
        Ok((stream, peer))
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let port = self.local.port();
        let mut state = self.shared.state.borrow_mut();
        let Some(backlog) = state.listeners.remove(&port) else {
            return;
        };
        state.release_tcp_port(port);
        for l in backlog.listening {
            state.remove_tcp(l.handle);
        }
        for h in backlog.ready {
            state.sockets.get_mut::<tcp::Socket>(h).abort();
            state.close_later(h, None);
        }
        drop(state);
        self.shared.wake_driver();
    }
}

/// A TCP connection of [`NetStack`](crate::NetStack). Dropping it closes
/// the connection gracefully (FIN after the queued data); the stack resets
/// it if the peer does not finish closing within the close timeout
/// ([`Buffers::close_timeout`](crate::Buffers::close_timeout), 10 s).
pub struct TcpStream {
    shared: Rc<Shared>,
    handle: SocketHandle,
    /// The ephemeral port of an outgoing connection, released on close.
    port: Option<u16>,
    local: SocketAddr,
    peer: SocketAddr,
    /// The peer's FIN has been read.
    eof: bool,
    /// `shutdown` was called.
    shut: bool,
}

impl TcpStream {
    pub(crate) fn new(shared: Rc<Shared>, handle: SocketHandle, port: Option<u16>) -> TcpStream {
        let (local, peer) = {
            let mut state = shared.state.borrow_mut();
            let socket = state.sockets.get_mut::<tcp::Socket>(handle);
            let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
            (
                socket.local_endpoint().map_or(unspecified, socket_addr),
                socket.remote_endpoint().map_or(unspecified, socket_addr),
            )
        };
        TcpStream {
            shared,
            handle,
            port,
            local,
            peer,
            eof: false,
            shut: false,
        }
    }
}

impl kiln_devices::TcpStream for TcpStream {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, StackError> {
        if buf.is_empty() || self.eof {
            return Ok(0);
        }
        let shut = self.shut;
        let result = poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            let socket = state.sockets.get_mut::<tcp::Socket>(self.handle);
            match socket.recv_slice(buf) {
                Ok(0) => {
                    socket.register_recv_waker(cx.waker());
                    Poll::Pending
                }
                Ok(n) => Poll::Ready(Ok(n)),
                Err(tcp::RecvError::Finished) => Poll::Ready(Ok(0)),
                Err(tcp::RecvError::InvalidState) => match socket.state() {
                    // Both sides finished and the socket moved on.
                    tcp::State::TimeWait | tcp::State::Closing | tcp::State::LastAck => {
                        Poll::Ready(Ok(0))
                    }
                    // Closed after our own FIN: smoltcp no longer says
                    // whether the peer's FIN or a RST ended it; either way
                    // nothing more will come.
                    tcp::State::Closed if shut => Poll::Ready(Ok(0)),
                    _ => Poll::Ready(Err(StackError::ConnectionReset)),
                },
            }
        })
        .await;
        match result {
            Ok(0) => self.eof = true,
            // Reading made room in the window: let the driver say so.
            Ok(_) => self.shared.wake_driver(),
            Err(_) => {}
        }
        result
    }

    async fn write(&mut self, buf: &[u8]) -> Result<usize, StackError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            let socket = state.sockets.get_mut::<tcp::Socket>(self.handle);
            match socket.send_slice(buf) {
                Ok(0) => {
                    socket.register_send_waker(cx.waker());
                    Poll::Pending
                }
                Ok(n) => Poll::Ready(Ok(n)),
                Err(tcp::SendError::InvalidState) => Poll::Ready(Err(match socket.state() {
                    tcp::State::Closed => StackError::ConnectionReset,
                    _ => StackError::NotConnected,
                })),
            }
        })
        .await?;
        self.shared.wake_driver();
        Ok(n)
    }

    async fn shutdown(&mut self) -> Result<(), StackError> {
        {
            let mut state = self.shared.state.borrow_mut();
            let socket = state.sockets.get_mut::<tcp::Socket>(self.handle);
            if socket.state() == tcp::State::Closed {
                return Err(StackError::NotConnected);
            }
            socket.close();
        }
        self.shut = true;
        self.shared.wake_driver();
        Ok(())
    }

    fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.shared
            .state
            .borrow_mut()
            .close_later(self.handle, self.port);
        self.shared.wake_driver();
    }
}
