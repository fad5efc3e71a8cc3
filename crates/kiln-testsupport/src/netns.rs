//! Network namespaces removed on drop with their taps and processes, `ip` helpers, re-running a test inside one.
//!
//! A test that needs the host kernel's network makes a [`Netns`] of its
//! own, puts its taps and addresses inside, and runs its servers and
//! clients there: through [`Netns::command`] (`ip netns exec`), or, for
//! Rust clients, by re-running an ignored test of the same binary inside
//! it ([`Netns::rerun`], or [`test_inside`] for a whole outer half), which
//! first checks with [`inside`] that it runs where it should. Nothing is
//! ever addressed in the root namespace.

use std::ffi::OsStr;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::process::ChildGuard;
use crate::skip::{Tool, netns_or_skip};

/// The environment variable that tells a re-run test which namespace it
/// must find itself in.
pub const NETNS_ENV: &str = "KILN_TEST_NETNS";

/// Why a namespace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `ip` could not be started.
    #[error("cannot run `ip`; hint: install iproute2")]
    Spawn(#[source] std::io::Error),
    /// `ip` ran and failed.
    #[error("ip {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// `ip ARGS`: its stdout, or why it failed.
pub fn try_ip(args: &[&str]) -> Result<String, NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetnsError::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        })
    }
}

/// `ip ARGS`, failing the test if it fails; its stdout.
pub fn ip(args: &[&str]) -> String {
    try_ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Gives link `ifname` the addresses `v4` and, if any, `v6` (without
/// duplicate address detection) and sets it up, with `ip PREFIX...`.
fn address_with(prefix: &[&str], ifname: &str, v4: &str, v6: Option<&str>) {
    let run = |args: &[&str]| ip(&[prefix, args].concat());
    run(&["addr", "add", v4, "dev", ifname]);
    if let Some(v6) = v6 {
        run(&["-6", "addr", "add", v6, "dev", ifname, "nodad"]);
    }
    run(&["link", "set", ifname, "up"]);
}

/// From inside a namespace (see [`inside`]): gives link `ifname` the
/// host side's addresses `v4` and `v6` (CIDR) and sets it up.
pub fn address(ifname: &str, v4: &str, v6: Option<&str>) {
    address_with(&[], ifname, v4, v6);
}

/// In a test re-run by [`Netns::rerun`]: the namespace it runs in, after
/// checking that it is the one named in [`NETNS_ENV`] (never touch the
/// interfaces of a namespace that is not the test's own). `None` when the
/// test was not started that way.
pub fn inside() -> Option<String> {
    let ns = std::env::var(NETNS_ENV).ok()?;
    assert_eq!(
        ip(&["netns", "identify"]).trim(),
        ns,
        "not inside the namespace {ns}"
    );
    Some(ns)
}

/// What `ethtool -k IFNAME`, run in this process's namespace, says of
/// `feature` (`tx-checksumming`, `tcp-segmentation-offload`, ...): `on`
/// or `off` (the first word, before any `[fixed]` or `[requested on]`),
/// `?` when it is not listed. Fails the test if ethtool fails.
pub fn offload(ifname: &str, feature: &str) -> String {
    offload_by(Command::new("ethtool"), ifname, feature)
}

/// [`offload`] for `ethtool`, a command that runs it.
fn offload_by(mut ethtool: Command, ifname: &str, feature: &str) -> String {
    let out = ethtool.args(["-k", ifname]).output().expect("run ethtool");
    assert!(out.status.success(), "ethtool -k {ifname}: {out:?}");
    let prefix = format!("{feature}: ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_string()
}

/// The outer half of a test run in a namespace of its own: unless
/// [`netns_or_skip`] skips `test` (which needs `tools`), makes a [`Netns`]
/// tagged `tag`, re-runs the ignored test `inner` of this test binary
/// inside it ([`Netns::run_test`], at most `limit`) and fails unless it
/// passed.
pub fn test_inside(test: &str, tools: &[Tool<'_>], tag: &str, inner: &str, limit: Duration) {
    if !netns_or_skip(test, tools) {
        return;
    }
    let ns = Netns::new(tag);
    let status = ns.run_test(inner, limit);
    assert!(
        status.success(),
        "{inner} inside {} failed: {status}",
        ns.name
    );
}

/// A network namespace of the test's own, deleted on drop with everything
/// in it (the processes inside are killed first, by id). Its name is
/// `kiln-TAG-PID-N`: unique among concurrent tests and test processes.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with its loopback up, failing the test if that
    /// fails.
    pub fn new(tag: &str) -> Netns {
        Netns::try_new(tag).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates a namespace with its loopback up, or says why not.
    pub fn try_new(tag: &str) -> Result<Netns, NetnsError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("kiln-{tag}-{}-{n}", std::process::id());
        try_ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        try_ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS`, failing the test if it fails; its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        ip(&[&["-n", self.name.as_str()], args].concat())
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// [`offload`] of interface `ifname` inside the namespace.
    pub fn offload(&self, ifname: &str, feature: &str) -> String {
        offload_by(self.command("ethtool"), ifname, feature)
    }

    /// Adds tap `ifname` inside the namespace, down and without addresses.
    pub fn add_tap(&self, ifname: &str) {
        self.ip(&["tuntap", "add", "dev", ifname, "mode", "tap"]);
    }

    /// Gives link `ifname` the addresses `v4` and, if any, `v6` (CIDR;
    /// IPv6 without duplicate address detection) and sets it up.
    pub fn address(&self, ifname: &str, v4: &str, v6: Option<&str>) {
        address_with(&["-n", &self.name], ifname, v4, v6);
    }

    /// A command that re-runs the ignored test `test` of this test binary
    /// inside the namespace, with [`NETNS_ENV`] naming it (see [`inside`]).
    pub fn rerun(&self, test: &str) -> Command {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = self.command(exe);
        cmd.args(["--exact", test, "--ignored", "--nocapture"])
            .env(NETNS_ENV, &self.name);
        cmd
    }

    /// Re-runs the ignored test `test` inside the namespace (see
    /// [`Netns::rerun`]), its output going to this test's, and waits at
    /// most `limit` for it; its exit status. Fails the test if it cannot
    /// be started or runs longer (it is then killed).
    pub fn run_test(&self, test: &str, limit: Duration) -> ExitStatus {
        let child = self
            .rerun(test)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {test} inside {}: {e}", self.name));
        let mut child = ChildGuard(child);
        match child.wait_for(limit) {
            Ok(Some(status)) => status,
            Ok(None) => panic!("{test} inside {} still running after {limit:?}", self.name),
            Err(e) => panic!("cannot wait for {test} inside {}: {e}", self.name),
        }
    }

    /// The ids of the processes inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a namespace called `name` exists.
    pub fn exists(name: &str) -> bool {
        try_ip(&["netns", "list"])
            .unwrap_or_default()
            .split_whitespace()
            .any(|n| n == name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only processes this test started run in its namespace. Bounded:
        // at most 50 rounds of 20 ms.
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Deleting the namespace deletes the taps and addresses inside.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skip::netns_or_skip;

    #[test]
    fn a_namespace_goes_with_its_tap_and_processes_even_on_panic() {
        if !netns_or_skip("netns::tests::a_namespace_goes...", &[]) {
            return;
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new((String::new(), None)));
        let slot = seen.clone();
        let outcome = std::thread::spawn(move || {
            let ns = Netns::new("ts");
            ns.add_tap("kts0");
            ns.address("kts0", "10.66.0.1/24", Some("fd00:66::1/64"));
            let links = ns.ip(&["-br", "addr", "show", "kts0"]);
            assert!(links.contains("10.66.0.1/24"), "{links}");
            // Left running for the namespace's guard to kill.
            let sleeper = ns.command("sleep").arg("60").spawn().unwrap();
            *slot.lock().unwrap() = (ns.name().to_string(), Some(sleeper));
            panic!("a deliberate failure");
        })
        .join();
        assert!(outcome.is_err(), "the thread did not fail");
        let (name, sleeper) = std::mem::take(&mut *seen.lock().unwrap());
        assert!(name.starts_with("kiln-ts-"), "{name}");
        assert!(!Netns::exists(&name), "{name} is still there");
        let mut sleeper = ChildGuard(sleeper.expect("the sleeper started"));
        let status = sleeper.wait_for(Duration::from_secs(5)).unwrap();
        assert!(
            status.is_some_and(|s| !s.success()),
            "the process inside was not killed: {status:?}"
        );
    }

    #[test]
    fn names_are_unique() {
        if !netns_or_skip("netns::tests::names_are_unique", &[]) {
            return;
        }
        let (a, b) = (Netns::new("ts"), Netns::new("ts"));
        assert_ne!(a.name(), b.name());
        assert!(Netns::exists(a.name()) && Netns::exists(b.name()));
    }
}
