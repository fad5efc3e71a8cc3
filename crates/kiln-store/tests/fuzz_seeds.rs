//! The fuzz targets of crates/kiln-store/fuzz over their seed corpora
//! (and any crash inputs added to them): every seed must be accepted or
//! refused without a panic, as under `cargo fuzz`.

#[allow(dead_code, unreachable_pub)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz;

use std::path::Path;

/// Runs `target` over every file in `fuzz/seeds/NAME`; at least `min` seeds.
fn replay(name: &str, min: usize, target: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(name);
    kiln_testsupport::fuzz::replay_seeds(&dir, min, target);
}

#[test]
fn tar_open_seeds() {
    replay("tar_open", 2, fuzz::tar_open);
}

#[test]
fn log_open_seeds() {
    replay("log_open", 2, fuzz::log_open);
}
