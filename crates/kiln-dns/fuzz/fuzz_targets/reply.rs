//! Arbitrary bytes as a DNS server's replies to a kiln-dns lookup: every
//! failure is a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_dns_fuzz::reply(data);
});
