//! kiln-config: unikernel.toml parsing, the device graph, resolution per
//! target and code generation.
#![deny(unsafe_code)]
