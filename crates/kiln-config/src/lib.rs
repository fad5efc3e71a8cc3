//! kiln-config: from `unikernel.toml` to a generated crate.
//!
//! Layers, from the bottom:
//!
//! - [`diagnostic`]: configuration errors with `file:line:col`, a source
//!   snippet and a hint, rendered by miette;
//! - [`model`]: targets, device types, dependency keys, implementation
//!   choices;
//! - [`manifest`]: parsing `unikernel.toml` with spans;
//! - [`graph`]: the device graph (names, dependencies, cycles) and its
//!   resolution to implementations for one target ([`impls`] is the table
//!   of implementations per target);
//! - [`entry`]: reading the unikernel crate with `syn` and matching the entry
//!   function's parameters to devices and arguments;
//! - [`codegen`]: one backend per target writes the generated crate
//!   (`unix` over kiln-unix, `solo5` for hvt and spt over kiln-solo5), the
//!   `main.rs` of both from one generator (`codegen::program`);
//! - [`describe`]: the resolved graph as text or Graphviz;
//! - [`project`]: the paths of a unikernel directory and the `configure`
//!   step that ties the layers together.
#![deny(unsafe_code)]

pub mod codegen;
pub mod describe;
pub mod diagnostic;
pub mod entry;
pub mod graph;
pub mod impls;
pub mod manifest;
pub mod model;
pub mod project;

pub use diagnostic::{ConfigError, Located, SourceFile};
pub use model::{Choices, DeviceType, Impl, Target};
pub use project::{Checked, Configured, Project};
