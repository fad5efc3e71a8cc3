//! Skipping a test loudly where a resource is absent, and failing instead under `CI=true`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Says on stderr that `test` is skipped and why; panics instead when the
/// environment has `CI=true`, where every test must run.
pub fn skip(test: &str, why: &str) {
    // Written to stderr itself, not through `eprintln!`, which the test
    // harness captures and shows only for failing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: skipping is not allowed with CI=true: {why}"
    );
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Whether `program` can be started (`program ARG` runs at all, whatever
/// its exit status).
pub fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether `test` can use KVM; if not, skips it loudly (see [`skip`]).
pub fn kvm_or_skip(test: &str) -> bool {
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => true,
        Err(e) => {
            skip(
                test,
                &format!("/dev/kvm is not usable ({e}); hint: run on a host with KVM"),
            );
            false
        }
    }
}

/// A program a test needs: its name, an argument that makes it exit at
/// once, and the Debian package that has it.
pub type Tool<'a> = (&'a str, &'a str, &'a str);

/// Whether `test` can make network namespaces and taps and run `tools`;
/// if not, skips it loudly (see [`skip`]). Needs root, `/dev/net/tun` and
/// `ip` besides `tools`.
pub fn netns_or_skip(test: &str, tools: &[Tool<'_>]) -> bool {
    if !is_root() {
        skip(test, "needs root for a network namespace and a tap");
        return false;
    }
    if !Path::new("/dev/net/tun").exists() {
        skip(test, "/dev/net/tun is absent");
        return false;
    }
    for (program, arg, package) in [("ip", "-V", "iproute2")].iter().chain(tools) {
        if !have(program, arg) {
            skip(
                test,
                &format!("`{program}` is not installed (scripts/test installs {package})"),
            );
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_not_had() {
        assert!(!have("kiln-no-such-program", "--version"));
        assert!(have("sh", "-c"));
    }

    #[test]
    fn skipping_fails_under_ci() {
        // The check reads the environment of this process: run it in a
        // child so that no other test sees CI change.
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args(["--exact", "skip::tests::skip_as_child", "--ignored"])
            .env("CI", "true")
            .output()
            .unwrap();
        assert!(!out.status.success(), "a skip under CI=true passed");
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "skip::tests::skip_as_child", "--ignored"])
            .env_remove("CI")
            .output()
            .unwrap();
        assert!(out.status.success(), "a skip without CI failed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("SKIPPED child: absent"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run by skipping_fails_under_ci"]
    fn skip_as_child() {
        skip("child", "absent");
    }
}
