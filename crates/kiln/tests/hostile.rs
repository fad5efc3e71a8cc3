//! Hostile traffic against `examples/www` on kiln's own stack (unix with
//! `--net direct`, spt, and hvt for the SYN flood), in a network namespace of its own per test
//! (host side 10.0.0.1/24 and fd00::1/64 on tap `kt0`, www at 10.0.0.2 and
//! fd00::2).
//! The raw frames come from `tests/support/hostile.py` (Python 3, AF_PACKET
//! on the tap inside the namespace), bounded in count and rate.
//!
//! - a SYN flood from spoofed sources that never answer, 3,000 at 1,000 a
//!   second: `curl` is served during and after it; then one unanswered SYN
//!   leaves the server idle (CPU ticks from /proc);
//! - 4,000 malformed frames (checksums, fragments, TCP flags and options,
//!   oversized ICMP, ARP noise), then byte-identical pages; then an IPv6
//!   burst (200 router advertisements, 3,000 mutated IPv6 SYNs) after which
//!   IPv4 is served within a second;
//! - 300 slow clients trickling a request head: a normal client still gets
//!   pages within a second each, and www never holds more sockets than its
//!   bound.
//!
//! Needs root, /dev/net/tun, `ip`, `curl` and `python3`; skips loudly
//! without them, and fails instead under `CI=true`. The full-size runs
//! (50,000 SYNs, 5,000 slow connections) are the ignored tests at the end,
//! run by hand.

mod common;
mod support {
    pub mod net;
}

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_testsupport::netns::Netns;
use kiln_testsupport::process::{ChildGuard, run};
use kiln_testsupport::skip::{kvm_or_skip, netns_or_skip};
use support::net::{Net, Running, example_image, htdocs, text};

const TAP: &str = "kt0";

fn can_run(test: &str) -> bool {
    netns_or_skip(
        test,
        &[
            ("curl", "--version", "curl"),
            ("python3", "--version", "python3"),
        ],
    )
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/hostile.py")
}

/// Where www runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    UnixDirect,
    /// The host's sockets: www's own client limit is all there is.
    UnixSocket,
    Spt,
    Hvt,
}

/// www and its tender for Solo5 target `name` (spt, hvt), built once per
/// test process with `kiln build -t NAME` (in the build directory the
/// network tests share).
fn solo5_image(name: &'static str) -> (PathBuf, PathBuf) {
    static BUILT: std::sync::Mutex<Vec<(&str, PathBuf, PathBuf)>> =
        std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, tender, image)) = built.iter().find(|b| b.0 == name) {
        return (tender.clone(), image.clone());
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kiln-hostile/www-{name}"));
    support::net::copy_example("www", &dir, &[]);
    let out = run(
        support::net::kiln_in(&dir).args(["build", "-t", name]),
        Duration::from_secs(900),
    )
    .unwrap_or_else(|e| panic!("run kiln build -t {name}: {e}"));
    assert!(
        out.status.success(),
        "kiln build -t {name}: {}",
        text(&out.stderr)
    );
    let pair = (
        dir.join(format!("dist/kiln-{name}")),
        dir.join(format!("dist/www.{name}")),
    );
    built.push((name, pair.0.clone(), pair.1.clone()));
    pair
}

/// www on `target` with `extra` arguments in a namespace of its own,
/// serving; its MAC.
fn www(target: Target, extra: &[&str]) -> (Netns, Running, String) {
    let ns = Netns::new("hs");
    ns.add_tap(TAP);
    ns.address(TAP, "10.0.0.1/24", Some("fd00::1/64"));
    let mut cmd = match target {
        Target::UnixDirect => {
            let mut cmd = ns.command(example_image("www", Net::Direct));
            cmd.arg(format!("--net:service={TAP}"));
            cmd
        }
        Target::Spt | Target::Hvt => {
            let name = if target == Target::Spt { "spt" } else { "hvt" };
            let (tender, image) = solo5_image(name);
            let mut cmd = ns.command(tender);
            cmd.arg(format!("--net:service={TAP}")).arg(image);
            cmd
        }
        Target::UnixSocket => {
            // The host's stack answers for 10.0.0.2 itself.
            ns.ip(&["addr", "add", "10.0.0.2/32", "dev", "lo"]);
            ns.command(example_image("www", Net::Socket))
        }
    };
    if target != Target::UnixSocket {
        cmd.args(["--ipv4=10.0.0.2/24", "--ipv6=fd00::2/64"]);
    }
    cmd.arg("--port=8080").args(extra);
    let mut server = Running::spawn(cmd, "hostile-www");
    server.wait_until("www serving", Duration::from_secs(20), |_| {
        fetch(&ns, "/robots.txt", 1).is_ok()
    });
    if target == Target::UnixSocket {
        // No tap: hostile.py needs a MAC only for raw frames.
        return (ns, server, "00:00:00:00:00:00".to_string());
    }
    let neigh = ns.ip(&["neigh", "show", "10.0.0.2", "dev", TAP]);
    let mac = neigh
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC for 10.0.0.2 in {neigh:?}"))
        .to_string();
    (ns, server, mac)
}

/// `curl` of `path` from inside `ns` within `secs` seconds: the body.
fn fetch(ns: &Netns, path: &str, secs: u32) -> Result<Vec<u8>, String> {
    let out = run(
        ns.command("curl")
            .args(["-sS", "--fail", "--max-time", &secs.to_string()])
            .arg(format!("http://10.0.0.2:8080{path}")),
        Duration::from_secs(u64::from(secs) + 5),
    )
    .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("curl {path}: {}{}", out.status, text(&out.stderr)))
    }
}

/// hostile.py with `args`, inside `ns`, in the background.
fn hostile(ns: &Netns, mac: &str, args: &[&str]) -> ChildGuard {
    let child = ns
        .command("python3")
        .arg(script())
        .args([TAP, mac, "fd00::2"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start hostile.py");
    ChildGuard(child)
}

/// Waits at most `limit` for hostile.py to finish successfully.
fn finish(mut child: ChildGuard, limit: Duration) {
    match child.wait_for(limit) {
        Ok(Some(s)) if s.success() => {}
        other => panic!("hostile.py: {other:?}"),
    }
}

/// User + system CPU ticks of process `pid` so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name, which ends with the last ')'.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Every page of the site is byte-identical.
fn pages_intact(ns: &Netns, server: &Running) {
    for page in [
        "index.html",
        "about.html",
        "docs/index.html",
        "css/site.css",
        "img/kiln.png",
    ] {
        let got = fetch(ns, &format!("/{page}"), 2)
            .unwrap_or_else(|e| panic!("{e}\n--- www\n{}", server.log()));
        assert_eq!(
            got,
            std::fs::read(htdocs().join(page)).unwrap(),
            "{page} differs"
        );
    }
}

fn syn_flood(target: Target, total: &str, rate: &str) {
    // Handshakes time out after 3 s instead of 10, to wait less for idle.
    let (ns, mut server, mac) = www(target, &["--handshake-timeout=3"]);
    let flood = hostile(&ns, &mac, &["flood", total, rate]);
    let started = Instant::now();
    let seconds = total.parse::<f64>().unwrap() / rate.parse::<f64>().unwrap();
    let mut served = 0;
    while started.elapsed().as_secs_f64() < seconds {
        fetch(&ns, "/robots.txt", 1)
            .unwrap_or_else(|e| panic!("during the flood: {e}\n--- www\n{}", server.log()));
        served += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    finish(flood, Duration::from_secs(30 + seconds as u64));
    assert!(served >= 2, "only {served} requests during the flood");
    pages_intact(&ns, &server);
    // Regression (issue 19, "CPU spin"): one SYN whose source never answers
    // sent the driver to 100% CPU for ever, 7-10 s later. Now, once the
    // handshakes of the flood have timed out (10 s), it stays idle.
    finish(
        hostile(&ns, &mac, &["flood", "1", "1"]),
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(12));
    let pid = server.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    // 100 ticks a second is one CPU; an idle server uses none.
    assert!(
        used <= 3,
        "www used {used} ticks in 3 s after one unanswered SYN"
    );
    server.assert_running("www after the SYN flood");
}

/// Regression (issue 19, "SYN lockout" and "CPU spin").
#[test]
fn a_syn_flood_does_not_lock_out_clients_and_leaves_the_server_idle() {
    if !can_run("a_syn_flood_does_not_lock_out_clients_and_leaves_the_server_idle") {
        return;
    }
    syn_flood(Target::UnixDirect, "3000", "1000");
}

/// The same on spt.
#[test]
fn a_syn_flood_on_spt() {
    if !can_run("a_syn_flood_on_spt") {
        return;
    }
    syn_flood(Target::Spt, "2000", "1000");
}

/// The same on hvt.
#[test]
fn a_syn_flood_on_hvt() {
    if !can_run("a_syn_flood_on_hvt") || !kvm_or_skip("a_syn_flood_on_hvt") {
        return;
    }
    syn_flood(Target::Hvt, "2000", "1000");
}

fn garbage_and_ipv6_burst(target: Target) {
    let (ns, mut server, mac) = www(target, &[]);
    finish(
        hostile(&ns, &mac, &["garbage", "4000"]),
        Duration::from_secs(60),
    );
    pages_intact(&ns, &server);
    // Regression (issue 19, "IPv6 burst cuts IPv4"): no IPv4 reply for
    // 10-20 s after it.
    finish(hostile(&ns, &mac, &["v6burst"]), Duration::from_secs(30));
    for _ in 0..3 {
        fetch(&ns, "/robots.txt", 1).unwrap_or_else(|e| {
            panic!("IPv4 after the IPv6 burst: {e}\n--- www\n{}", server.log())
        });
    }
    pages_intact(&ns, &server);
    server.assert_running("www after malformed frames and an IPv6 burst");
}

#[test]
fn malformed_frames_and_an_ipv6_burst_leave_service_intact() {
    if !can_run("malformed_frames_and_an_ipv6_burst_leave_service_intact") {
        return;
    }
    garbage_and_ipv6_burst(Target::UnixDirect);
}

/// The same on spt.
#[test]
fn malformed_frames_and_an_ipv6_burst_on_spt() {
    if !can_run("malformed_frames_and_an_ipv6_burst_on_spt") {
        return;
    }
    garbage_and_ipv6_burst(Target::Spt);
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// What a slow-client run does beside the slow clients.
struct SlowRun<'a> {
    target: Target,
    /// Slow connections, and for how many seconds.
    count: &'a str,
    secs: u64,
    /// Short connections a second beside them (0: none).
    churn: u32,
    extra: &'a [&'a str],
    /// The most resident memory allowed, in MiB.
    max_rss_mib: u64,
    /// The most file descriptors allowed (the socket stack).
    max_fds: usize,
}

fn slow_clients(run: SlowRun<'_>) {
    let (ns, mut server, mac) = www(run.target, run.extra);
    let pid = server.id();
    let slow = hostile(&ns, &mac, &["slow", run.count, &run.secs.to_string()]);
    let churn = (run.churn > 0).then(|| {
        let rate = run.churn.to_string();
        hostile(&ns, &mac, &["churn", &rate, &(run.secs - 4).to_string()])
    });
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let (mut served, mut max_rss, mut max_fds) = (0, 0, 0);
    while started.elapsed() < Duration::from_secs(run.secs.saturating_sub(4)) {
        let t = Instant::now();
        fetch(&ns, "/index.html", 1)
            .unwrap_or_else(|e| panic!("beside slow clients: {e}\n--- www\n{}", server.log()));
        assert!(t.elapsed() < Duration::from_secs(1));
        served += 1;
        max_rss = max_rss.max(rss_kib(pid));
        max_fds = max_fds.max(fds(pid));
        std::thread::sleep(Duration::from_millis(500));
    }
    if let Some(churn) = churn {
        finish(churn, Duration::from_secs(run.secs + 30));
    }
    finish(slow, Duration::from_secs(run.secs + 30));
    eprintln!(
        "{:?}: {} slow clients for {} s: {served} normal requests served, max RSS {max_rss} KiB, max fds {max_fds}",
        run.target, run.count, run.secs
    );
    assert!(served >= 3, "{served}");
    assert!(
        max_rss <= run.max_rss_mib * 1024,
        "RSS {max_rss} KiB over the bound of {} MiB",
        run.max_rss_mib
    );
    assert!(max_fds <= run.max_fds, "{max_fds} fds");
    pages_intact(&ns, &server);
    server.assert_running("www after slow clients");
}

/// Slow clients affect only themselves, also when there are more of them
/// than www's `--max-clients` (the longest waiting give way).
#[test]
fn slow_clients_do_not_stop_a_normal_client() {
    if !can_run("slow_clients_do_not_stop_a_normal_client") {
        return;
    }
    slow_clients(SlowRun {
        target: Target::UnixDirect,
        count: "300",
        secs: 10,
        churn: 0,
        extra: &["--max-clients=100"],
        max_rss_mib: 80,
        max_fds: 64,
    });
}

/// On the host's sockets www's own limit is the only one: it holds (file
/// descriptors stay under `--max-clients`), and slow clients still give way.
#[test]
fn slow_clients_on_the_socket_stack_stay_under_the_client_limit() {
    if !can_run("slow_clients_on_the_socket_stack_stay_under_the_client_limit") {
        return;
    }
    slow_clients(SlowRun {
        target: Target::UnixSocket,
        count: "300",
        secs: 10,
        churn: 0,
        extra: &["--max-clients=100"],
        max_rss_mib: 80,
        max_fds: 100 + 16,
    });
}

/// Short connections, one request each: memory does not grow with their
/// number (measured after a first round has warmed the allocator up).
#[test]
fn connection_churn_keeps_memory_flat() {
    if !can_run("connection_churn_keeps_memory_flat") {
        return;
    }
    let (ns, mut server, mac) = www(Target::UnixDirect, &[]);
    let pid = server.id();
    finish(
        hostile(&ns, &mac, &["churn", "150", "2"]),
        Duration::from_secs(30),
    );
    let warm = rss_kib(pid);
    finish(
        hostile(&ns, &mac, &["churn", "150", "6"]),
        Duration::from_secs(40),
    );
    // Closed sockets are reclaimed within the close timeout.
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid);
    eprintln!("churn: RSS {warm} KiB after 300 connections, {after} KiB after 900 more");
    assert!(
        after <= warm + warm / 10 + 512,
        "RSS grew from {warm} to {after} KiB"
    );
    server.assert_running("www after churn");
}

/// Full size, by hand: `cargo test -p kiln --test hostile -- --ignored`.
#[test]
#[ignore = "full-size hostile run (about 2 minutes), run by hand"]
fn full_size_syn_flood_of_50000() {
    if can_run("full_size_syn_flood_of_50000") {
        for target in [Target::UnixDirect, Target::Spt, Target::Hvt] {
            syn_flood(target, "50000", "1000");
        }
    }
}

/// Full size, by hand: 5,000 slow connections and 60 new connections a
/// second for two minutes (www and the stack refuse or evict past their
/// limits; memory stays under the bound).
#[test]
#[ignore = "full-size hostile run (about 2 minutes), run by hand"]
fn full_size_5000_slow_clients() {
    if can_run("full_size_5000_slow_clients") {
        for target in [Target::UnixDirect, Target::Spt] {
            // The stack's bound: 1024 sockets of 48 KiB, plus www's 512
            // request buffers and the image.
            slow_clients(SlowRun {
                target,
                count: "5000",
                secs: 120,
                churn: 60,
                extra: &[],
                max_rss_mib: 120,
                max_fds: 64,
            });
        }
    }
}
