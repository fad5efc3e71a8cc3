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
//!   `--no-slaac`, and the limits `--max-connections`, `--syn-backlog`,
//!   `--handshake-timeout`, `--tcp-rx-buffer`, `--tcp-tx-buffer`,
//!   `--tcp-bulk-connections`, `--tcp-bulk-rx-buffer`,
//!   `--tcp-bulk-tx-buffer`, `--tcp-max-rx-buffer`, `--tcp-max-tx-buffer`:
//!   see
//!   [`Buffers`]);
//! - `device`: smoltcp's `Device` over a `NetworkInterface`, for one poll;
//! - [`domain_search`]: the DHCP lease's Domain Search option (RFC 3397)
//!   decoded into the search list `Stack::dns_search` returns;
//! - `vnet`: the virtio-net header of interfaces with checksum and TCP
//!   segmentation offload (a tap with `IFF_VNET_HDR`);
//! - `guard`: drops neighbour discovery that would poison or flush
//!   smoltcp's neighbour cache (NS/NA not for us, too many routers);
//! - `retransmit`: counts the TCP segments sent that carry sequence space
//!   sent before (smoltcp keeps no such counter);
//! - `driver`: the one task that owns the interface; woken by an arriving
//!   frame, a socket handle, or smoltcp's next timer, it drains every
//!   pending frame into smoltcp, lets it send, and sleeps again;
//! - `stack`: the smoltcp `Interface` and `SocketSet` in a `RefCell` shared
//!   (through `Rc`) by the driver and the socket handles; [`NetStack`];
//! - `tcp`, `udp`: the socket handles, which register their wakers with
//!   smoltcp's sockets;
//! - `metrics`: the stack's counters and socket counts as `kiln_metrics`
//!   families (`kiln_net_*`), collected only when the metrics are read;
//! - [`pair`]: two interfaces joined in memory, for tests.
//!
//! The stack logs through the `log` facade (target `kiln_net::...`): its
//! addresses at boot and DHCP leases at `info`, bounds hit at `warn`.
//!
//! # What generated code calls
//!
//! For a `stack` device with `impl = "direct"` over net device `service`
//! (on unix a `kiln_unix::Tap`, on hvt/spt the Solo5 net device), inside
//! `kiln_rt::block_on` (the constructor spawns the driver task):
//!
//! ```ignore
//! // 1. Take the stack's runtime arguments out of the command line before
//! //    the unikernel's own parser sees it ([`FLAGS`] has their names,
//! //    value shapes and docs for `--help`):
//! let (net_config, rest) = kiln_net::Config::extract(args.iter().map(String::as_str))?;
//! //    ... parse `rest` with the unikernel's argument spec ...
//! // 2. A seed from the random device:
//! let seed = kiln_devices::Random::next_u64(&random)?;
//! // 3. The stack, owning the network interface:
//! let stack = kiln_net::NetStack::new(service, net_config, seed)?;
//! ```
//!
//! `Config::set(name, value)` applies one argument at a time instead, for
//! a generator that parses them itself. Both error types ([`ConfigError`],
//! [`NetStackError`]) display as one line, plus a `hint:` line where there
//! is a fix; generated code prints `error: {e}` and exits 2 (arguments) or
//! 1 (the stack).
#![no_std]
#![deny(unsafe_code)]
#![allow(async_fn_in_trait)]

extern crate alloc;

pub mod config;
mod device;
pub mod domain_search;
mod driver;
mod guard;
mod metrics;
pub mod pair;
mod retransmit;
mod stack;
mod tcp;
mod udp;
mod vnet;

pub use config::{Buffers, Cidr, Config, ConfigError, FLAGS, Flag, MIN_HEAP_CONNECTIONS};
pub use device::DeviceStats;
pub use stack::{NetStack, NetStackError};
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;

/// The smoltcp this stack is built on, for tests that craft raw frames.
pub use smoltcp;

#[cfg(test)]
extern crate std;
