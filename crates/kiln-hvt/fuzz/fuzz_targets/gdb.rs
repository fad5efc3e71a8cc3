//! Fuzzes the gdb stub (`--gdb`): gdbstub's packet parser and kiln-hvt's
//! target behind it (memory through the guest's page tables, registers,
//! breakpoints, trap frames) against a guest without a VM whose registers
//! and memory are the input's too (`kiln_hvt::gdb_harness`). Run with
//! `cargo +nightly fuzz run gdb fuzz/corpus/gdb fuzz/seeds/gdb` from
//! `crates/kiln-hvt`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_hvt::gdb_harness::run(data);
});
