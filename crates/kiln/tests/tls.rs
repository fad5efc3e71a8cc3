//! HTTPS, names and random numbers end to end, on images `kiln build`
//! makes: `examples/wwws` serving its site in a network namespace on hvt,
//! spt, unix (kiln's stack on a tap, and host sockets) and virtio
//! (QEMU's microvm), driven by `curl` and `openssl s_client`;
//! `examples/fetch` on hvt and unix against nginx with a CA made for the
//! test, on hvt its address and DNS server from dnsmasq's DHCP (success,
//! wrong CA, wrong name, expired certificate, NXDOMAIN); and the random
//! device of unix, hvt and spt (a chi-squared test on 1 MiB, two boots
//! never alike). wwws's server logic is also tested in-process
//! (`examples/wwws/tests/host.rs`).
//!
//! Each image is built once per test process, in the release profile
//! users get, in the target directory the other CLI tests share: rustls
//! and the RustCrypto crates compile once per target triple (once for
//! hvt, spt and virtio, once for unix), and each further image costs its
//! link-time optimisation (about 20 s). `test = false` in Cargo.toml:
//! scripts/test runs it by name, beside the rest of the suite
//! (docs/ci.md); `cargo test -p kiln --test tls` runs it alone.
//!
//! Needs root, `ip`, `curl`, `openssl`, `nginx`, `dnsmasq`, for hvt and
//! virtio /dev/kvm and for virtio `qemu-system-x86_64` (scripts/test
//! installs the tools); skips loudly without them and fails instead under
//! `CI=true`. All traffic stays inside the test's namespaces.

mod common;
mod support {
    pub mod net;
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{kiln, kiln_in, temp_dir, text, write_unikernel};
use kiln_testsupport::netns::Netns;
use kiln_testsupport::pki;
use kiln_testsupport::process::stdout_of;
use kiln_testsupport::skip::{have, kvm_or_skip, netns_or_skip, skip};
use support::net::{Running, copy_example, files_under, workspace};

/// The tap inside each namespace.
const TAP: &str = "kt0";

/// An address in fetch's namespace where nothing listens.
const REFUSING: &str = "169.254.0.3";

/// Where the examples are built: kept between runs.
fn build_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-tls")
}

/// `kiln configure -t TARGET [--net NET]` and `kiln build` of a copy of
/// `examples/NAME` (or of the unikernel already in `dir`); the image,
/// built once per test process.
fn build(name: &str, target: &str, net: Option<&str>, dir: Option<&Path>) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let key = format!("{name}-{target}-{}", net.unwrap_or("default"));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(key.clone())
        .or_insert_with(|| {
            let dir = match dir {
                Some(d) => d.to_path_buf(),
                None => {
                    let d = build_root().join(&key);
                    copy_example(name, &d, &[]);
                    // wwws uses www's HTTP code: point at it from the copy.
                    let manifest = d.join("Cargo.toml");
                    let toml = std::fs::read_to_string(&manifest).unwrap();
                    let www = workspace().join("examples/www");
                    let toml = toml.replace(
                        "path = \"../www\"",
                        &format!("path = {:?}", www.display().to_string()),
                    );
                    std::fs::write(&manifest, toml).unwrap();
                    d
                }
            };
            let mut configure = vec!["configure", "-t", target];
            if let Some(net) = net {
                configure.extend(["--net", net]);
            }
            // `kiln build` alone builds for unix; `-t` keeps the rest of
            // the configuration.
            let build: &[&str] = if target == "unix" {
                &["build"]
            } else {
                &["build", "-t", target]
            };
            for args in [&configure[..], build] {
                let started = Instant::now();
                let out = kiln_in(&dir).args(args).output().expect("run kiln");
                assert!(
                    out.status.success(),
                    "kiln {args:?} in {}: {}",
                    dir.display(),
                    text(&out.stderr)
                );
                eprintln!("kiln {args:?} {key}: {:?}", started.elapsed());
                if args[0] == "build" {
                    let stderr = text(&out.stderr);
                    let image = stderr
                        .lines()
                        .find_map(|l| l.strip_prefix("built "))
                        .unwrap_or_else(|| {
                            panic!("kiln build did not say what it built:\n{stderr}")
                        });
                    return PathBuf::from(image);
                }
            }
            unreachable!("the build step returns")
        })
        .clone()
}

/// A CA (`ca.pem`), an unrelated one (`other.pem`) and leaves signed by
/// the first, each `NAME.pem` with `NAME.key`: `site` for `names`,
/// `expired` (for `names`, its validity over a day ago), `wrong` (for
/// `other.test` only).
fn pki(dir: &Path, names: &str) {
    pki::ca(dir, "ca");
    pki::ca(dir, "other");
    for (leaf, san, days) in [
        ("site", names, "30"),
        ("expired", names, "-1"),
        ("wrong", "DNS:other.test", "30"),
    ] {
        pki::leaf(dir, leaf, leaf, san, days, "ca");
    }
}

/// A tar image (what a disk kv_ro reads) of `files` in `dir`, named as in
/// the store.
fn tar(dir: &Path, image: &str, files: &[(&str, &str)]) -> PathBuf {
    let stage = dir.join(format!("{image}.d"));
    std::fs::create_dir_all(&stage).unwrap();
    for (from, to) in files {
        std::fs::copy(dir.join(from), stage.join(to)).unwrap();
    }
    let names: Vec<&str> = files.iter().map(|(_, to)| *to).collect();
    stdout_of(
        Command::new("tar")
            .arg("--format=ustar")
            .arg("-cf")
            .arg(dir.join(image))
            .arg("-C")
            .arg(&stage)
            .args(&names),
    )
    .unwrap_or_else(|e| panic!("tar: {e}"));
    dir.join(image)
}

fn can_run(test: &str, hvt: bool) -> bool {
    netns_or_skip(
        test,
        &[
            ("curl", "--version", "curl"),
            ("openssl", "version", "openssl"),
            ("nginx", "-v", "nginx"),
            ("dnsmasq", "--version", "dnsmasq-base"),
        ],
    ) && (!hvt || kvm_or_skip(test))
}

/// `curl` inside `ns`; stdout on success.
fn ns_curl(ns: &Netns, args: &[&str]) -> Result<Vec<u8>, String> {
    stdout_of(
        ns.command("curl")
            .args(["-sS", "--max-time", "20"])
            .args(args),
    )
    .map_err(|e| e.to_string())
}

/// `openssl s_client -connect ADDR:443` inside `ns` with `args` and
/// `stdin`, bounded by `timeout`: its stdout and stderr together, whatever
/// its exit status.
fn ns_s_client(ns: &Netns, addr: &str, args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = ns
        .command("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(format!("{addr}:443"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    let out = child.wait_with_output().expect("openssl s_client ends");
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// The command that runs the wwws `image` built for `target` inside `ns`,
/// with `args` for the unikernel (virtio: `kiln run -t virtio` on QEMU's
/// microvm).
fn serve_command(
    ns: &Netns,
    target: &str,
    image: &Path,
    devices: &[String],
    args: &[String],
) -> Command {
    match target {
        "unix" => {
            let mut cmd = ns.command(image);
            cmd.args(devices).args(args);
            cmd
        }
        "virtio" => {
            let mut cmd = ns.command(env!("CARGO_BIN_EXE_kiln"));
            cmd.env("KILN_TARGET_DIR", common::shared_target_dir())
                .env("NO_COLOR", "1")
                .args(["run", "-t", "virtio", "--machine", "microvm"])
                .arg(format!("--image={}", image.display()))
                .arg("--")
                .args(devices)
                .args(args);
            cmd
        }
        tender => {
            let mut cmd = ns.command(image.with_file_name(format!("kiln-{tender}")));
            cmd.args(devices).arg(image).args(args);
            cmd
        }
    }
}

/// wwws on `target` (with `net` on unix) in a namespace, driven by `curl
/// --cacert` and `openssl s_client` with a CA made for the test: every
/// page byte for byte over TLS 1.3 and 1.2, two requests on one connection,
/// ALPN `http/1.1`, TLS 1.2 resumption, the plain-HTTP redirect, a wrong
/// SNI (the client refuses the certificate), clients offering only suites
/// the server lacks (a handshake_failure alert), renegotiation refused,
/// 200 connections of garbage, ClientHello headers over garbage and
/// records cut short; then the pages again, the server still up.
fn wwws(test: &str, target: &str, net: &str) {
    let tools_ok = match target {
        "virtio" => {
            if !have("qemu-system-x86_64", "--version") {
                skip(
                    test,
                    "qemu-system-x86_64 is not installed (scripts/test installs qemu-system-x86)",
                );
                return;
            }
            can_run(test, true)
        }
        _ => can_run(test, target == "hvt"),
    };
    if !tools_ok {
        return;
    }
    let image = build("wwws", target, (target == "unix").then_some(net), None);
    let tmp = temp_dir(test);
    let (addr, host_side) = if net == "socket" {
        ("127.0.0.1", None)
    } else {
        ("10.0.0.2", Some("10.0.0.1/24"))
    };
    pki(tmp.path(), &format!("DNS:wwws.test,IP:{addr}"));
    let certs = tar(
        tmp.path(),
        "certs.tar",
        &[("site.pem", "cert.pem"), ("site.key", "key.pem")],
    );
    let ns = Netns::new("tls");
    let mut devices = vec![format!("--block:certs={}", certs.display())];
    let mut args = vec!["--tls-port=443".to_string(), "--port=80".to_string()];
    if let Some(host_side) = host_side {
        ns.add_tap(TAP);
        ns.address(TAP, host_side, None);
        devices.insert(0, format!("--net:service={TAP}"));
        args.insert(0, format!("--ipv4={addr}/24"));
    }
    let mut server = Running::spawn(serve_command(&ns, target, &image, &devices, &args), test);
    server.wait_until(test, Duration::from_secs(60), |log| {
        log.contains("wwws: serving HTTPS on port 443")
    });
    let ca = tmp.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let resolve = format!("wwws.test:443:{addr}");
    let site = files_under(&workspace().join("examples/wwws/htdocs"));
    // The first answer may wait for ARP and the stack's address.
    server.wait_until(test, Duration::from_secs(20), |_| {
        ns_curl(
            &ns,
            &[
                "--cacert",
                ca,
                "--resolve",
                &resolve,
                "-o",
                "/dev/null",
                "--max-time",
                "2",
                "https://wwws.test/",
            ],
        )
        .is_ok()
    });
    let pages = |server: &mut Running| {
        for version in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"]] {
            for (path, want) in &site {
                let url = format!("https://wwws.test/{path}");
                let got = ns_curl(
                    &ns,
                    &[&["--cacert", ca, "--resolve", &resolve], version, &[&url]].concat(),
                )
                .unwrap_or_else(|e| {
                    panic!("{url} over {version:?}: {e}\n--- wwws\n{}", server.log())
                });
                assert!(got == *want, "{url} over {version:?} differs from the file");
            }
        }
    };
    pages(&mut server);

    // Keep-alive: two requests, one connection.
    let url = "https://wwws.test/robots.txt";
    let connects = ns_curl(
        &ns,
        &[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{num_connects} ",
            url,
            url,
        ],
    )
    .unwrap_or_else(|e| panic!("keep-alive: {e}\n--- wwws\n{}", server.log()));
    assert_eq!(text(&connects), "1 0 ", "connections per request");

    // ALPN: http/1.1 out of the client's h2 and http/1.1.
    let out = ns_s_client(&ns, addr, &["-alpn", "h2,http/1.1"], b"");
    assert!(out.contains("ALPN protocol: http/1.1"), "ALPN:\n{out}");

    // TLS 1.2 resumption from the server's session cache.
    let session = tmp.path().join("session");
    let session = session.to_str().unwrap();
    let first = ns_s_client(&ns, addr, &["-tls1_2", "-sess_out", session], b"");
    let second = ns_s_client(&ns, addr, &["-tls1_2", "-sess_in", session], b"");
    assert!(
        first.contains("New, TLSv1.2") && second.contains("Reused, TLSv1.2"),
        "TLS 1.2 session not resumed:\n{first}\n---\n{second}"
    );

    // Plain HTTP: a permanent redirect to HTTPS.
    let redirect = ns_curl(&ns, &["-i", &format!("http://{addr}/robots.txt")]).unwrap();
    let redirect = text(&redirect);
    assert!(
        redirect.starts_with("HTTP/1.1 308")
            && redirect.contains(&format!("Location: https://{addr}/robots.txt\r\n")),
        "{redirect}"
    );

    // A name the certificate lacks: the server answers with the one it has
    // and the client refuses it.
    let out = ns_s_client(
        &ns,
        addr,
        &[
            "-servername",
            "other.test",
            "-verify_hostname",
            "other.test",
            "-CAfile",
            ca,
        ],
        b"",
    );
    assert!(
        out.contains("Verification error: hostname mismatch"),
        "wrong SNI:\n{out}"
    );

    // Only suites the server lacks: a handshake_failure alert.
    for suites in [
        &["-tls1_2", "-cipher", "DHE-RSA-AES128-SHA"][..],
        &["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256"],
    ] {
        let out = ns_s_client(&ns, addr, suites, b"");
        assert!(
            out.contains("alert handshake failure"),
            "{suites:?}:\n{out}"
        );
    }

    // Renegotiation (TLS 1.2) is refused with an alert.
    let out = ns_s_client(&ns, addr, &["-tls1_2"], b"R\n");
    assert!(
        out.contains("RENEGOTIATING") && out.contains("no renegotiation"),
        "renegotiation:\n{out}"
    );

    // Garbage: random bytes, a ClientHello header over random bytes, a
    // record header cut short; bash's /dev/tcp, bounded by timeout.
    let script = format!(
        "for i in $(seq 1 200); do case $((i % 3)) in \
         0) head -c $((RANDOM % 500)) /dev/urandom ;; \
         1) printf '\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xfc\\x03\\x03'; head -c 200 /dev/urandom ;; \
         2) printf '\\x16\\x03\\x03\\x40\\x00' ;; esac > /dev/tcp/{addr}/443 2>/dev/null; done; true"
    );
    let status = ns
        .command("timeout")
        .args(["60", "bash", "-c", &script])
        .status()
        .unwrap();
    assert!(status.success(), "the garbage loop failed: {status}");
    server.assert_running(&format!("wwws on {target} after garbage"));
    pages(&mut server);
    server.assert_running(&format!("wwws on {target}"));
}

#[test]
fn wwws_on_hvt_in_a_namespace() {
    wwws("wwws_on_hvt_in_a_namespace", "hvt", "direct");
}

#[test]
fn wwws_on_spt_in_a_namespace() {
    wwws("wwws_on_spt_in_a_namespace", "spt", "direct");
}

#[test]
fn wwws_direct_on_unix_in_a_namespace() {
    wwws("wwws_direct_on_unix_in_a_namespace", "unix", "direct");
}

#[test]
fn wwws_socket_on_unix_in_a_namespace() {
    wwws("wwws_socket_on_unix_in_a_namespace", "unix", "socket");
}

/// On QEMU's microvm (virtio-net over MMIO, the certificates on a
/// virtio-blk disk).
#[test]
fn wwws_on_virtio_in_a_namespace() {
    wwws("wwws_on_virtio_in_a_namespace", "virtio", "direct");
}

/// dnsmasq's `--cname` options for `long.test`: three CNAMEs of 200-odd
/// bytes each to `chain.test`, an answer over 512 bytes.
fn long_chain() -> Vec<String> {
    let long = |c: char| {
        let label: String = std::iter::repeat_n(c, 63).collect();
        format!("{label}.{label}.{label}.test")
    };
    let chain = [
        "long.test".to_string(),
        long('a'),
        long('b'),
        long('c'),
        "chain.test".to_string(),
    ];
    chain
        .windows(2)
        .map(|w| format!("--cname={},{}", w[0], w[1]))
        .collect()
}

/// fetch on `target` against nginx with a CA made for the test, in a
/// namespace where dnsmasq answers `site.test`: success (status and
/// SHA-256 of the body), a name whose answer comes over TCP only, a name
/// whose first address refuses (fetch goes on to the second), a short name
/// found through the search domains (DHCP's on hvt), wrong CA, expired certificate, wrong
/// name, NXDOMAIN, a name whose only address refuses. On hvt, fetch takes
/// its address and its DNS server from dnsmasq's DHCP; on unix (host
/// sockets) it is given `--dns`.
fn fetch(test: &str, target: &str) {
    if !can_run(test, target == "hvt") {
        return;
    }
    let image = build(
        "fetch",
        target,
        (target == "unix").then_some("socket"),
        None,
    );
    let tmp = temp_dir(test);
    let dir = tmp.path();
    pki(dir, "DNS:site.test,DNS:long.test,DNS:two.test,DNS:site");
    let cas = tar(
        dir,
        "cas.tar",
        &[("ca.pem", "ca.pem"), ("other.pem", "other.pem")],
    );
    let root = workspace().join("examples/wwws/htdocs");
    let d = dir.display();
    let ns = Netns::new("fetch");
    let server_addr = if target == "unix" {
        "127.0.0.1"
    } else {
        ns.add_tap(TAP);
        ns.address(TAP, "10.0.0.1/24", None);
        "10.0.0.1"
    };
    // An address of the namespace where nothing listens: connections to it
    // are refused. Link-local, so fetch's order (RFC 6724: the smaller
    // scope first) tries it before the server's.
    ns.ip(&[
        "addr",
        "add",
        REFUSING,
        "dev",
        if target == "unix" { "lo" } else { TAP },
    ]);
    let server = |port: u16, leaf: &str| {
        format!(
            "server {{ listen {server_addr}:{port} ssl; ssl_certificate {d}/{leaf}.pem; ssl_certificate_key {d}/{leaf}.key; root {}; }}\n",
            root.display()
        )
    };
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx.err;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3; uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;\n{}{}{}}}\n",
            server(8443, "site"),
            server(8444, "expired"),
            server(8445, "wrong"),
        ),
    )
    .unwrap();
    let mut nginx = ns.command("nginx");
    nginx.arg("-c").arg(dir.join("nginx.conf"));
    let mut nginx = Running::spawn(nginx, "nginx");
    let mut dns = ns.command("dnsmasq");
    dns.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--user=root",
        "--group=root",
        "--log-facility=-",
    ])
    .arg(format!("--address=/site.test/{server_addr}"))
    .arg("--address=/missing.test/")
    // long.test: a chain of CNAMEs too long for a UDP reply, so dnsmasq
    // truncates it and fetch asks again over TCP.
    .args(long_chain())
    .arg(format!("--host-record=chain.test,{server_addr}"))
    .arg(format!("--host-record=two.test,{server_addr}"))
    .arg(format!("--host-record=two.test,{REFUSING}"))
    .arg(format!("--host-record=refused.test,{REFUSING}"))
    .arg(format!("--pid-file={d}/dnsmasq.pid"));
    if target == "unix" {
        dns.args(["--port=5353", "--listen-address=127.0.0.1"]);
    } else {
        // DNS on port 53 of the tap's address, which DHCP hands out.
        dns.args([
            "--port=53",
            "--dhcp-authoritative",
            "--dhcp-range=10.0.0.100,10.0.0.150,255.255.255.0,1h",
            "--dhcp-option=option:domain-search,nope.test,test",
        ])
        .arg(format!("--interface={TAP}"))
        .arg(format!("--dhcp-leasefile={d}/leases"));
    }
    let _dns = Running::spawn(dns, "dnsmasq");
    nginx.wait_until("nginx", Duration::from_secs(10), |_| {
        ns_curl(
            &ns,
            &[
                "-k",
                "-o",
                "/dev/null",
                &format!("https://{server_addr}:8443/"),
            ],
        )
        .is_ok()
    });
    let fetch = |url: &str, extra: &[&str]| {
        let mut cmd = match target {
            "unix" => {
                let mut cmd = ns.command(&image);
                cmd.arg("--dns=127.0.0.1:5353");
                cmd
            }
            tender => {
                let mut cmd = ns.command(image.with_file_name(format!("kiln-{tender}")));
                cmd.arg(format!("--net:service={TAP}"));
                cmd.arg(format!("--block:cas={}", cas.display()));
                cmd.arg(&image);
                cmd
            }
        };
        if target == "unix" {
            cmd.arg(format!("--block:cas={}", cas.display()));
        }
        let out = cmd
            .arg(format!("--url={url}"))
            .args(extra)
            .output()
            .expect("run fetch");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let big = std::fs::read(root.join("big.txt")).unwrap();
    let want = stdout_of(Command::new("sha256sum").arg(root.join("big.txt"))).unwrap();
    let want = text(&want);
    let want = want.split_whitespace().next().unwrap();
    let (code, stdout, stderr) = fetch("https://site.test:8443/big.txt", &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("status: 200")
            && stdout.contains(&format!("sha256: {want}"))
            && stdout.contains(&format!("bytes: {}", big.len())),
        "{stdout}"
    );
    // long.test's answer is truncated over UDP and comes whole over TCP.
    let (code, stdout, stderr) = fetch("https://long.test:8443/big.txt", &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("sha256: {want}")), "{stdout}");
    // two.test: the first address tried refuses, the second serves.
    let (code, stdout, stderr) =
        fetch("https://two.test:8443/big.txt", &["--log=info,fetch=debug"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("sha256: {want}")), "{stdout}");
    let log = format!("{stdout}{stderr}");
    assert!(
        log.contains("cannot connect to 169.254.0.3:8443: connection refused"),
        "{log}"
    );
    // `site` is found as site.test, in the second search domain (given on
    // unix, from DHCP's Domain Search option on hvt).
    let search: &[&str] = if target == "unix" {
        &["--dns-search=nope.test,test"]
    } else {
        &[]
    };
    let (code, stdout, stderr) = fetch("https://site:8443/big.txt", search);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("sha256: {want}")), "{stdout}");
    for (what, url, extra, expect) in [
        (
            "wrong CA",
            "https://site.test:8443/",
            &["--ca=other.pem"][..],
            "UnknownIssuer",
        ),
        ("expired", "https://site.test:8444/", &[], "Expired"),
        (
            "wrong name",
            "https://site.test:8445/",
            &[],
            "NotValidForName",
        ),
        (
            "NXDOMAIN",
            "https://missing.test:8443/",
            &[],
            "does not exist",
        ),
        (
            "only a refusing address",
            "https://refused.test:8443/",
            &[],
            "cannot connect to refused.test: 169.254.0.3:8443 (connection refused)",
        ),
    ] {
        let (code, stdout, stderr) = fetch(url, extra);
        let log = format!("{stdout}{stderr}");
        assert_eq!(code, Some(1), "{what}: {log}");
        assert!(log.contains(expect), "{what}: {log}");
        assert!(!stdout.contains("status:"), "{what}: {stdout}");
    }
    nginx.assert_running("nginx");
}

#[test]
fn fetch_on_hvt_against_nginx_with_dns_from_dhcp() {
    fetch("fetch_on_hvt_against_nginx_with_dns_from_dhcp", "hvt");
}

#[test]
fn fetch_on_unix_against_nginx() {
    fetch("fetch_on_unix_against_nginx", "unix");
}

/// A unikernel that prints the first 32 bytes of its random device and the
/// chi-squared statistic (times 4096) of the byte counts of 1 MiB.
const RNG_TOML: &str = r#"[unikernel]
name = "rng"
entry = "start"

[devices.random]
type = "random"

[devices.console]
type = "console"
"#;

const RNG_RS: &str = r#"#![no_std]
extern crate alloc;
use kiln_devices::{Console, Random};

pub async fn start(random: impl Random, console: impl Console) -> Result<(), kiln_devices::RandomError> {
    let mut first = [0u8; 32];
    random.fill(&mut first)?;
    let mut hex = alloc::string::String::new();
    for b in first {
        let _ = core::fmt::Write::write_fmt(&mut hex, format_args!("{b:02x}"));
    }
    let mut counts = [0u64; 256];
    let mut buf = alloc::vec![0u8; 1 << 20];
    random.fill(&mut buf)?;
    buf.iter().for_each(|&b| counts[usize::from(b)] += 1);
    // Expected 4096 per value: sum((c - 4096)^2) / 4096, in integers.
    let chi2: u64 = counts.iter().map(|&c| c.abs_diff(4096).pow(2)).sum::<u64>() / 4096;
    let _ = console.logf(format_args!("first: {hex}"));
    let _ = console.logf(format_args!("chi2: {chi2}"));
    Ok(())
}
"#;

fn random_device(target: &str) {
    let test = format!("random_device_on_{target}");
    if target == "hvt" && !kvm_or_skip(&test) {
        return;
    }
    let dir = build_root().join(format!("rng-{target}"));
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let devices = workspace().join("crates/kiln-devices");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"rng\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\nkiln-devices = {{ path = {:?} }}\n\n[workspace]\n",
            devices.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("unikernel.toml"), RNG_TOML).unwrap();
    std::fs::write(dir.join("src/lib.rs"), RNG_RS).unwrap();
    let image = build("rng", target, None, Some(&dir));
    let boot = || {
        let out = match target {
            "unix" => Command::new(&image).output(),
            tender => Command::new(image.with_file_name(format!("kiln-{tender}")))
                .arg(&image)
                .output(),
        }
        .expect("run rng");
        let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{log}");
        let field = |name: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {log}"))
                .trim()
                .to_string()
        };
        (field("first:"), field("chi2:").parse::<u64>().unwrap())
    };
    let (first_a, chi2_a) = boot();
    let (first_b, chi2_b) = boot();
    assert_eq!(first_a.len(), 64);
    assert_ne!(first_a, first_b, "two boots began with the same bytes");
    // 255 degrees of freedom: 347 is the 0.9999 quantile.
    for chi2 in [chi2_a, chi2_b] {
        assert!(chi2 < 347, "chi-squared {chi2} on {target}");
    }
}

#[test]
fn random_device_on_unix() {
    random_device("unix");
}

#[test]
fn random_device_on_hvt() {
    random_device("hvt");
}

#[test]
fn random_device_on_spt() {
    random_device("spt");
}

/// TLS libraries share the random device and the wall clock across
/// threads: those two device types may be bounded by `Send` and `Sync`
/// too, and no other bound is accepted on them.
#[test]
fn random_and_wall_clock_parameters_may_be_send_and_sync() {
    let toml = "[unikernel]\nname = \"t\"\nentry = \"start\"\n\n\
                [devices.random]\ntype = \"random\"\n\n\
                [devices.wall_clock]\ntype = \"wall_clock\"\n";
    let configure = |params: &str| {
        let tmp = temp_dir("bounds");
        let lib =
            format!("#![no_std]\nuse kiln_devices::*;\n\npub async fn start({params}) {{}}\n");
        write_unikernel(tmp.path(), toml, &lib);
        let out = kiln()
            .arg("configure")
            .arg(tmp.path())
            .output()
            .expect("run kiln");
        (out.status.code(), text(&out.stderr))
    };
    let (code, stderr) = configure(
        "random: impl Random + Send + Sync + 'static, wall_clock: impl WallClock + core::marker::Send",
    );
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = configure("random: impl Random + Clone, wall_clock: impl WallClock");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("asks for `Random + Clone`"), "{stderr}");
}
