//! kiln's host daemon (`kiln daemon`) and its client: the daemon owns the
//! unikernels of one host on any target, starts them, restarts them by
//! policy, keeps their consoles, and survives being killed.
//!
//! Layers, bottom up:
//! - [`proto`]: the typed, length-limited JSON requests and their
//!   validation; [`client`] speaks it.
//! - [`policy`]: which exits restart a unikernel and after what backoff.
//! - [`state`]: the one state file, written atomically.
//! - [`console`]: each unikernel's ring buffer, rotated log and followers.
//! - [`procfs`]: start times, marks and counters read from `/proc`;
//!   [`net`]: taps on bridges.
//! - [`daemon`]: processes, threads and recovery (`virtio`: QEMU's command
//!   line and exit codes for virtio images; `qmp`: QEMU's machine protocol
//!   for the power button and the block counters); `block`: per-device
//!   block counters from kiln-hvt or QEMU; `server`: the control socket
//!   and the requests.
//!
//! docs/supervisor.md describes the daemon for its operators.
#![deny(unsafe_code)]

mod block;
pub mod client;
pub mod console;
pub mod daemon;
pub mod net;
pub mod policy;
pub mod procfs;
pub mod proto;
mod qmp;
mod server;
pub mod state;
#[allow(unsafe_code)]
mod sys;
mod virtio;

pub use daemon::{Config, DaemonError, run};
pub use qmp::power_button;
