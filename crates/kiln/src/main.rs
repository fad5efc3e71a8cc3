//! The kiln command-line tool.
#![deny(unsafe_code)]
fn main() {}
