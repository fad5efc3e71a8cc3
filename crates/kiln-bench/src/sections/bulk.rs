//! bulk: TCP throughput each way, measured by Debian's `iperf3 -c` against
//! examples/bulk (an iperf3 server) on each target with kiln's own stack
//! (virtio: QEMU microvm with KVM, as `kiln run -t virtio` starts it; not
//! with `--quick`), beside the host kernel's TCP over a veth pair to a
//! second namespace, in the same run (docs/bulk.md).

use std::time::{Duration, Instant};

use super::{Prepared, progress, runnable};
use crate::error::BenchError;
use crate::exec::{self, Context, Service, argv};
use crate::netns::{self, GUEST_V4, Netns, PREFIX, TAP};
use crate::report::{Baseline, Row, Status};
use crate::setup::Variant;

const SECTION: &str = "bulk";
/// The targets bulk is built for: all in a full run; unix-direct alone with
/// `--quick`, where each more image costs about 15 s of building on two
/// cores.
pub fn variants(quick: bool) -> &'static [Variant] {
    if quick {
        &[Variant::UnixDirect]
    } else {
        &[Variant::UnixDirect, Variant::Spt, Variant::Hvt]
    }
}
/// The kernel baseline's peer namespace and veth addresses.
const PEER_V4: &str = "10.83.0.2";
const LOCAL_V4: &str = "10.83.0.1";
/// The two directions: iperf3 sends (to the server), or with `-R`
/// receives.
const DIRECTIONS: [(&str, bool); 2] = [
    ("iperf3 to the server", false),
    ("iperf3 from the server (-R)", true),
];
/// How long a server may take to accept its first connection.
const READY: Duration = Duration::from_secs(15);

/// Seconds per iperf3 test and tests per figure.
fn plan(quick: bool) -> (u32, usize) {
    if quick { (1, 1) } else { (5, 3) }
}

/// A second namespace joined to the bench's by a veth pair, with an iperf3
/// server; deleted on drop.
struct Peer {
    name: String,
    server: Option<Service>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.server = None;
        let a = argv(["ip", "netns", "del", self.name.as_str()]);
        let _ = exec::run(&a, Context::default(), Duration::from_secs(20));
    }
}

fn ip(args: &[&str]) -> Result<(), BenchError> {
    let mut a = argv(["ip"]);
    a.extend(argv(args));
    exec::run_ok(&a, Context::default(), Duration::from_secs(20)).map(|_| ())
}

fn peer(p: &Prepared, ns: &Netns) -> Result<Peer, BenchError> {
    let name = format!("kiln-bench-peer-{}", std::process::id());
    ip(&["netns", "add", &name])?;
    let mut peer = Peer { name, server: None };
    let n = peer.name.clone();
    ip(&["-n", &n, "link", "set", "lo", "up"])?;
    let wrap = |args: &[&str]| {
        let mut a = ns.wrap(&argv(["ip"]));
        a.extend(argv(args));
        exec::run_ok(&a, Context::default(), Duration::from_secs(20)).map(|_| ())
    };
    wrap(&[
        "link", "add", "kbveth0", "type", "veth", "peer", "name", "kbveth1", "netns", &n,
    ])?;
    wrap(&["addr", "add", &format!("{LOCAL_V4}/24"), "dev", "kbveth0"])?;
    wrap(&["link", "set", "kbveth0", "up"])?;
    ip(&[
        "-n",
        &n,
        "addr",
        "add",
        &format!("{PEER_V4}/24"),
        "dev",
        "kbveth1",
    ])?;
    ip(&["-n", &n, "link", "set", "kbveth1", "up"])?;
    let log = p.env.work.join("iperf3-server.log");
    let a = argv(["ip", "netns", "exec", &n, "iperf3", "-s"]);
    peer.server = Some(Service::start(&a, &log)?);
    Ok(peer)
}

/// Waits until `addr`'s port 5201 accepts a connection from inside `ns`.
fn wait_port(ns: &Netns, service: Option<&mut Service>, addr: &str) -> Result<(), BenchError> {
    let start = Instant::now();
    let mut service = service;
    loop {
        if let Some(s) = service.as_deref_mut()
            && let Some(status) = s.exited()
        {
            return Err(s.died(status));
        }
        let probe = ns.wrap(&argv([
            "timeout",
            "1",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{addr}/5201"),
        ]));
        if exec::run_ok(&probe, Context::default(), Duration::from_secs(5)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > READY {
            return Err(BenchError::Setup(format!(
                "{addr}:5201 did not accept within {} s",
                READY.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `iperf3 -c` run from inside `ns`; the receiver's Gbit/s.
fn iperf3(ns: &Netns, addr: &str, secs: u32, reverse: bool) -> Result<f64, BenchError> {
    let mut a = argv(["iperf3", "-c", addr, "-t", &secs.to_string(), "-J"]);
    if reverse {
        a.push("-R".into());
    }
    let f = exec::run(
        &ns.wrap(&a),
        Context::default(),
        Duration::from_secs(u64::from(secs) + 30),
    )?;
    let json: serde_json::Value = serde_json::from_str(&f.stdout)
        .map_err(|e| BenchError::Setup(format!("iperf3's output is not JSON ({e})")))?;
    if let Some(error) = json["error"].as_str() {
        return Err(BenchError::Setup(format!("iperf3: {error}")));
    }
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .filter(|v| *v > 0.0)
        .map(|v| v / 1e9)
        .ok_or_else(|| BenchError::Setup("iperf3 reported no rate".into()))
}

/// `runs` tests each way against `addr`: a row per direction.
fn measure(
    ns: &Netns,
    addr: &str,
    target: &str,
    quick: bool,
    bases: &[Option<Baseline>],
) -> Vec<Row> {
    let (secs, runs) = plan(quick);
    DIRECTIONS
        .iter()
        .zip(bases.iter().cloned().chain(std::iter::repeat(None)))
        .map(|(&(name, reverse), base)| {
            let samples: Result<Vec<f64>, BenchError> =
                (0..runs).map(|_| iperf3(ns, addr, secs, reverse)).collect();
            match samples {
                Ok(s) => Row::samples(SECTION, name, target, &s, "Gbit/s").against(base),
                Err(e) => Row::missing(
                    SECTION,
                    name,
                    target,
                    "Gbit/s",
                    Status::Failed(e.to_string()),
                ),
            }
        })
        .collect()
}

pub fn run(p: &Prepared) -> Vec<Row> {
    progress("bulk: iperf3 against examples/bulk and the kernel over veth");
    let mut rows = Vec::new();
    let all_missing = |rows: &mut Vec<Row>, target: &str, status: Status| {
        for (name, _) in DIRECTIONS {
            rows.push(Row::missing(
                SECTION,
                name,
                target,
                "Gbit/s",
                status.clone(),
            ));
        }
    };
    if let Some(why) = netns::root_missing() {
        all_missing(&mut rows, "-", Status::NotAvailable(why));
        return rows;
    }
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            let why = format!("cannot create a network namespace with a tap: {e}");
            all_missing(&mut rows, "-", Status::Failed(why));
            return rows;
        }
    };
    let kernel = "kernel (veth)";
    let bases: Vec<Option<Baseline>> = match peer(p, &ns) {
        Ok(mut peer) => {
            let ready = wait_port(&ns, peer.server.as_mut(), PEER_V4);
            let new = match ready {
                Ok(()) => measure(&ns, PEER_V4, kernel, p.counts.quick, &[]),
                Err(e) => {
                    all_missing(&mut rows, kernel, Status::Failed(e.to_string()));
                    Vec::new()
                }
            };
            let bases = new
                .iter()
                .map(|r| {
                    matches!(r.status, Status::Ok).then(|| Baseline {
                        name: kernel.into(),
                        value: r.value,
                    })
                })
                .collect();
            rows.extend(new);
            bases
        }
        Err(e) => {
            all_missing(&mut rows, kernel, Status::Failed(e.to_string()));
            Vec::new()
        }
    };
    for (variant, a) in &p.bulk {
        let target = variant.name();
        let built = match runnable(a, SECTION, "bulk", *variant, "Gbit/s") {
            Ok(b) => b,
            Err(row) => {
                all_missing(&mut rows, target, row.status.clone());
                continue;
            }
        };
        progress(&format!("bulk: iperf3 against bulk on {target}"));
        // Each target has a MAC of its own at the same address: the host
        // must not keep sending to the previous one.
        let flush = ns.wrap(&argv(["ip", "neigh", "flush", "dev", TAP]));
        let _ = exec::run(&flush, Context::default(), Duration::from_secs(20));
        let args = [format!("--ipv4={GUEST_V4}/{PREFIX}"), "--no-slaac".into()];
        let log = p.env.work.join(format!("bulk-{target}.log"));
        let service = ns.start(&built.argv(None, Some(TAP), &args), &log);
        match service {
            Ok(mut s) => match wait_port(&ns, Some(&mut s), GUEST_V4) {
                Ok(()) => rows.extend(measure(&ns, GUEST_V4, target, p.counts.quick, &bases)),
                Err(e) => all_missing(&mut rows, target, Status::Failed(e.to_string())),
            },
            Err(e) => all_missing(&mut rows, target, Status::Failed(e.to_string())),
        }
    }
    if !p.counts.quick {
        let target = "virtio";
        match virtio(p, &ns) {
            Ok(mut s) => match wait_port(&ns, Some(&mut s), GUEST_V4) {
                Ok(()) => rows.extend(measure(&ns, GUEST_V4, target, false, &bases)),
                Err(e) => all_missing(&mut rows, target, Status::Failed(e.to_string())),
            },
            Err(status) => all_missing(&mut rows, target, status),
        }
    }
    rows
}

/// bulk.virtio (built here) under QEMU microvm with KVM on the bench's
/// tap; why not, as the rows' status.
fn virtio(p: &Prepared, ns: &Netns) -> Result<Service, Status> {
    if let Some(why) = super::virtio::unavailable() {
        return Err(why);
    }
    progress("bulk: building bulk for virtio");
    let image =
        super::virtio::build(&p.env, "bulk").map_err(|e| Status::Failed(format!("build: {e}")))?;
    progress("bulk: iperf3 against bulk on virtio");
    let flush = ns.wrap(&argv(["ip", "neigh", "flush", "dev", TAP]));
    let _ = exec::run(&flush, Context::default(), Duration::from_secs(20));
    let append = format!("--ipv4={GUEST_V4}/{PREFIX} --no-slaac");
    let log = p.env.work.join("bulk-virtio.log");
    super::virtio::start_on_tap(&p.env, ns, &image, &append, &log).map_err(Status::Failed)
}
