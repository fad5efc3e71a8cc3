//! What the integration tests share: a copy of examples/hello to change.

use std::path::{Path, PathBuf};

fn hello() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello")
}

/// A copy of hello in a fresh directory under the test's temp dir.
pub fn copy_hello(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    for file in ["Cargo.toml", "unikernel.toml", "src/lib.rs"] {
        std::fs::copy(hello().join(file), dir.join(file)).unwrap();
    }
    dir
}
