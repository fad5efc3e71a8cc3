//! tls: HTTPS over kept-alive connections (wrk requests/s) and new TLS
//! 1.3 handshakes per second (`openssl s_time -new`, no resumption)
//! against examples/wwws on each target, beside nginx with the same
//! ECDSA P-256 certificate and the same cipher suite, inside one network
//! namespace. Each target's loads alternate with nginx's, so that every
//! ratio compares loads of the same moment of a noisy machine.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Prepared, progress, runnable};
use crate::error::{BenchError, tail};
use crate::exec::{self, Context, Service, argv};
use crate::netns::{self, GUEST_V4, HOST_V4, Netns, PREFIX};
use crate::report::{Baseline, Row, Status, Summary};
use crate::setup::{Built, Env, Variant};

const SECTION: &str = "tls";
/// nginx's HTTPS port (every address of the namespace).
const NGINX_PORT: u16 = 8443;
/// wwws's HTTPS port with the host stack (loopback of the namespace).
const SOCKET_PORT: u16 = 8444;
/// How long a server may take to answer its first request.
const READY: Duration = Duration::from_secs(30);
/// The page every load asks for (24 bytes).
const PAGE: &str = "robots.txt";
/// The targets wwws is built for in a full run; a quick one builds unix
/// (host sockets) only.
pub const VARIANTS: [Variant; 4] = [
    Variant::Unix,
    Variant::UnixDirect,
    Variant::Spt,
    Variant::Hvt,
];
/// See [`VARIANTS`].
pub const QUICK_VARIANTS: [Variant; 1] = [Variant::Unix];

/// The TLS 1.3 suites measured: ChaCha20-Poly1305 (what wwws prefers in
/// freestanding images, which have no AES-NI) and AES-128-GCM (full runs).
const SUITES: [&str; 2] = ["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"];

const KEEPALIVE: &str = "HTTPS kept-alive requests/s";
const HANDSHAKES: &str = "new TLS 1.3 handshakes/s";

/// How much the section measures.
struct Plan {
    suites: &'static [&'static str],
    rounds: usize,
    secs: u32,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                suites: &SUITES[..1],
                rounds: 1,
                secs: 2,
            }
        } else {
            Plan {
                suites: &SUITES,
                rounds: 3,
                secs: 5,
            }
        }
    }
}

/// The files the servers share: the certificate and key (PEM), the tar
/// image wwws reads them from, and one OpenSSL configuration per suite
/// that makes wrk offer only that suite.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
    fn tar(&self) -> PathBuf {
        self.dir.join("certs.tar")
    }
    fn openssl_conf(&self, suite: &str) -> PathBuf {
        self.dir.join(format!("openssl-{suite}.cnf"))
    }

    fn make(env: &Env) -> Result<Pki, BenchError> {
        let dir = env.work.join("tls");
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("create", &dir, e))?;
        let pki = Pki { dir };
        let san = format!("subjectAltName=DNS:wwws.test,IP:{GUEST_V4},IP:{HOST_V4},IP:127.0.0.1");
        let (cert, key) = (pki.cert(), pki.key());
        let a = argv([
            OsStr::new("openssl"),
            OsStr::new("req"),
            OsStr::new("-x509"),
            OsStr::new("-newkey"),
            OsStr::new("ec"),
            OsStr::new("-pkeyopt"),
            OsStr::new("ec_paramgen_curve:P-256"),
            OsStr::new("-nodes"),
            OsStr::new("-days"),
            OsStr::new("30"),
            OsStr::new("-subj"),
            OsStr::new("/CN=wwws.test"),
            OsStr::new("-addext"),
            OsStr::new(&san),
            OsStr::new("-keyout"),
            key.as_os_str(),
            OsStr::new("-out"),
            cert.as_os_str(),
        ]);
        exec::run_ok(&a, Context::default(), Duration::from_secs(30))?;
        let tar = pki.tar();
        let a = argv([
            OsStr::new("tar"),
            OsStr::new("--format=ustar"),
            OsStr::new("-C"),
            pki.dir.as_os_str(),
            OsStr::new("-cf"),
            tar.as_os_str(),
            OsStr::new("cert.pem"),
            OsStr::new("key.pem"),
        ]);
        exec::run_ok(&a, Context::default(), Duration::from_secs(30))?;
        for suite in SUITES {
            let conf = pki.openssl_conf(suite);
            let text = format!(
                "openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = tls\n\
                 [tls]\nMinProtocol = TLSv1.3\nCiphersuites = {suite}\n"
            );
            std::fs::write(&conf, text).map_err(|e| BenchError::io("write", &conf, e))?;
        }
        Ok(pki)
    }
}

/// nginx's configuration: HTTPS only, TLS 1.3, one process, no session
/// cache or tickets (every handshake is a full one, as wwws's are for
/// s_time), the same keep-alive bound as the network section's.
fn nginx_conf(prefix: &Path, root: &Path, pki: &Pki) -> String {
    let plain = netns::nginx_conf(prefix, root, NGINX_PORT);
    let tls = format!(
        "listen {NGINX_PORT} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n\
         \x20   ssl_protocols TLSv1.3;\n    ssl_session_cache off;\n    ssl_session_tickets off;\n",
        pki.cert().display(),
        pki.key().display()
    );
    plain.replace(&format!("listen {NGINX_PORT};\n"), &tls)
}

/// Waits until `https://ADDR/PAGE` answers 200 (certificate not checked)
/// or `service` exits, for at most `limit`.
fn wait_https(
    ns: &Netns,
    service: &mut Service,
    addr: &str,
    limit: Duration,
) -> Result<(), BenchError> {
    let start = Instant::now();
    let url = format!("https://{addr}/{PAGE}");
    loop {
        if let Some(status) = service.exited() {
            return Err(service.died(status));
        }
        let curl = ns.wrap(&argv([
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
            &url,
        ]));
        if let Ok(f) = exec::run(&curl, Context::default(), Duration::from_secs(5))
            && f.stdout.trim() == "200"
        {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(BenchError::Setup(format!(
                "{url} did not answer within {} s",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running server and the `HOST:PORT` to load.
struct Server {
    /// The process, killed when the server is dropped.
    _service: Service,
    addr: String,
}

fn start_nginx(p: &Prepared, ns: &Netns, pki: &Pki) -> Result<Server, BenchError> {
    let prefix = p.env.work.join("nginx-tls");
    std::fs::create_dir_all(&prefix).map_err(|e| BenchError::io("create", &prefix, e))?;
    let conf = prefix.join("nginx.conf");
    let root = p.env.workspace.join("examples/wwws/htdocs");
    std::fs::write(&conf, nginx_conf(&prefix, &root, pki))
        .map_err(|e| BenchError::io("write", &conf, e))?;
    let a = argv([
        Path::new("nginx"),
        Path::new("-p"),
        prefix.as_path(),
        Path::new("-c"),
        conf.as_path(),
    ]);
    let mut service = ns.start(&a, &prefix.join("nginx.log"))?;
    // Loaded over the tap's host address, as the guests are over theirs.
    let addr = format!("{HOST_V4}:{NGINX_PORT}");
    wait_https(ns, &mut service, &addr, READY)?;
    Ok(Server {
        _service: service,
        addr,
    })
}

fn start_wwws(p: &Prepared, ns: &Netns, built: &Built, pki: &Pki) -> Result<Server, BenchError> {
    let certs = format!("--block:certs={}", pki.tar().display());
    let (args, tap, addr) = if built.variant.tap() {
        (
            vec![
                certs,
                format!("--ipv4={GUEST_V4}/{PREFIX}"),
                "--tls-port=443".into(),
            ],
            Some(netns::TAP),
            format!("{GUEST_V4}:443"),
        )
    } else {
        (
            vec![certs, format!("--tls-port={SOCKET_PORT}")],
            None,
            format!("127.0.0.1:{SOCKET_PORT}"),
        )
    };
    // Under a tender the block device is the tender's argument.
    let argv = if built.variant.tendered() {
        let mut a = built.argv(None, tap, &args[1..]);
        let image = a
            .iter()
            .position(|w| w == OsStr::new("--"))
            .unwrap_or(a.len());
        a.insert(image, args[0].clone().into());
        a
    } else {
        built.argv(None, tap, &args)
    };
    let log = p
        .env
        .work
        .join(format!("wwws-{}.log", built.variant.name()));
    let mut service = ns.start(&argv, &log)?;
    wait_https(ns, &mut service, &addr, READY)?;
    Ok(Server {
        _service: service,
        addr,
    })
}

/// wrk's requests/s over 8 kept-alive connections to `addr` for `secs`,
/// offering only `suite`.
fn keepalive(ns: &Netns, pki: &Pki, addr: &str, suite: &str, secs: u32) -> Result<f64, BenchError> {
    let url = format!("https://{addr}/{PAGE}");
    let a = ns.wrap(&argv([
        "wrk",
        "-t1",
        "-c8",
        &format!("-d{secs}s"),
        "--timeout",
        "5s",
        "--latency",
        &url,
    ]));
    let conf = pki.openssl_conf(suite);
    let env = [("OPENSSL_CONF", Some(conf.as_os_str()))];
    let f = exec::run_ok(
        &a,
        Context {
            dir: None,
            env: &env,
        },
        Duration::from_secs(u64::from(secs) + 30),
    )?;
    super::network::parse_wrk(&f.stdout, secs).map(|w| w.rps)
}

/// New TLS 1.3 handshakes per second (no resumption, one at a time) with
/// `openssl s_time -new` for `secs`, offering only `suite`.
fn handshakes(ns: &Netns, addr: &str, suite: &str, secs: u32) -> Result<f64, BenchError> {
    let a = ns.wrap(&argv([
        "openssl",
        "s_time",
        "-connect",
        addr,
        "-new",
        "-time",
        &secs.to_string(),
        "-ciphersuites",
        suite,
    ]));
    let f = exec::run_ok(
        &a,
        Context::default(),
        Duration::from_secs(u64::from(secs) + 30),
    )?;
    parse_s_time(&f.stdout).ok_or_else(|| BenchError::Parse {
        what: "the connections in real seconds",
        program: "openssl s_time",
        output: tail(&f.stdout, 400),
    })
}

/// Handshakes per real second from s_time's `N connections in S real
/// seconds, ...` line.
fn parse_s_time(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("real seconds"))?;
    let mut words = line.split_whitespace();
    let n: f64 = words.next()?.parse().ok()?;
    let secs: f64 = words.nth(2)?.parse().ok()?;
    (n > 0.0 && secs > 0.0).then_some(n / secs)
}

/// One figure of a target and of nginx, measured alternately.
struct Pair {
    target: Vec<f64>,
    nginx: Vec<f64>,
}

/// `rounds` times: `measure(nginx)`, then `measure(target)`.
fn alternate(
    rounds: usize,
    nginx: &str,
    target: &str,
    mut measure: impl FnMut(&str) -> Result<f64, BenchError>,
) -> Result<Pair, String> {
    let mut pair = Pair {
        target: Vec::new(),
        nginx: Vec::new(),
    };
    for _ in 0..rounds {
        pair.nginx
            .push(measure(nginx).map_err(|e| format!("nginx: {e}"))?);
        pair.target
            .push(measure(target).map_err(|e| e.to_string())?);
    }
    Ok(pair)
}

/// The row of a target's figure against nginx's from the same rounds.
fn row(name: &str, target: &str, unit: &'static str, r: Result<Pair, String>) -> Row {
    match r {
        Ok(pair) => {
            Row::samples(SECTION, name, target, &pair.target, unit).against(Some(Baseline {
                name: "nginx (same rounds)".into(),
                value: Summary::of(&pair.nginx).median,
            }))
        }
        Err(e) => Row::missing(SECTION, name, target, unit, Status::Failed(e)),
    }
}

fn names(suite: &str) -> [String; 2] {
    [
        format!("{KEEPALIVE}, {suite}"),
        format!("{HANDSHAKES}, {suite}"),
    ]
}

/// Runs the tls section.
pub fn run(p: &Prepared) -> Vec<Row> {
    progress("tls: HTTPS kept-alive and handshakes in a network namespace");
    let plan = Plan::new(p.counts.quick);
    let mut rows = Vec::new();
    let all_missing = |rows: &mut Vec<Row>, status: Status| {
        for (variant, _) in &p.wwws {
            for suite in plan.suites {
                for (name, unit) in names(suite).iter().zip(["req/s", "handshakes/s"]) {
                    rows.push(Row::missing(
                        SECTION,
                        name,
                        variant.name(),
                        unit,
                        status.clone(),
                    ));
                }
            }
        }
    };
    if let Some(why) = netns::root_missing() {
        all_missing(&mut rows, Status::NotAvailable(why));
        return rows;
    }
    let setup = Pki::make(&p.env).and_then(|pki| {
        let ns = Netns::create()?;
        let nginx = start_nginx(p, &ns, &pki)?;
        Ok((pki, ns, nginx))
    });
    let (pki, ns, nginx) = match setup {
        Ok(s) => s,
        Err(e) => {
            all_missing(&mut rows, Status::Failed(format!("setup: {e}")));
            return rows;
        }
    };
    for (variant, a) in &p.wwws {
        let target = variant.name();
        let server = runnable(a, SECTION, "wwws", *variant, "—")
            .map_err(|row| match row.status {
                Status::NotAvailable(why) => Status::NotAvailable(why),
                Status::Failed(why) | Status::Skipped(why) => Status::Failed(why),
                Status::Ok => Status::Failed("no image".into()),
            })
            .and_then(|built| {
                progress(&format!("tls: wwws on {target}"));
                start_wwws(p, &ns, built, &pki).map_err(|e| Status::Failed(e.to_string()))
            });
        for suite in plan.suites {
            let [ka, hs] = names(suite);
            match &server {
                Ok(s) => {
                    let r = alternate(plan.rounds, &nginx.addr, &s.addr, |addr| {
                        keepalive(&ns, &pki, addr, suite, plan.secs)
                    });
                    rows.push(row(&ka, target, "req/s", r));
                    let r = alternate(plan.rounds, &nginx.addr, &s.addr, |addr| {
                        handshakes(&ns, addr, suite, plan.secs)
                    });
                    rows.push(row(&hs, target, "handshakes/s", r));
                }
                Err(status) => {
                    for (name, unit) in [(ka, "req/s"), (hs, "handshakes/s")] {
                        rows.push(Row::missing(SECTION, &name, target, unit, status.clone()));
                    }
                }
            }
        }
        drop(server);
    }
    drop(nginx);
    drop(ns);
    rows
}

/// What the quick run leaves out, as rows (a full run measures them).
pub fn skipped_in_quick() -> Vec<Row> {
    let mut rows = Vec::new();
    for variant in VARIANTS.iter().filter(|v| !QUICK_VARIANTS.contains(v)) {
        for suite in SUITES {
            for (name, unit) in names(suite).iter().zip(["req/s", "handshakes/s"]) {
                rows.push(Row::missing(
                    SECTION,
                    name,
                    variant.name(),
                    unit,
                    Status::Skipped("--quick builds wwws for unix only".into()),
                ));
            }
        }
    }
    for suite in &SUITES[1..] {
        for (name, unit) in names(suite).iter().zip(["req/s", "handshakes/s"]) {
            rows.push(Row::missing(
                SECTION,
                name,
                "unix",
                unit,
                Status::Skipped("--quick measures one suite".into()),
            ));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s_time() {
        let out = "Collecting connection statistics for 2 seconds\n\
                   ****\n\n\
                   1466 connections in 1.03s; 1423.30 connections/user sec, bytes read 0\n\
                   1466 connections in 3 real seconds, 0 bytes read per connection\n";
        assert_eq!(parse_s_time(out), Some(1466.0 / 3.0));
        assert_eq!(parse_s_time("0 connections in 3 real seconds\n"), None);
        assert_eq!(parse_s_time("nothing\n"), None);
    }

    #[test]
    fn nginx_serves_tls_only_on_its_port() {
        let pki = Pki {
            dir: PathBuf::from("/w/tls"),
        };
        let conf = nginx_conf(Path::new("/w/nginx-tls"), Path::new("/htdocs"), &pki);
        assert!(conf.contains("listen 8443 ssl;"));
        assert!(conf.contains("ssl_certificate /w/tls/cert.pem;"));
        assert!(conf.contains("ssl_session_tickets off;"));
        assert!(!conf.contains("listen 8443;"));
    }
}
