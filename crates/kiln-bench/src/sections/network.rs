//! network: ping flood rate against the unikernel's own stack, and wrk
//! requests/s with p50/p99 latency against www on each target (virtio:
//! QEMU's microvm under KVM, `sections::virtio` starts it), beside the
//! kernel and nginx serving the same files, all inside one network
//! namespace of the command's own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{BIG_FILE, Prepared, progress, runnable};
use crate::error::{BenchError, tail};
use crate::exec::{self, Context, Service, argv};
use crate::netns::{self, GUEST_V4, HOST_V4, Netns, PREFIX};
use crate::report::{Baseline, Row, Status, Summary};
use crate::setup::{Availability, Built, Env};

const SECTION: &str = "network";
/// nginx's port (every address of the namespace).
const NGINX_PORT: u16 = 8081;
/// www's port with the host stack (loopback of the namespace).
const SOCKET_PORT: u16 = 8080;
/// How long a server may take to answer its first request.
const READY: Duration = Duration::from_secs(15);

/// A running server and the URL to load it at.
pub struct Server {
    /// The process (killed on drop).
    pub service: Service,
    /// Where it answers.
    pub url: String,
}

/// Starts nginx serving `root` inside `ns`.
pub fn start_nginx(env: &Env, ns: &Netns, root: &Path) -> Result<Server, BenchError> {
    let prefix = env.work.join("nginx");
    std::fs::create_dir_all(&prefix).map_err(|e| BenchError::io("create", &prefix, e))?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, netns::nginx_conf(&prefix, root, NGINX_PORT))
        .map_err(|e| BenchError::io("write", &conf, e))?;
    let a = argv([
        Path::new("nginx"),
        Path::new("-p"),
        prefix.as_path(),
        Path::new("-c"),
        conf.as_path(),
    ]);
    let mut service = ns.start(&a, &prefix.join("nginx.log"))?;
    let url = format!("http://127.0.0.1:{NGINX_PORT}/");
    ns.wait_http(&mut service, &url, READY)?;
    Ok(Server { service, url })
}

/// The htdocs of www's copy with the 1 MiB file ([`BIG_FILE`] beside
/// www's files), for nginx to serve the same files; www's own htdocs when
/// that copy was not built.
pub fn big_htdocs(p: &Prepared) -> PathBuf {
    match p.www_big.first() {
        Some((_, Availability::Ready(b))) => b
            .image
            .parent()
            .and_then(Path::parent)
            .map_or(p.env.workspace.join("examples/www/htdocs"), |d| {
                d.join("htdocs")
            }),
        _ => p.env.workspace.join("examples/www/htdocs"),
    }
}

/// Starts www as built (with `--mem=MEM` under a tender) inside `ns`.
pub fn start_www(
    env: &Env,
    ns: &Netns,
    built: &Built,
    mem: Option<u32>,
    wait: Duration,
) -> Result<Server, BenchError> {
    start_www_with(env, ns, built, mem, wait, &[])
}

/// [`start_www`] with `extra` arguments for www.
pub fn start_www_with(
    env: &Env,
    ns: &Netns,
    built: &Built,
    mem: Option<u32>,
    wait: Duration,
    extra: &[&str],
) -> Result<Server, BenchError> {
    let (mut args, tap, url) = if built.variant.tap() {
        (
            vec![format!("--ipv4={GUEST_V4}/{PREFIX}"), "--port=80".into()],
            Some(netns::TAP),
            format!("http://{GUEST_V4}/"),
        )
    } else {
        (
            vec![format!("--port={SOCKET_PORT}")],
            None,
            format!("http://127.0.0.1:{SOCKET_PORT}/"),
        )
    };
    args.extend(extra.iter().map(|a| a.to_string()));
    let log = env.work.join(format!("www-{}.log", built.variant.name()));
    let mut service = ns.start(&built.argv(mem, tap, &args), &log)?;
    ns.wait_http(&mut service, &url, wait)?;
    Ok(Server { service, url })
}

/// What wrk measured.
#[derive(Debug)]
pub struct Wrk {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms, or why wrk gave none.
    pub p50: Result<f64, String>,
    /// 99th percentile latency, ms, or why wrk gave none.
    pub p99: Result<f64, String>,
}

/// A wrk latency (`210.00us`, `1.20ms`, `1.00s`) in ms.
fn latency_ms(text: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// Parses wrk's `--latency` report of a `secs`-second load.
pub(super) fn parse_wrk(out: &str, secs: u32) -> Result<Wrk, BenchError> {
    let bad = |what| BenchError::Parse {
        what,
        program: "wrk",
        output: tail(out, 400),
    };
    if out.contains("Non-2xx or 3xx responses") {
        return Err(bad("only 2xx responses"));
    }
    let field = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let requests = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse::<u64>().ok())
        .ok_or_else(|| bad("the request count"))?;
    if requests == 0 {
        let errors = field("Socket errors:").unwrap_or("none reported");
        return Err(BenchError::NoRequest {
            secs,
            errors: errors.into(),
        });
    }
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| bad("Requests/sec"))?;
    // wrk may complete a few slow requests yet record no latency for them
    // (0.00us): the rate stands, the latencies are missing.
    let latency = |pct: &'static str, what: &'static str| {
        let ms = field(pct)
            .and_then(latency_ms)
            .ok_or_else(|| bad(what).to_string())?;
        if ms > 0.0 {
            Ok(ms)
        } else {
            Err(format!(
                "wrk completed {requests} requests but recorded no latency for them"
            ))
        }
    };
    Ok(Wrk {
        rps,
        p50: latency("50%", "the 50% latency"),
        p99: latency("99%", "the 99% latency"),
    })
}

/// Loads `url` with wrk inside `ns` for `secs` seconds; a request that
/// takes longer than `timeout` seconds counts as an error.
pub fn wrk(ns: &Netns, url: &str, secs: u32, timeout: u32) -> Result<Wrk, BenchError> {
    let a = ns.wrap(&argv([
        "wrk",
        "-t1",
        "-c16",
        &format!("-d{secs}s"),
        "--timeout",
        &format!("{timeout}s"),
        "--latency",
        url,
    ]));
    let f = exec::run_ok(
        &a,
        Context::default(),
        Duration::from_secs(u64::from(secs) + u64::from(timeout) + 30),
    )?;
    parse_wrk(&f.stdout, secs)
}

/// How much longer the second load of a slow server lasts.
pub const SLOW_FACTOR: u32 = 4;
/// The request timeout of a first load, seconds.
pub const TIMEOUT_SECS: u32 = 5;

/// Whether a load's result calls for a longer one: no request completed,
/// or no latency recorded. Other failures (errors, non-2xx answers) stand.
fn too_slow(r: &Result<Wrk, BenchError>) -> bool {
    match r {
        Err(BenchError::NoRequest { .. }) => true,
        Ok(w) => w.p50.is_err() || w.p99.is_err(),
        Err(_) => false,
    }
}

/// [`wrk`] for `secs` seconds; when that load completes no request, or
/// wrk records no latency for the requests it completed (a server slower
/// than the load is long), once more for [`SLOW_FACTOR`] times as long
/// with a request timeout as long as the load: bounded in time, and
/// enough for a figure from any server that answers at all.
pub fn wrk_figures(ns: &Netns, url: &str, secs: u32, who: &str) -> Result<Wrk, BenchError> {
    let first = wrk(ns, url, secs, TIMEOUT_SECS);
    if !too_slow(&first) {
        return first;
    }
    let longer = secs * SLOW_FACTOR;
    progress(&format!(
        "network: {who} was too slow for a {secs} s load; once more for {longer} s"
    ));
    wrk(ns, url, longer, longer)
}

/// The ping flood rows: ping and the server wherever the scheduler puts
/// them, and both pinned to one CPU. On a VM a wake-up across CPUs is an
/// interprocessor interrupt through the hypervisor, which makes the
/// unpinned rate depend on where the scheduler happens to place the two.
const PING: &str = "ping -f replies/s";
const PING_PINNED: &str = "ping -f replies/s, ping and server on one CPU";

/// The CPUs this process may run on, as `taskset` takes them (the kernel's
/// `Cpus_allowed_list`, e.g. `0-1`), or `None` if /proc does not say.
fn allowed_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|list| list.trim().to_string())
}

/// The CPU that pinned pings and the server they flood share: the first
/// this process may run on.
fn pin_cpu() -> String {
    allowed_cpus()
        .and_then(|list| {
            let first = list.split([',', '-']).next()?.trim();
            first.parse::<u32>().ok().map(|n| n.to_string())
        })
        .unwrap_or_else(|| "0".into())
}

/// Ping flood of `addr` inside `ns`: replies per second. With `pinned`,
/// ping runs on [`pin_cpu`] (where the caller pinned the server).
fn ping(ns: &Netns, addr: &str, count: u32, secs: u32, pinned: bool) -> Result<f64, BenchError> {
    let (count_arg, secs_arg, cpu) = (count.to_string(), secs.to_string(), pin_cpu());
    let mut words = vec![];
    if pinned {
        words.extend(["taskset", "-c", &cpu]);
    }
    words.extend(["ping", "-f", "-q", "-c", &count_arg, "-w", &secs_arg, addr]);
    let a = ns.wrap(&argv(words));
    let f = exec::run(
        &a,
        Context::default(),
        Duration::from_secs(u64::from(secs) + 10),
    )?;
    let bad = |what| BenchError::Parse {
        what,
        program: "ping",
        output: tail(&format!("{}{}", f.stdout, f.stderr), 400),
    };
    let stats = f
        .stdout
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| bad("the statistics line"))?;
    let mut received = None;
    let mut time_ms = None;
    for part in stats.split(',').map(str::trim) {
        if let Some(n) = part.strip_suffix(" received") {
            received = n.parse::<f64>().ok();
        } else if let Some(t) = part
            .strip_prefix("time ")
            .and_then(|t| t.strip_suffix("ms"))
        {
            time_ms = t.parse::<f64>().ok();
        }
    }
    let received = received
        .filter(|r| *r > 0.0)
        .ok_or_else(|| bad("a count of replies above 0"))?;
    let time_ms = time_ms.ok_or_else(|| bad("the time"))?;
    Ok(received / (time_ms / 1e3))
}

/// The ping flood rows of the server `server` on the tap answering at
/// [`GUEST_V4`] (kiln's own stack under `target`), against the kernel's
/// `bases`: unpinned, then with the server's threads and ping on one CPU.
fn ping_rows(
    ns: &Netns,
    server: &Server,
    target: &str,
    bases: &[Option<Baseline>],
    c: super::Counts,
) -> Vec<Row> {
    [(PING, false), (PING_PINNED, true)]
        .into_iter()
        .zip(bases)
        .map(|((name, pinned), base)| {
            let flood = if pinned {
                // The server's threads on ping's CPU, then back on the
                // CPUs this run may use.
                let r = server
                    .service
                    .pin(&pin_cpu())
                    .and_then(|()| ping(ns, GUEST_V4, c.ping_count, c.ping_secs, true));
                let all = allowed_cpus().unwrap_or_else(|| "0-1023".into());
                r.and_then(|v| server.service.pin(&all).map(|()| v))
            } else {
                ping(ns, GUEST_V4, c.ping_count, c.ping_secs, false)
            };
            match flood {
                Ok(v) => Row::ok(SECTION, name, target, v, "pkt/s").against(base.clone()),
                Err(e) => Row::missing(
                    SECTION,
                    name,
                    target,
                    "pkt/s",
                    Status::Failed(e.to_string()),
                ),
            }
        })
        .collect()
}

/// Rows for the three wrk figures (or one failure per figure).
fn wrk_rows(
    target: &str,
    result: &Result<Wrk, String>,
    base: Option<&Wrk>,
    base_name: &str,
) -> Vec<Row> {
    WRK_FIGURES
        .iter()
        .map(|(name, unit, get)| match result {
            Ok(w) => match get(w) {
                Ok(v) => Row::ok(SECTION, name, target, v, unit).against(
                    base.and_then(|b| get(b).ok()).map(|value| Baseline {
                        name: base_name.into(),
                        value,
                    }),
                ),
                Err(e) => Row::missing(SECTION, name, target, unit, Status::Failed(e)),
            },
            Err(e) => Row::missing(SECTION, name, target, unit, Status::Failed(e.clone())),
        })
        .collect()
}

/// Runs the network section.
pub fn run(p: &Prepared) -> Vec<Row> {
    progress("network: ping flood and wrk in a network namespace");
    let c = p.counts;
    let mut rows = Vec::new();
    if let Some(why) = crate::netns::root_missing() {
        rows.push(Row::missing(
            SECTION,
            "all",
            "-",
            "—",
            Status::NotAvailable(why),
        ));
        return rows;
    }
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            let why = format!("cannot create a network namespace with a tap: {e}");
            rows.push(Row::missing(SECTION, "all", "-", "—", Status::Failed(why)));
            return rows;
        }
    };
    let kernel = "kernel (namespace)";
    let mut ping_bases = Vec::new();
    for (name, pinned) in [(PING, false), (PING_PINNED, true)] {
        let base = ping(&ns, HOST_V4, c.ping_count, c.ping_secs, pinned);
        rows.push(match &base {
            Ok(v) => Row::ok(SECTION, name, kernel, *v, "pkt/s"),
            Err(e) => Row::missing(
                SECTION,
                name,
                kernel,
                "pkt/s",
                Status::Failed(e.to_string()),
            ),
        });
        ping_bases.push(base.ok().map(|value| Baseline {
            name: kernel.into(),
            value,
        }));
    }
    // nginx serves the big copy's htdocs when there is one (www's files
    // and the 1 MiB file).
    let root = big_htdocs(p);
    let nginx_server = start_nginx(&p.env, &ns, &root);
    let nginx = match &nginx_server {
        Ok(s) => wrk_figures(&ns, &s.url, c.wrk_secs, "nginx").map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    rows.extend(wrk_rows("nginx", &nginx, None, ""));
    let nginx = nginx.ok();
    drop(nginx_server);
    for (variant, a) in &p.www {
        let target = variant.name();
        let built = match runnable(a, SECTION, "www", *variant, "—") {
            Ok(b) => b,
            Err(row) => {
                for (name, unit) in FIGURES {
                    rows.push(Row {
                        name: name.into(),
                        unit,
                        ..(*row).clone()
                    });
                }
                continue;
            }
        };
        progress(&format!("network: www on {target}"));
        let server = start_www(&p.env, &ns, built, None, READY);
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                let r = Row::missing(SECTION, "www", target, "—", Status::Failed(e.to_string()));
                rows.push(r);
                continue;
            }
        };
        if variant.tap() {
            rows.extend(ping_rows(&ns, &server, target, &ping_bases, c));
        } else {
            for name in [PING, PING_PINNED] {
                rows.push(Row::missing(
                    SECTION,
                    name,
                    target,
                    "pkt/s",
                    Status::Skipped("the host kernel answers pings for the socket stack".into()),
                ));
            }
        }
        let who = format!("www on {target}");
        let w = wrk_figures(&ns, &server.url, c.wrk_secs, &who).map_err(|e| e.to_string());
        rows.extend(wrk_rows(target, &w, nginx.as_ref(), "nginx"));
        drop(server);
    }
    // virtio: www.virtio under QEMU (microvm, KVM) on the same tap.
    match super::virtio::www_on_tap(p, &ns) {
        Ok(server) => {
            rows.extend(ping_rows(&ns, &server, "virtio", &ping_bases, c));
            let w = wrk_figures(&ns, &server.url, c.wrk_secs, "www on virtio")
                .map_err(|e| e.to_string());
            rows.extend(wrk_rows("virtio", &w, nginx.as_ref(), "nginx"));
        }
        Err(status) => rows.extend(
            FIGURES
                .iter()
                .map(|&(name, unit)| Row::missing(SECTION, name, "virtio", unit, status.clone())),
        ),
    }
    rows.extend(big_rows(p, &ns, &root));
    rows
}

/// Rounds of the 1 MiB load per server in a full run. Every server
/// serves once per round, in turn, so that a change in the machine's
/// load moves rounds, not the ratio of the medians to nginx's.
const BIG_ROUNDS: usize = 3;

/// One server of the 1 MiB rows.
enum BigServer<'a> {
    /// nginx serving this htdocs.
    Nginx(&'a Path),
    /// www on a target with [`BIG_FILE`] in its htdocs.
    Www(&'a Built),
    /// www.virtio with [`BIG_FILE`] under QEMU.
    Virtio(std::path::PathBuf),
}

impl BigServer<'_> {
    /// Starts the server on `ns`, answering at `url` (its root).
    fn start(&self, p: &Prepared, ns: &Netns) -> Result<Server, String> {
        match self {
            BigServer::Nginx(root) => start_nginx(&p.env, ns, root).map_err(|e| e.to_string()),
            BigServer::Www(built) => {
                if built.variant.tap() {
                    super::virtio::forget_neighbours(ns);
                }
                start_www(&p.env, ns, built, None, READY).map_err(|e| e.to_string())
            }
            BigServer::Virtio(image) => super::virtio::start_virtio(&p.env, ns, image),
        }
    }
}

/// A row's status as the text of a failed figure.
fn status_text(status: Status) -> String {
    match status {
        Status::NotAvailable(why) => format!("not available: {why}"),
        Status::Failed(why) | Status::Skipped(why) => why,
        Status::Ok => String::new(),
    }
}

/// The 1 MiB rows (full runs): nginx serving `root` and www on each
/// target serving [`BIG_FILE`], [`BIG_ROUNDS`] rounds of one load each,
/// every server started afresh for each load; each figure is the median
/// of its rounds, against nginx's median.
fn big_rows(p: &Prepared, ns: &Netns, root: &Path) -> Vec<Row> {
    let c = p.counts;
    // A quick run's soak section builds the copies for itself.
    if c.quick || p.www_big.is_empty() {
        let why = if c.quick {
            "--quick loads the 1 MiB file in the soak section only".to_string()
        } else {
            "no www with a 1 MiB file was built".to_string()
        };
        return ["nginx", "unix", "unix-direct", "hvt", "spt", "virtio"]
            .iter()
            .flat_map(|target| {
                WRK_FIGURES.iter().map(|(name, unit, _)| {
                    let name = format!("{name}{BIG_WHAT}");
                    Row::missing(SECTION, &name, target, unit, Status::Skipped(why.clone()))
                })
            })
            .collect();
    }
    let mut servers: Vec<(String, Result<BigServer<'_>, String>)> =
        vec![("nginx".into(), Ok(BigServer::Nginx(root)))];
    for (variant, a) in &p.www_big {
        let server = runnable(a, SECTION, "www", *variant, "—")
            .map(BigServer::Www)
            .map_err(|row| status_text(row.status));
        servers.push((variant.name().into(), server));
    }
    let virtio = super::virtio::www_big_image(p)
        .map(BigServer::Virtio)
        .map_err(status_text);
    servers.push(("virtio".into(), virtio));
    let big_url = |base: &str| format!("{base}{BIG_FILE}");
    // Per server: its loads so far, or why it has no figure.
    let mut runs: Vec<Result<Vec<Wrk>, String>> = servers
        .iter()
        .map(|(_, s)| s.as_ref().map(|_| Vec::new()).map_err(Clone::clone))
        .collect();
    for round in 1..=BIG_ROUNDS {
        for ((target, server), done) in servers.iter().zip(runs.iter_mut()) {
            let (Ok(server), Ok(loads)) = (server, done.as_mut()) else {
                continue;
            };
            progress(&format!(
                "network: the 1 MiB file from {target}, round {round} of {BIG_ROUNDS}"
            ));
            let who = format!("{target} with a 1 MiB file");
            let r = server.start(p, ns).and_then(|s| {
                let r = wrk_figures(ns, &big_url(&s.url), c.wrk_secs, &who);
                drop(s);
                r.map_err(|e| e.to_string())
            });
            match r {
                Ok(w) => loads.push(w),
                Err(e) => *done = Err(format!("round {round}: {e}")),
            }
        }
    }
    let base = runs.first().and_then(|r| r.as_ref().ok());
    servers
        .iter()
        .zip(&runs)
        .flat_map(|((target, _), loads)| {
            let base = if target == "nginx" { None } else { base };
            WRK_FIGURES.iter().map(move |&(name, unit, figure)| {
                let name = format!("{name}{BIG_WHAT}");
                let samples =
                    |loads: &Vec<Wrk>| loads.iter().map(figure).collect::<Result<Vec<_>, _>>();
                match loads.as_ref().map_err(Clone::clone).and_then(samples) {
                    Ok(v) => {
                        let baseline = base.and_then(|b| samples(b).ok()).map(|b| Baseline {
                            name: "nginx".into(),
                            value: Summary::of(&b).median,
                        });
                        Row::samples(SECTION, &name, target, &v, unit).against(baseline)
                    }
                    Err(e) => Row::missing(SECTION, &name, target, unit, Status::Failed(e)),
                }
            })
        })
        .collect()
}

/// A wrk figure: its name, its unit, and where a load has it.
type Figure = (&'static str, &'static str, fn(&Wrk) -> Result<f64, String>);

/// The figures of a wrk load.
const WRK_FIGURES: [Figure; 3] = [
    ("wrk requests/s", "req/s", |w| Ok(w.rps)),
    ("wrk p50 latency", "ms", |w| w.p50.clone()),
    ("wrk p99 latency", "ms", |w| w.p99.clone()),
];

/// The figures of www on each target, with their units.
const FIGURES: [(&str, &str); 5] = [
    (PING, "pkt/s"),
    (PING_PINNED, "pkt/s"),
    ("wrk requests/s", "req/s"),
    ("wrk p50 latency", "ms"),
    ("wrk p99 latency", "ms"),
];

/// The suffix of the bulk case's figures.
const BIG_WHAT: &str = " (1 MiB file)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_wrk_report() {
        let out = "Running 2s test @ http://127.0.0.1:8081/\n  1 threads and 16 connections\n\
                   \x20 Latency Distribution\n     50%  210.00us\n     75%  300.00us\n     90%  1.00ms\n\
                   \x20    99%    1.20ms\n  12345 requests in 2.00s, 5.00MB read\n\
                   Requests/sec:   6172.50\nTransfer/sec:      2.50MB\n";
        let w = parse_wrk(out, 2).unwrap();
        assert_eq!(w.rps, 6172.5);
        assert!((w.p50.unwrap() - 0.21).abs() < 1e-9);
        assert!((w.p99.unwrap() - 1.2).abs() < 1e-9);
        let zero = out.replace("210.00us", "0.00us");
        let w = parse_wrk(&zero, 2).unwrap();
        assert_eq!(w.rps, 6172.5);
        assert!(w.p50.unwrap_err().contains("no latency"));
        assert!(parse_wrk(&format!("{out}Non-2xx or 3xx responses: 3\n"), 2).is_err());
        assert!(parse_wrk("Requests/sec: 5\n", 2).is_err());
        let none = out.replace("12345 requests", "0 requests");
        assert!(
            parse_wrk(&none, 2)
                .unwrap_err()
                .to_string()
                .contains("no request in 2 s")
        );
    }

    #[test]
    fn only_a_slow_server_gets_a_longer_load() {
        let report = |requests: &str, p50: &str| {
            format!(
                "Running 5s test @ http://10.81.0.2/\n  Latency Distribution\n     50%  {p50}\n\
                 \x20    99%    4.60s\n  {requests} requests in 5.00s, 1.00KB read\n\
                 Requests/sec:      2.58\n"
            )
        };
        assert!(!too_slow(&parse_wrk(&report("13", "4.57s"), 5)));
        assert!(too_slow(&parse_wrk(&report("2", "0.00us"), 5)));
        let none =
            report("0", "0.00us") + "  Socket errors: connect 0, read 0, write 0, timeout 16\n";
        let r = parse_wrk(&none, 5);
        assert!(too_slow(&r));
        assert!(r.unwrap_err().to_string().contains("timeout 16"));
        let non_2xx = report("13", "4.57s") + "  Non-2xx or 3xx responses: 13\n";
        assert!(!too_slow(&parse_wrk(&non_2xx, 5)));
    }

    #[test]
    fn reads_latency_units() {
        assert_eq!(latency_ms("2.00s"), Some(2000.0));
        assert_eq!(latency_ms("5.00ms"), Some(5.0));
        assert_eq!(latency_ms("500.00us"), Some(0.5));
        assert_eq!(latency_ms("5.00"), None);
    }
}
