//! Helpers shared by the CLI tests: temporary unikernel directories that
//! remove themselves, and running the `kiln` binary with its output
//! captured and temporary paths filtered.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub mod crash;

pub use tempfile::TempDir;

/// A temporary directory named `kiln-test-TAG-` and a random suffix,
/// removed on drop (also when a test fails).
pub fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("kiln-test-{tag}-"))
        .tempdir()
        .expect("create a temporary directory")
}

pub const CARGO_TOML: &str =
    "[package]\nname = \"fixture\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n";

pub const HELLO_TOML: &str = r#"[unikernel]
name = "hello"
entry = "start"

[devices.console]
type = "console"

[devices.sleep]
type = "sleep"

[arguments.times]
type = "u32"
default = 4
doc = "How many times to say hello"
"#;

pub const HELLO_RS: &str = r#"#![no_std]
use kiln_devices::{Console, Sleep};

pub async fn start(console: impl Console, sleep: impl Sleep, times: u32) {
    let _ = (console, sleep, times);
}
"#;

/// Writes a unikernel with `toml` and `lib_rs` into `dir`.
pub fn write_unikernel(dir: &Path, toml: &str, lib_rs: &str) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), CARGO_TOML).unwrap();
    std::fs::write(dir.join("unikernel.toml"), toml).unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib_rs).unwrap();
}

/// `kiln` with colours off.
pub fn kiln() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Exit code, stdout (if any) and stderr of `output`, with `dir` replaced
/// by `[DIR]`.
pub fn transcript(output: &Output, dir: &Path) -> String {
    let dir = dir.display().to_string();
    let filter = |bytes: &[u8]| String::from_utf8_lossy(bytes).replace(&dir, "[DIR]");
    let mut s = format!(
        "exit: {}\n",
        output
            .status
            .code()
            .map_or("signal".into(), |c| c.to_string())
    );
    let stdout = filter(&output.stdout);
    if !stdout.is_empty() {
        s.push_str("--- stdout\n");
        s.push_str(&stdout);
    }
    s.push_str("--- stderr\n");
    s.push_str(&filter(&output.stderr));
    s
}

/// The cargo target directory shared by every unikernel the CLI tests
/// build, so that dependencies compile once.
pub fn shared_target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-e2e-target")
}

/// `kiln` run in `dir`, building into [`shared_target_dir`].
pub fn kiln_in(dir: &Path) -> Command {
    let mut cmd = kiln();
    cmd.env("KILN_TARGET_DIR", shared_target_dir())
        .current_dir(dir);
    cmd
}

/// `bytes` as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` with its output captured, killing it after `limit`.
pub fn run_for(cmd: &mut Command, limit: Duration) -> Output {
    kiln_testsupport::process::run(cmd, limit).unwrap_or_else(|e| panic!("{e}"))
}

/// A unikernel's exit code for an argument error: MirageOS's
/// (`Functoria_runtime.argument_error`), which albatross does not restart.
pub const ARGUMENT_ERROR: i32 = 64;

/// Asserts that `output` is a unikernel's `--help`: exit 63, MirageOS's
/// (`Functoria_runtime.help_version`), which albatross does not restart.
pub fn help_ok(output: Output, what: &str) -> Output {
    assert_eq!(
        output.status.code(),
        Some(63),
        "{what}: not a --help exit\n--- stdout\n{}\n--- stderr\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

/// `output`, after asserting that it exited 0 (`what` names the command in
/// the failure, with both streams).
pub fn ok(output: Output, what: &str) -> Output {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{what} failed\n--- stdout\n{}\n--- stderr\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

/// Copies the directory tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A Cargo.toml for a copy of examples/www outside the workspace: its
/// dependencies by absolute path (the example's own manifest names them
/// relative to itself).
pub fn www_cargo_toml() -> String {
    example_cargo_toml("www")
}

/// A Cargo.toml for a copy of `examples/NAME` outside the workspace, named
/// NAME: the example's own [dependencies], their relative paths made
/// absolute, so that a copy builds what the example builds, whatever it
/// comes to need.
pub fn example_cargo_toml(name: &str) -> String {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = crates.join(format!("../examples/{name}/Cargo.toml"));
    let manifest =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dependencies: String = manifest
        .lines()
        .skip_while(|l| l.trim() != "[dependencies]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.replace(
                "path = \"../../crates/",
                &format!("path = \"{}/", crates.display()),
            ) + "\n"
        })
        .collect();
    assert!(
        dependencies.contains("kiln-devices"),
        "no dependencies read from {}",
        path.display()
    );
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [dependencies]\n{dependencies}\n[workspace]\n"
    )
}
