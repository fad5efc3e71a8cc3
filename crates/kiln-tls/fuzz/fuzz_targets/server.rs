//! Arbitrary bytes as a client's records to a kiln-tls server: every
//! failure is a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln_tls_fuzz::server(data);
});
