//! Observing a running unikernel end to end: `examples/www` built by `kiln
//! build` with the host-socket stack, run as a process on 127.0.0.1 with
//! `--metrics-path` and `--log`: its boot information and access log on the
//! console, and a `/metrics` page that a strict reader of the text format
//! accepts, with counters that match the requests made. The pages are also
//! read by a parser kiln did not write, the Prometheus Python client's
//! (`prometheus_client.parser`, Debian's `python3-prometheus-client`,
//! installed by scripts/test). With kiln's own stack (`--net direct`), in a
//! network namespace whose firewall drops a segment of www's: the stack's,
//! the runtime's and the platform's counters move with the traffic, the
//! retransmission included.

mod common;
mod support {
    pub mod net;
}

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_testsupport::netns::Netns;
use kiln_testsupport::ports::free_tcp_port;
use kiln_testsupport::prometheus;
use kiln_testsupport::skip::{netns_or_skip, skip};
use support::net::{Net, Running, curl, example_image, request};

/// Reads a page with `prometheus_client.parser.text_string_to_metric_families`
/// and prints each family's type and each sample, one per line, for
/// [`Parsed`]. A page the parser refuses raises, and the script fails.
const PARSE_PY: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print("TYPE", family.name, family.type, sep="\t")
    for s in family.samples:
        labels = ",".join(k + "=" + v for k, v in sorted(s.labels.items()))
        print("SAMPLE", s.name, labels, repr(float(s.value)), sep="\t")
"#;

/// A page as the Prometheus client read it.
#[derive(Debug)]
struct Parsed {
    /// Family name (without `_total` for counters, as the client names
    /// them) to its type.
    types: BTreeMap<String, String>,
    /// (sample name, `k=v,...` sorted) to value.
    samples: BTreeMap<(String, String), f64>,
}

impl Parsed {
    /// The sample `name{labels}`; `labels` as `k=v,...`, sorted.
    fn value(&self, name: &str, labels: &str) -> f64 {
        *self
            .samples
            .get(&(name.to_string(), labels.to_string()))
            .unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in {:#?}", self.samples))
    }
}

/// A Python that has `prometheus_client` (Debian's own `/usr/bin/python3`
/// first: a `python3` earlier on PATH may be another installation).
fn prometheus_python() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import prometheus_client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The Python for `test`, or a loud skip.
fn python_or_skip(test: &str) -> Option<&'static str> {
    let python = prometheus_python();
    if python.is_none() {
        skip(
            test,
            "Python's prometheus_client is not installed (scripts/test installs python3-prometheus-client)",
        );
    }
    python
}

/// `page` read by the Prometheus client: every family typed (a `# TYPE`
/// line it understood), or the parser's error.
fn parse_with_prometheus_client(python: &str, page: &str) -> Result<Parsed, String> {
    let mut child = Command::new(python)
        .args(["-c", PARSE_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{python}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(page.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "prometheus_client refused the page ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut parsed = Parsed {
        types: BTreeMap::new(),
        samples: BTreeMap::new(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.split('\t').collect::<Vec<_>>()[..] {
            ["TYPE", name, kind] => {
                if kind == "unknown" {
                    return Err(format!("family {name} has no type the client understood"));
                }
                parsed.types.insert(name.into(), kind.into());
            }
            ["SAMPLE", name, labels, value] => {
                let value = value
                    .parse()
                    .map_err(|e| format!("{name}: value {value}: {e}"))?;
                if parsed
                    .samples
                    .insert((name.into(), labels.into()), value)
                    .is_some()
                {
                    return Err(format!("sample {name}{{{labels}}} is on the page twice"));
                }
            }
            _ => return Err(format!("unexpected line from the parser script: {line}")),
        }
    }
    if parsed.samples.is_empty() {
        return Err("the page has no samples".into());
    }
    Ok(parsed)
}

/// `www.unix` with `args` on a free port, once it says it serves.
fn start_www(args: &[&str], ready: &str) -> (Running, SocketAddr) {
    let image = example_image("www", Net::Socket);
    let port = free_tcp_port();
    let mut cmd = Command::new(&image);
    cmd.arg(format!("--port={port}")).args(args);
    let mut www = Running::spawn(cmd, "www-observe");
    let ready = ready.replace("PORT", &port.to_string());
    www.wait_until(&ready, Duration::from_secs(10), |log| log.contains(&ready));
    (www, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

#[test]
fn metrics_count_the_requests_and_the_log_shows_them() {
    let (mut www, addr) = start_www(
        &["--metrics-path=/metrics", "--log=info,www::access=debug"],
        "INFO  www: serving on port PORT",
    );
    let log = www.log();
    assert!(log.contains("INFO  kiln: www on unix"), "{log}");
    assert!(log.contains("INFO  www: metrics at /metrics"), "{log}");
    for (path, status) in [
        ("/", 200),
        ("/", 200),
        ("/img/kiln.png", 200),
        ("/nope", 404),
    ] {
        let r = request(addr, "GET", path, "").unwrap();
        assert_eq!(r.status, status, "{path}");
    }
    let r = request(addr, "GET", "/metrics", "").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = String::from_utf8(r.body).unwrap();
    let page = prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n--- the page\n{body}"));
    if let Some(python) = python_or_skip("metrics_count_the_requests_and_the_log_shows_them") {
        let parsed = parse_with_prometheus_client(python, &body)
            .unwrap_or_else(|e| panic!("{e}\n--- the page\n{body}"));
        assert_eq!(parsed.value("www_responses_total", "code=2xx"), 3.0);
        assert_eq!(parsed.value("www_responses_total", "code=4xx"), 1.0);
        assert_eq!(parsed.types["www_request_duration_seconds"], "histogram");
        assert_eq!(parsed.types["kiln_executor_polls"], "counter");
        assert!(parsed.value("kiln_executor_polls_total", "") > 0.0);
        assert!(parsed.value("kiln_exits_total", "call=ppoll") > 0.0);
    }
    let responses = |code| page.value("www_responses_total", &[("code", code)]);
    assert_eq!(responses("2xx"), Some(3.0), "{body}");
    assert_eq!(responses("4xx"), Some(1.0), "{body}");
    assert_eq!(
        page.value("www_request_duration_seconds_count", &[]),
        Some(4.0)
    );
    // A second read counts the first.
    let r = request(addr, "GET", "/metrics", "").unwrap();
    let page = prometheus::parse(std::str::from_utf8(&r.body).unwrap()).unwrap();
    assert_eq!(
        page.value("www_responses_total", &[("code", "2xx")]),
        Some(4.0)
    );
    // The access log, one line per response, at debug.
    www.wait_until("the access log", Duration::from_secs(5), |log| {
        log.contains("DEBUG www::access: GET /metrics 200")
    });
    let log = www.log();
    assert_eq!(
        log.matches("DEBUG www::access: GET / 200").count(),
        2,
        "{log}"
    );
    assert!(log.contains("DEBUG www::access: GET /nope 404"), "{log}");
    www.assert_running("www after the requests");
}

/// The checks above can fail: pages a Prometheus server would refuse or
/// misread are refused.
#[test]
fn malformed_pages_are_refused() {
    let Some(python) = python_or_skip("malformed_pages_are_refused") else {
        return;
    };
    let good = "# HELP a_total A\n# TYPE a_total counter\na_total{x=\"1\"} 3\n";
    let parsed = parse_with_prometheus_client(python, good).unwrap();
    assert_eq!(parsed.value("a_total", "x=1"), 3.0);
    for bad in [
        // A label value without quotes.
        "# TYPE a_total counter\na_total{x=1} 3\n",
        // A value that is not a number.
        "# TYPE a_total counter\na_total 3x\n",
        // No TYPE: the family's type is unknown.
        "a_total 3\n",
        // The same sample twice.
        "# TYPE a_total counter\na_total 3\na_total 4\n",
        // A broken histogram line.
        "# TYPE h histogram\nh_bucket{le=\"1\" 2\n",
    ] {
        assert!(
            parse_with_prometheus_client(python, bad).is_err(),
            "accepted:\n{bad}"
        );
    }
}

#[test]
fn log_levels_filter_and_bad_filters_are_refused() {
    // At warn, nothing of the start is printed; requests still work.
    let (mut www, addr) = start_www(&["--log=warn"], "");
    let r = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            request(addr, "GET", "/", "").ok()
        })
        .expect("www answers");
    assert_eq!(r.status, 200);
    // No metrics page unless asked for.
    assert_eq!(request(addr, "GET", "/metrics", "").unwrap().status, 404);
    assert_eq!(www.log(), "", "nothing logged at warn");
    www.assert_running("www at warn");

    let image = example_image("www", Net::Socket);
    let out = Command::new(&image).arg("--log=loud").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        format!("{stdout}{stderr}").contains("invalid value 'loud' for --log"),
        "{stdout}{stderr}"
    );
}

/// The tap inside the namespace of the direct-stack test.
const TAP: &str = "ko0";

/// `/metrics` of www at 10.0.0.2:8080, from inside `ns`, as the Prometheus
/// client reads it.
fn scrape(ns: &Netns, python: &str) -> Parsed {
    let body = curl(ns.command("curl"), &["http://10.0.0.2:8080/metrics"])
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    let body = String::from_utf8(body).unwrap();
    prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n--- the page\n{body}"));
    parse_with_prometheus_client(python, &body)
        .unwrap_or_else(|e| panic!("{e}\n--- the page\n{body}"))
}

#[test]
fn direct_stack_counters_move_with_traffic_and_count_a_retransmission() {
    let test = "direct_stack_counters_move_with_traffic_and_count_a_retransmission";
    if !netns_or_skip(
        test,
        &[
            ("curl", "--version", "curl"),
            ("iptables", "--version", "iptables"),
        ],
    ) {
        return;
    }
    let Some(python) = python_or_skip(test) else {
        return;
    };
    let image = example_image("www", Net::Direct);
    let ns = Netns::new("ko");
    ns.add_tap(TAP);
    ns.address(TAP, "10.0.0.1/24", None);
    let mut cmd = ns.command(&image);
    cmd.arg(format!("--net:service={TAP}")).args([
        "--ipv4=10.0.0.2/24",
        "--no-dhcp",
        "--port=8080",
        "--metrics-path=/metrics",
    ]);
    let mut www = Running::spawn(cmd, "www-observe-direct");
    www.wait_until("www serving", Duration::from_secs(20), |_| {
        ns.command("curl")
            .args(["-sS", "--max-time", "1", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "http://10.0.0.2:8080/"])
            .output()
            .is_ok_and(|o| o.stdout == b"200")
    });

    let before = scrape(&ns, python);
    for (family, kind) in [
        ("kiln_net_frames", "counter"),
        ("kiln_net_tcp_retransmitted_segments", "counter"),
        ("kiln_net_tcp_sockets", "gauge"),
        ("kiln_executor_polls", "counter"),
        ("kiln_executor_tasks", "gauge"),
        ("kiln_exits", "counter"),
        ("www_request_duration_seconds", "histogram"),
    ] {
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }

    // The namespace's firewall drops the first segment of www's that
    // carries 600 bytes or more (a response to `/`): smoltcp sends it
    // again after its retransmission timeout (1 s).
    let rule = [
        "INPUT",
        "-i",
        TAP,
        "-p",
        "tcp",
        "--sport",
        "8080",
        "-m",
        "length",
        "--length",
        "600:65535",
        "-m",
        "statistic",
        "--mode",
        "nth",
        "--every",
        "1000",
        "--packet",
        "0",
        "-j",
        "DROP",
    ];
    let iptables = |op: &str| {
        let out = ns.command("iptables").arg(op).args(rule).output().unwrap();
        assert!(
            out.status.success(),
            "iptables {op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    iptables("-A");
    for _ in 0..3 {
        let body = curl(ns.command("curl"), &["http://10.0.0.2:8080/"]).unwrap();
        assert!(!body.is_empty());
    }
    let dropped = ns
        .command("iptables")
        .args(["-L", "INPUT", "-v", "-n", "-x"])
        .output()
        .unwrap();
    iptables("-D");
    let after = scrape(&ns, python);

    let moved = |name: &str, labels: &str| after.value(name, labels) - before.value(name, labels);
    assert!(
        moved("kiln_net_tcp_retransmitted_segments_total", "") >= 1.0,
        "a dropped segment was sent again\n{}",
        String::from_utf8_lossy(&dropped.stdout)
    );
    // Three pages and the first scrape (counted once sent).
    assert_eq!(moved("www_responses_total", "code=2xx"), 4.0);
    for direction in ["direction=rx", "direction=tx"] {
        assert!(
            moved("kiln_net_frames_total", direction) >= 8.0,
            "{direction}"
        );
        assert!(
            moved("kiln_net_bytes_total", direction) >= 1000.0,
            "{direction}"
        );
    }
    assert!(moved("kiln_executor_polls_total", "") >= 10.0);
    assert!(moved("kiln_executor_waits_total", "kind=block") >= 1.0);
    assert!(moved("kiln_exits_total", "call=ppoll") >= 1.0);
    www.assert_running("www after the loss");
}
