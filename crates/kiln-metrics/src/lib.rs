//! Metrics for unikernels: what the runtime, the stack and the application
//! count, and the Prometheus text exposition format (version 0.0.4) that
//! an HTTP handler serves them in (`examples/www`'s `--metrics-path`).
//!
//! Modules, from the bottom:
//!
//! - [`metric`]: the three kinds of values, lock-free ([`Counter`],
//!   [`Gauge`], [`Histogram`] with fixed buckets); an application keeps
//!   them where it likes and reads them when asked;
//! - [`text`]: the exposition format ([`Exposition`]): `# HELP` and
//!   `# TYPE` lines, label escaping, histograms as `_bucket`/`_sum`/`_count`;
//!   integers only (the freestanding targets have no floating point);
//! - [`registry`]: the unikernel's one list of collectors ([`register`],
//!   [`render`]). A collector is a function that writes its families when
//!   `/metrics` is asked for, so a part that already counts (kiln-net's
//!   `DeviceStats`) pays nothing per frame for being exported.
//!
//! The registry follows the runtime's model: one thread. A freestanding
//! image (`target_os = "none"`) has one registry; a hosted process has one
//! per thread, so tests on several threads do not see each other's.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(not(target_os = "none"))]
extern crate std;

pub mod metric;
pub mod registry;
pub mod text;

pub use metric::{Counter, Gauge, Histogram};
pub use registry::{Collect, Registration, register, render};
pub use text::{CONTENT_TYPE, Exposition, Family, Kind};
