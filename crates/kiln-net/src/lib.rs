//! kiln's own TCP/IP stack: [`NetStack`] implements
//! [`kiln_devices::Stack`] over any [`kiln_devices::NetworkInterface`] (a
//! tap on unix, the tender's net device on hvt and spt), built on smoltcp.
//!
//! It speaks ARP, IPv4, ICMP echo (replies), TCP, UDP, a DHCPv4 client,
//! and IPv6 with neighbour discovery, a link-local address, static
//! addresses and SLAAC from router advertisements.
//!
//! Modules, from the bottom:
//!
//! - [`config`]: what the stack is told ([`Config`]) and the parser of its
//!   runtime arguments (`--ipv4=ADDR/PREFIX`, `--ipv4-gateway=ADDR`,
//!   `--ipv6=ADDR/PREFIX`, `--ipv6-gateway=ADDR`, `--no-dhcp`,
//!   `--no-slaac`);
//! - `device`: smoltcp's `Device` over a `NetworkInterface`, for one poll;
//! - `driver`: the one task that owns the interface; woken by an arriving
//!   frame, a socket handle, or smoltcp's next timer, it drains every
//!   pending frame into smoltcp, lets it send, and sleeps again;
//! - `stack`: the smoltcp `Interface` and `SocketSet` in a `RefCell` shared
//!   (through `Rc`) by the driver and the socket handles; [`NetStack`];
//! - `tcp`, `udp`: the socket handles, which register their wakers with
//!   smoltcp's sockets;
//! - [`pair`]: two interfaces joined in memory, for tests.
//!
//! # What generated code calls
//!
//! Inside `kiln_rt::block_on` (the constructor spawns the driver task):
//!
//! ```ignore
//! let mut config = kiln_net::Config::default();
//! // For each stack runtime argument given, name without `--`:
//! config.set("ipv4", Some("10.0.0.2/24"))?;   // or Config::parse(args)
//! config.validate()?;
//! let seed = random.next_u64()?;              // from the random device
//! let stack = kiln_net::NetStack::new(net, config, seed)?;
//! ```
//!
//! [`FLAGS`] lists the arguments with their docs for `--help`. Every error
//! ([`ConfigError`], [`NetStackError`]) displays as one line plus a
//! `hint:` line.
#![no_std]
#![deny(unsafe_code)]
#![allow(async_fn_in_trait)]

extern crate alloc;

pub mod config;
mod device;
mod driver;
pub mod pair;
mod stack;
mod tcp;
mod udp;

pub use config::{Buffers, Cidr, Config, ConfigError, FLAGS, Flag};
pub use device::DeviceStats;
pub use stack::{NetStack, NetStackError};
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;

/// The smoltcp this stack is built on, for tests that craft raw frames.
pub use smoltcp;

#[cfg(test)]
extern crate std;
