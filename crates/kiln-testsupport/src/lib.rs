//! Helpers shared by kiln's test suites, so that each suite states what it
//! checks and not how to set the stage. A dev-dependency only.
//!
//! Modules, from the bottom:
//!
//! - `sys`: the system calls std does not wrap (`wait4` for a child's CPU
//!   time, clearing `FD_CLOEXEC`), the only `unsafe` code in the crate;
//! - [`skip`]: skipping a test loudly where a resource (root, `/dev/kvm`,
//!   a program) is absent, and failing instead under `CI=true`;
//! - [`process`]: children killed on drop, waits bounded in time, output
//!   captured without filling a pipe, CPU time of a child, descriptors a
//!   child inherits;
//! - [`ports`]: free ports on 127.0.0.1;
//! - [`build`]: the workspace root and cargo runs for crates outside the
//!   workspace (stand-in guests);
//! - [`netns`]: network namespaces with unique names, removed with their
//!   taps and processes on drop (also when a test panics), `ip` helpers,
//!   and re-running a test of the current binary inside a namespace;
//! - [`image`]: hand-made images in Solo5's layout (notes and a few
//!   instructions), and temporary files that go away with the test;
//! - [`pki`]: test certificates (CAs and leaves) made with `openssl`;
//! - [`prometheus`]: a strict reader of Prometheus's text format, for
//!   `/metrics` pages;
//! - `platform` (feature `rt`): a virtual-time `kiln_rt::Platform`, a
//!   console that records, and waiting for blocking work from a task.

#![deny(unsafe_code)]

pub mod build;
pub mod fuzz;
pub mod image;
pub mod netns;
pub mod pki;
#[cfg(feature = "rt")]
pub mod platform;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod skip;
#[allow(unsafe_code)]
mod sys;
