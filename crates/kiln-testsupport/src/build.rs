//! The workspace root, and cargo runs for crates outside the workspace (stand-in guests).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a cargo run failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// cargo could not be started.
    #[error("cannot run cargo")]
    Spawn(#[source] std::io::Error),
    /// cargo ran and failed; its stderr follows.
    #[error("cargo {args} failed in {dir}:\n{stderr}")]
    Failed {
        args: String,
        dir: PathBuf,
        stderr: String,
    },
}

/// The workspace root (two folders above `manifest_dir`, the
/// `CARGO_MANIFEST_DIR` of a crate under `crates/` or `examples/`).
pub fn workspace_root(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("../..")
}

/// The cargo target directory of this test run (`CARGO_TARGET_DIR`, else
/// `target` under the workspace root) joined with `sub`: where tests build
/// what they run.
pub fn target_dir(manifest_dir: &str, sub: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || workspace_root(manifest_dir).join("target"),
            PathBuf::from,
        )
        .join(sub)
}

/// Runs the cargo that runs the tests (`CARGO`) with `args` in `dir`, into
/// `target_dir`, without the test run's `CARGO_TARGET_DIR` and `RUSTFLAGS`.
pub fn cargo(dir: &Path, target_dir: &Path, args: &[&str]) -> Result<(), BuildError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .map_err(BuildError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed {
            args: args.join(" "),
            dir: dir.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
