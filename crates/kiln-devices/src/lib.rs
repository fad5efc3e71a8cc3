//! Device interfaces: the contract between a kiln unikernel and the platform
//! it runs on.
//!
//! A unikernel is a `#![no_std]` library whose entry function is generic over
//! the traits defined here; a platform (`kiln-unix`, `kiln-solo5`, `kiln-net`,
//! ...) supplies the implementations, and the crate that `kiln configure`
//! generates wires one to the other. The traits are in the spirit of
//! MirageOS's device signatures: small, typed, and the same on every target.
//!
//! Layering, from the bottom:
//!
//! - [`time`]: the [`Instant`](time::Instant) and [`Timestamp`](time::Timestamp)
//!   types, the [`MonotonicClock`], [`WallClock`] and [`Sleep`] devices;
//! - [`console`], [`random`]: synchronous devices;
//! - [`net`]: a network interface that sends and receives Ethernet frames;
//! - [`block`]: a block device of fixed-size sectors;
//! - [`kv`]: read-only and read-write key-value stores;
//! - [`stack`]: a TCP/UDP stack (host sockets or `kiln-net` over a network
//!   interface);
//! - [`exit`]: how an entry function's result becomes an exit status;
//! - [`shutdown`]: the host's request to stop, which the application awaits.
//!
//! Every I/O operation is `async` (or poll-based, for network interfaces, so
//! that a stack can drain many frames per wake-up). The futures are not
//! `Send`: a kiln unikernel runs on one thread, driven by `kiln-rt`.
//! Errors are typed enums; no interface returns a `String` error.
#![no_std]
// The futures of these traits are deliberately not `Send`: kiln runs every
// unikernel on one single-threaded executor.
#![allow(async_fn_in_trait)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod block;
pub mod console;
pub mod exit;
pub mod kv;
pub mod net;
pub mod random;
pub mod shutdown;
pub mod stack;
pub mod time;

pub use block::{Block, BlockError, BlockInfo};
pub use console::{Console, ConsoleError};
pub use exit::{ExitStatus, Termination};
pub use kv::{Digest, EntryKind, KvError, KvRo, KvRw};
pub use net::{MacAddress, NetError, NetworkInterface};
pub use random::{Random, RandomError};
pub use shutdown::{NoShutdown, Shutdown};
pub use stack::{ListenOptions, Stack, StackError, TcpListener, TcpStream, UdpSocket};
pub use time::{Instant, MonotonicClock, Sleep, Timestamp, WallClock};
