//! Replaying a fuzz target's seed corpus in an ordinary test, so the
//! seeds (and any crash inputs added to them) run in CI without libFuzzer.

use std::path::Path;

/// Runs `target` over every file in `dir` (a fuzz crate's `seeds/NAME`)
/// and fails naming the seed that panics, as `cargo fuzz` would stop
/// there; at least `min` seeds must be found, so an emptied or moved
/// corpus does not pass silently.
pub fn replay_seeds<R>(dir: &Path, min: usize, target: impl Fn(&[u8]) -> R) {
    let mut n = 0;
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read the seeds in {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .path();
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&bytes))).is_err() {
            panic!("{} panicked", path.display());
        }
        n += 1;
    }
    assert!(n >= min, "only {n} seeds in {}", dir.display());
}
