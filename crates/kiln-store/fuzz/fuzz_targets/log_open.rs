//! LogStore::open on arbitrary device contents must refuse or accept
//! without panicking; an accepted store must serve what it lists (or say
//! `Corrupt`), and take a write and a compaction.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kiln_store_fuzz::log_open(data));
