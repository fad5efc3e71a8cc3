//! `examples/www` and `examples/udp-echo` built by `kiln build` with
//! kiln's own stack (`--net direct`) and run on a tap inside a network
//! namespace of their own (`kiln-nt-<pid>-<n>`, host side 10.0.0.1/24 and
//! fd00::1/64): the HTTP suite, ping, IPv6, DHCP from dnsmasq, static
//! addressing with `--no-dhcp`, and UDP echoes.
//!
//! Needs root, /dev/net/tun, `ip`, `curl`, `ping` and `dnsmasq`
//! (scripts/test installs them); skips loudly without them, and fails
//! instead under `CI=true`. Clients run inside the namespace: `curl` and
//! `ping` through `ip netns exec`, the Rust clients by running this test
//! binary again there (the ignored test `inside_the_namespace`). Every
//! namespace, with the processes in it, is removed when its test ends,
//! also when it fails.

mod common;
mod support {
    pub mod net;
    pub mod net_http;
}

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::temp_dir;
use kiln_testsupport::netns::{self, Netns};
use kiln_testsupport::skip::netns_or_skip;
use support::net::{Net, Running, curl, echo_roundtrips, example_image, text};
use support::net_http;

/// The tap inside each namespace.
const TAP: &str = "kt0";
/// Where the inner test finds its jobs.
const INNER: &str = "KILN_NT_INNER";

/// Whether this machine can run the namespace tests; skips loudly if not.
fn can_run(test: &str) -> bool {
    netns_or_skip(
        test,
        &[
            ("curl", "--version", "curl"),
            ("ping", "-V", "iputils-ping"),
            ("dnsmasq", "--version", "dnsmasq-base"),
        ],
    )
}

/// A namespace with the tap and the host side's addresses.
fn namespace() -> Netns {
    let ns = Netns::new("nt");
    ns.add_tap(TAP);
    ns.address(TAP, "10.0.0.1/24", Some("fd00::1/64"));
    ns
}

/// Starts `image` inside `ns` on the tap with `args`, and waits until its
/// log has `ready`.
fn start_in(ns: &Netns, image: &Path, args: &[&str], ready: &str) -> Running {
    let mut cmd = ns.command(image);
    cmd.arg(format!("--net:service={TAP}")).args(args);
    let mut unikernel = Running::spawn(cmd, "direct");
    unikernel.wait_until(
        &format!("{} {}", image.display(), args.join(" ")),
        Duration::from_secs(20),
        |log| log.contains(ready),
    );
    unikernel
}

/// `www` for the direct stack, started inside `ns` with `args` and
/// `--port=8080`, once it says it serves.
fn www_in(ns: &Netns, args: &[&str]) -> Running {
    let image = example_image("www", Net::Direct);
    let args = [args, &["--port=8080"]].concat();
    start_in(ns, &image, &args, "www: serving on port 8080")
}

/// `curl` inside `ns`.
fn ns_curl(ns: &Netns, args: &[&str]) -> Result<Vec<u8>, String> {
    curl(ns.command("curl"), args)
}

/// Waits until `url` answers 200 from inside `ns` (the stack may still be
/// configuring its address), for at most 20 s.
fn wait_for_http(ns: &Netns, server: &mut Running, url: &str) {
    server.wait_until(
        &format!("the server at {url}"),
        Duration::from_secs(20),
        |_| {
            ns.command("curl")
                .args(["-sS", "-g", "--max-time", "1", "-o", "/dev/null"])
                .args(["-w", "%{http_code}", url])
                .output()
                .is_ok_and(|o| o.stdout == b"200")
        },
    );
}

/// Runs this test binary's `inside_the_namespace` in `ns` with `jobs`
/// (one per line: `http ADDR CHECK,...|all` or `udp LOCAL SERVER SIZE,...`);
/// panics with its output if a job fails.
fn run_inside(ns: &Netns, jobs: &[String], server: &Running) {
    let mut cmd = ns.rerun("inside_the_namespace");
    cmd.env(INNER, jobs.join("\n"));
    let mut inner = Running::spawn(cmd, "inner");
    match inner.wait_exit(Duration::from_secs(180)) {
        Some(status) if status.success() => eprintln!("{}", inner.log()),
        Some(status) => panic!(
            "the clients inside {} failed ({status})\n--- their output\n{}\n--- the server's output\n{}",
            ns.name(),
            inner.log(),
            server.log()
        ),
        None => panic!(
            "the clients inside {} did not finish within 180 s\n--- their output\n{}",
            ns.name(),
            inner.log()
        ),
    }
}

/// The Rust clients, run by `run_inside` inside a namespace.
#[test]
#[ignore = "run inside a network namespace by the tests of this file"]
fn inside_the_namespace() {
    let Ok(jobs) = std::env::var(INNER) else {
        eprintln!("inside_the_namespace: nothing to do outside the namespace tests");
        return;
    };
    // Never send test traffic from a namespace that is not ours.
    netns::inside().expect("run inside a namespace by run_inside");
    let mut failures = Vec::new();
    for job in jobs.lines() {
        let words: Vec<&str> = job.split_whitespace().collect();
        match words.as_slice() {
            ["http", addr, checks] => {
                let addr: SocketAddr = addr.parse().expect("a server address");
                for (name, check) in net_http::ALL {
                    if *checks == "all" || checks.split(',').any(|c| c == *name) {
                        let started = Instant::now();
                        let result = check(addr);
                        eprintln!(
                            "{name} against {addr}: {} in {:?}",
                            if result.is_ok() { "ok" } else { "FAILED" },
                            started.elapsed()
                        );
                        if let Err(e) = result {
                            failures.push(format!("{name} against {addr}: {e}"));
                        }
                    }
                }
            }
            ["udp", local, server, sizes] => {
                let sizes: Vec<usize> = sizes
                    .split(',')
                    .map(|s| s.parse().expect("a size"))
                    .collect();
                let (local, server) = (
                    local.parse().expect("a local address"),
                    server.parse().expect("a server address"),
                );
                if let Err(e) = echo_roundtrips(local, server, &sizes) {
                    failures.push(format!("udp echo from {local} to {server}: {e}"));
                }
            }
            _ => panic!("bad job {job:?}"),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn www_http_suite_over_the_direct_stack() {
    if !can_run("www_http_suite_over_the_direct_stack") {
        return;
    }
    let ns = namespace();
    let mut www = www_in(&ns, &["--ipv4=10.0.0.2/24"]);
    wait_for_http(&ns, &mut www, "http://10.0.0.2:8080/robots.txt");
    run_inside(&ns, &["http 10.0.0.2:8080 all".into()], &www);
    www.assert_running("www after the suite");
}

#[test]
fn ping_and_ipv6_over_the_direct_stack() {
    if !can_run("ping_and_ipv6_over_the_direct_stack") {
        return;
    }
    let ns = namespace();
    let mut www = www_in(&ns, &["--ipv4=10.0.0.2/24", "--ipv6=fd00::2/64"]);
    wait_for_http(&ns, &mut www, "http://10.0.0.2:8080/robots.txt");
    for (family, addr) in [("-4", "10.0.0.2"), ("-6", "fd00::2")] {
        let out = ns
            .command("ping")
            .args([family, "-c", "5", "-i", "0.2", "-W", "2", addr])
            .output()
            .expect("run ping");
        let report = text(&out.stdout);
        assert!(
            out.status.success() && report.contains("5 received"),
            "ping {addr} from inside {}: {}\n{report}{}\n--- www's output\n{}",
            ns.name(),
            out.status,
            text(&out.stderr),
            www.log()
        );
    }
    // An address that nobody has: ping must fail (the test can fail).
    let out = ns
        .command("ping")
        .args(["-4", "-c", "1", "-W", "1", "10.0.0.9"])
        .output()
        .expect("run ping");
    assert!(!out.status.success(), "10.0.0.9 answered ping");

    wait_for_http(&ns, &mut www, "http://[fd00::2]:8080/robots.txt");
    let index = ns_curl(&ns, &["-g", "http://[fd00::2]:8080/"])
        .unwrap_or_else(|e| panic!("{e}\n--- www's output\n{}", www.log()));
    assert_eq!(
        index,
        std::fs::read(support::net::htdocs().join("index.html")).unwrap(),
        "index.html over IPv6 differs"
    );
    run_inside(
        &ns,
        &[
            "http [fd00::2]:8080 pages_are_byte_identical,head_has_headers_and_no_body,etag_gives_304,keep_alive_and_pipelined".into(),
        ],
        &www,
    );
    www.assert_running("www after ping and IPv6");
}

/// dnsmasq serving DHCP on the tap inside `ns`, its lease file and log in
/// `tmp`.
fn dnsmasq(ns: &Netns, tmp: &Path) -> (Running, PathBuf) {
    let leases = tmp.join("leases");
    let mut cmd = ns.command("dnsmasq");
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        "--user=root",
        "--group=root",
        "--log-dhcp",
        "--log-facility=-",
        "--dhcp-authoritative",
    ])
    .arg(format!("--interface={TAP}"))
    .arg("--dhcp-range=10.0.0.100,10.0.0.150,255.255.255.0,1h")
    .arg(format!("--dhcp-leasefile={}", leases.display()))
    .arg(format!("--pid-file={}", tmp.join("dnsmasq.pid").display()));
    let mut server = Running::spawn(cmd, "dnsmasq");
    server.wait_until("dnsmasq", Duration::from_secs(10), |log| {
        log.contains("DHCP, IP range 10.0.0.100 -- 10.0.0.150")
    });
    (server, leases)
}

/// The addresses in a dnsmasq lease file (`EXPIRY MAC ADDR NAME ID`).
fn leased(leases: &Path) -> Vec<String> {
    std::fs::read_to_string(leases)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

#[test]
fn dhcp_lease_from_dnsmasq() {
    if !can_run("dhcp_lease_from_dnsmasq") {
        return;
    }
    let ns = namespace();
    let tmp = temp_dir("dhcp");
    let (mut dhcp, leases) = dnsmasq(&ns, tmp.path());
    let mut www = www_in(&ns, &[]);
    let mut addr = String::new();
    www.wait_until(
        "www asking dnsmasq for a lease",
        Duration::from_secs(30),
        |_| match leased(&leases).first() {
            Some(a) => {
                addr = a.clone();
                true
            }
            None => false,
        },
    );
    assert!(
        addr.starts_with("10.0.0.") && dhcp.log().contains(&format!("DHCPACK({TAP}) {addr}")),
        "lease {addr:?}\n--- dnsmasq\n{}",
        dhcp.log()
    );
    let url = format!("http://{addr}:8080/about.html");
    wait_for_http(&ns, &mut www, &url);
    let page = ns_curl(&ns, &[&url]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        page,
        std::fs::read(support::net::htdocs().join("about.html")).unwrap(),
        "about.html over the leased address differs"
    );
    dhcp.assert_running("dnsmasq");
    www.assert_running("www after DHCP");
}

#[test]
fn static_address_with_no_dhcp() {
    if !can_run("static_address_with_no_dhcp") {
        return;
    }
    let ns = namespace();
    let tmp = temp_dir("nodhcp");
    // A DHCP server is there, and must not be asked.
    let (dhcp, leases) = dnsmasq(&ns, tmp.path());
    let mut www = www_in(&ns, &["--no-dhcp", "--ipv4=10.0.0.3/24"]);
    wait_for_http(&ns, &mut www, "http://10.0.0.3:8080/robots.txt");
    run_inside(
        &ns,
        &["http 10.0.0.3:8080 pages_are_byte_identical,missing_page_is_404".into()],
        &www,
    );
    assert!(
        leased(&leases).is_empty() && !dhcp.log().contains("DHCPDISCOVER"),
        "www asked for a lease with --no-dhcp\n--- dnsmasq\n{}",
        dhcp.log()
    );
    www.assert_running("www with a static address");
}

#[test]
fn udp_echo_over_the_direct_stack() {
    if !can_run("udp_echo_over_the_direct_stack") {
        return;
    }
    let image = example_image("udp-echo", Net::Direct);
    let ns = namespace();
    let mut echo = start_in(
        &ns,
        &image,
        &["--ipv4=10.0.0.2/24", "--ipv6=fd00::2/64", "--port=7777"],
        "udp_echo: echoing on port 7777",
    );
    // Whole datagrams up to one Ethernet frame: the direct stack does not
    // fragment (1472 = 1500 - 20 - 8 over IPv4, 1452 over IPv6).
    run_inside(
        &ns,
        &[
            "udp 10.0.0.1:0 10.0.0.2:7777 1,0,17,512,1400,1472".into(),
            "udp [fd00::1]:0 [fd00::2]:7777 1,0,17,512,1400,1452".into(),
        ],
        &echo,
    );
    echo.assert_running("udp-echo after the echoes");
}

/// The guard removes the namespace (and its tap and processes) even when
/// the test that made it panics.
#[test]
fn a_failing_test_leaves_no_namespace() {
    if !can_run("a_failing_test_leaves_no_namespace") {
        return;
    }
    let image = example_image("www", Net::Direct);
    let name = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let pid = std::sync::Arc::new(std::sync::Mutex::new(0u32));
    let (name2, pid2) = (name.clone(), pid.clone());
    let outcome = std::thread::spawn(move || {
        let ns = namespace();
        *name2.lock().unwrap() = ns.name().to_string();
        let www = start_in(
            &ns,
            &image,
            &["--ipv4=10.0.0.2/24", "--port=8080"],
            "www: serving on port 8080",
        );
        *pid2.lock().unwrap() = www.id();
        panic!("a deliberate failure");
    })
    .join();
    assert!(outcome.is_err(), "the thread did not fail");
    let name = name.lock().unwrap().clone();
    assert!(!name.is_empty(), "the namespace was not made");
    assert!(!Netns::exists(&name), "{name} is still there");
    let pid = *pid.lock().unwrap();
    assert!(pid != 0, "www did not start");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "www (pid {pid}) still runs"
    );
}
