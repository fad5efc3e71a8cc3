//! Arbitrary bytes as the data of a DHCP lease's Domain Search option
//! (RFC 3397): decoding never panics and keeps its bounds.
//!
//! `cargo fuzz run domain_search seeds/domain_search` from
//! crates/kiln-net/fuzz; crates/kiln-net/tests/fuzz_seeds.rs replays the
//! seeds in every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_net::domain_search::decode(data);
});
