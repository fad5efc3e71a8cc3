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

/// The environment variable that makes [`write_seeds_if_asked`] rewrite a
/// corpus from the test's own builders.
pub const WRITE_SEEDS: &str = "KILN_WRITE_SEEDS";

/// Writes `seeds` (name, bytes) into `dir` when [`WRITE_SEEDS`] is set:
/// how a corpus made by a test's builders is regenerated.
pub fn write_seeds_if_asked(dir: &Path, seeds: &[(&str, Vec<u8>)]) {
    if std::env::var_os(WRITE_SEEDS).is_none() {
        return;
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    for (name, bytes) in seeds {
        let path = dir.join(name);
        std::fs::write(&path, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

/// Fails naming the first of `seeds` whose committed file in `dir` differs
/// from what the builders make now (regenerate with [`WRITE_SEEDS`]).
pub fn assert_seeds_current(dir: &Path, seeds: &[(&str, Vec<u8>)]) {
    for (name, bytes) in seeds {
        let path = dir.join(name);
        let committed =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert_eq!(&committed, bytes, "{name} is stale");
    }
}

/// xorshift64*: a deterministic generator for seeded mutations, so that a
/// failure reproduces from its seed.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
