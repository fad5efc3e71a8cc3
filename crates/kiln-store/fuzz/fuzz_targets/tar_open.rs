//! TarStore::open on arbitrary device contents must refuse or accept
//! without panicking, and an accepted archive must serve every key it
//! lists without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kiln_store_fuzz::tar_open(data));
