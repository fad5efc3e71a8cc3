//! Arbitrary bytes as a server's records to a kiln-tls client: every
//! failure is a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln_tls_fuzz::client(data);
});
