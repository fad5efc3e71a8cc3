//! A UDP echo unikernel (RFC 862): every datagram received on the port is
//! sent back to where it came from. [`start`] is the entry function named
//! in `unikernel.toml`. It logs through the `log` facade (target
//! `udp_echo`): the port at `info`, failures at `warn` (the first, then
//! once per power of two), filtered by `--log`.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::vec;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use kiln_devices::{Stack, StackError, UdpSocket as _};

/// The largest datagram echoed whole; longer ones are truncated to it.
pub const MAX_DATAGRAM: usize = 65507;

/// Why the echo server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpEchoError {
    /// The port could not be bound.
    #[error("cannot bind UDP port {port}: {source}\nhint: choose another port with --port")]
    Bind {
        /// The port.
        port: u16,
        /// Why.
        source: StackError,
    },
}

/// Echoes datagrams on UDP `port` (every address of `stack`) until the
/// unikernel is stopped.
pub async fn start(stack: impl Stack, port: u16) -> Result<(), UdpEchoError> {
    // Every address; a stack without IPv6 may refuse `[::]`.
    let socket = match stack
        .bind_udp(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port))
        .await
    {
        Ok(s) => s,
        Err(StackError::AddressInUse) => {
            return Err(UdpEchoError::Bind {
                port,
                source: StackError::AddressInUse,
            });
        }
        Err(_) => stack
            .bind_udp(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
            .await
            .map_err(|source| UdpEchoError::Bind { port, source })?,
    };
    log::info!("echoing on port {}", socket.local_addr().port());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let (mut receive_failures, mut reply_failures) = (0u64, 0u64);
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                receive_failures += 1;
                if receive_failures.is_power_of_two() {
                    log::warn!("receive failed: {e} ({receive_failures} so far)");
                }
                kiln_rt::yield_now().await;
                continue;
            }
        };
        if let Err(e) = socket.send_to(&buf[..n], from).await {
            reply_failures += 1;
            if reply_failures.is_power_of_two() {
                log::warn!("reply to {from} failed: {e} ({reply_failures} so far)");
            }
        }
    }
}
