//! Benchmark (not a test: ignored unless asked for, asserts nothing about
//! speed): `wrk` against `www` on the host-socket stack (127.0.0.1) and on
//! the direct stack (a tap in a network namespace), and against `nginx`
//! (one process) serving the same htdocs beside each, in the same run:
//! requests/s and p50/p99 latency for a small page and a 1 MiB file,
//! medians of 3 runs, each as a ratio to nginx.
//!
//! ```sh
//! cargo test -p kiln --test net_bench -- --ignored --nocapture
//! ```
//!
//! Needs `wrk` and `nginx` (apt), and root for the direct-stack part
//! (skipped, loudly, without). `KILN_BENCH_RUNS` and `KILN_BENCH_SECS`
//! change the 3 runs of 5 s each.

mod common;
mod support {
    pub mod net;
}

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::temp_dir;
use kiln_testsupport::netns::Netns;
use kiln_testsupport::ports::free_tcp_port as free_port;
use kiln_testsupport::skip::{have, is_root, skip};
use support::net::{Net, Running, text, variant_image, workspace};

/// The pages measured: a small HTML page, and a 1 MiB file added to a copy
/// of htdocs (the baked store needs it at build time).
const PAGES: [&str; 2] = ["index.html", "big.bin"];
const BIG: usize = 1 << 20;

/// 1 MiB of deterministic noise (xorshift), so compression could not help.
fn big_file() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..BIG)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One wrk run: requests/s, p50 and p99 latency in microseconds, and what
/// wrk reported as errors.
#[derive(Debug, Clone)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: String,
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.00s`) in microseconds.
fn micros(s: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn parse_wrk(out: &str) -> Result<Sample, String> {
    let mut sample = Sample {
        rps: f64::NAN,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        errors: String::new(),
    };
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => sample.rps = n.parse().unwrap_or(f64::NAN),
            ["50%", d] => sample.p50_us = micros(d).unwrap_or(f64::NAN),
            ["99%", d] => sample.p99_us = micros(d).unwrap_or(f64::NAN),
            ["Socket", "errors:", ..] | ["Non-2xx", ..] => {
                sample.errors.push_str(line.trim());
                sample.errors.push(' ');
            }
            _ => {}
        }
    }
    if sample.rps.is_nan() || sample.p50_us.is_nan() || sample.p99_us.is_nan() {
        return Err(format!("cannot read wrk's report:\n{out}"));
    }
    Ok(sample)
}

/// Runs `wrk -d SECS -c 50 -t 2 --latency URL` through `cmd`.
fn wrk(mut cmd: Command, url: &str, secs: u32) -> Sample {
    let out = cmd
        .args([
            "-d",
            &format!("{secs}s"),
            "-c",
            "50",
            "-t",
            "2",
            "--latency",
        ])
        .args(["--timeout", "5s", url])
        .output()
        .expect("run wrk");
    assert!(
        out.status.success(),
        "wrk {url} failed: {}",
        text(&out.stderr)
    );
    parse_wrk(&text(&out.stdout)).unwrap_or_else(|e| panic!("{e}"))
}

/// nginx as one process serving `root` on `listen`, started by `launch`
/// (plain or inside a namespace), its files in `tmp`.
fn nginx(launch: Command, listen: &str, root: &Path, tmp: &Path) -> Running {
    let conf = tmp.join("nginx.conf");
    let t = tmp.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {t}/nginx.pid;\n\
             error_log {t}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  \
             keepalive_requests 1000000;\n  client_body_temp_path {t}/body;\n  \
             proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fastcgi;\n  \
             uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  \
             types {{ text/html html; text/css css; image/png png; }}\n  \
             default_type application/octet-stream;\n  \
             server {{ listen {listen}; root {}; }}\n}}\n",
            root.display()
        ),
    )
    .expect("write nginx.conf");
    let mut cmd = launch;
    cmd.arg("-e")
        .arg(tmp.join("error.log"))
        .arg("-p")
        .arg(tmp)
        .arg("-c")
        .arg(&conf);
    Running::spawn(cmd, "nginx")
}

/// Waits until `url` answers 200 through `curl` (run by `launch`).
fn wait_ready(server: &mut Running, what: &str, url: &str, launch: impl Fn() -> Command) {
    server.wait_until(what, Duration::from_secs(20), |_| {
        launch()
            .args(["-s", "-g", "--max-time", "1", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", url])
            .output()
            .is_ok_and(|o| o.stdout == b"200")
    });
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One row of the report.
struct Row {
    setup: &'static str,
    server: &'static str,
    page: &'static str,
    samples: Vec<Sample>,
}

impl Row {
    fn rps(&self) -> f64 {
        median(self.samples.iter().map(|s| s.rps).collect())
    }
    fn p50(&self) -> f64 {
        median(self.samples.iter().map(|s| s.p50_us).collect())
    }
    fn p99(&self) -> f64 {
        median(self.samples.iter().map(|s| s.p99_us).collect())
    }
}

/// Measures `servers` (name, URL base) on every page, `runs` times each,
/// the servers taking turns so that drift hits them alike.
fn measure(
    setup: &'static str,
    servers: &[(&'static str, String)],
    launch: &dyn Fn() -> Command,
    runs: u32,
    secs: u32,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for page in PAGES {
        let mut per_server: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
        for run in 0..runs {
            for (i, (name, base)) in servers.iter().enumerate() {
                let sample = wrk(launch(), &format!("{base}/{page}"), secs);
                eprintln!(
                    "{setup} {name} /{page} run {}: {:.0} req/s, p50 {:.0} us, p99 {:.0} us {}",
                    run + 1,
                    sample.rps,
                    sample.p50_us,
                    sample.p99_us,
                    sample.errors
                );
                per_server[i].push(sample);
            }
        }
        for ((name, _), samples) in servers.iter().zip(per_server) {
            rows.push(Row {
                setup,
                server: name,
                page,
                samples,
            });
        }
    }
    rows
}

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "a benchmark: cargo test -p kiln --test net_bench -- --ignored --nocapture"]
fn www_against_nginx() {
    for (program, arg) in [("wrk", "--version"), ("nginx", "-v"), ("curl", "--version")] {
        if !have(program, arg) {
            return skip(
                "www_against_nginx",
                &format!("`{program}` is not installed (apt-get install wrk nginx-light curl)"),
            );
        }
    }
    let runs = env_u32("KILN_BENCH_RUNS", 3).max(1);
    let secs = env_u32("KILN_BENCH_SECS", 5).max(1);
    let big = big_file();
    let extra: [(&str, &[u8]); 1] = [("htdocs/big.bin", &big)];
    let socket_image = variant_image("www", Net::Socket, "bench", &extra);
    // The copy of htdocs the socket image was baked from, big.bin included.
    let root = socket_image
        .parent()
        .and_then(Path::parent)
        .expect("DIR/dist/www.unix")
        .join("htdocs");
    assert_eq!(
        std::fs::read(root.join("big.bin")).ok().map(|b| b.len()),
        Some(BIG)
    );

    let mut rows = Vec::new();
    {
        let tmp = temp_dir("bench-socket");
        let www_port = free_port();
        let mut cmd = Command::new(&socket_image);
        cmd.arg(format!("--port={www_port}"));
        let mut www = Running::spawn(cmd, "www-bench");
        let nginx_port = free_port();
        let mut web = nginx(
            Command::new("nginx"),
            &format!("127.0.0.1:{nginx_port}"),
            &root,
            tmp.path(),
        );
        let www_base = format!("http://{}", SocketAddr::from(([127, 0, 0, 1], www_port)));
        let nginx_base = format!("http://127.0.0.1:{nginx_port}");
        wait_ready(&mut www, "www", &format!("{www_base}/big.bin"), || {
            Command::new("curl")
        });
        wait_ready(&mut web, "nginx", &format!("{nginx_base}/big.bin"), || {
            Command::new("curl")
        });
        rows.extend(measure(
            "unix-socket (127.0.0.1)",
            &[("www", www_base), ("nginx", nginx_base)],
            &|| Command::new("wrk"),
            runs,
            secs,
        ));
        www.assert_running("www after the benchmark");
    }

    if !is_root() || !Path::new("/dev/net/tun").exists() || !have("ip", "-V") {
        skip(
            "www_against_nginx (direct stack)",
            "needs root, /dev/net/tun and ip for a network namespace",
        );
    } else {
        let direct_image = variant_image("www", Net::Direct, "bench", &extra);
        let tmp = temp_dir("bench-direct");
        let ns = Netns::new("nt");
        ns.add_tap("kt0");
        ns.address("kt0", "10.0.0.1/24", Some("fd00::1/64"));
        let mut cmd = ns.command(&direct_image);
        cmd.args(["--net:service=kt0", "--ipv4=10.0.0.2/24", "--port=8080"]);
        let mut www = Running::spawn(cmd, "www-bench-direct");
        let mut web = nginx(ns.command("nginx"), "10.0.0.1:8081", &root, tmp.path());
        let in_ns = |program: &str| ns.command(program);
        wait_ready(&mut www, "www", "http://10.0.0.2:8080/big.bin", || {
            in_ns("curl")
        });
        wait_ready(&mut web, "nginx", "http://10.0.0.1:8081/big.bin", || {
            in_ns("curl")
        });
        rows.extend(measure(
            "unix-direct (tap in a namespace)",
            &[
                ("www", "http://10.0.0.2:8080".into()),
                ("nginx", "http://10.0.0.1:8081".into()),
            ],
            &|| in_ns("wrk"),
            runs,
            secs,
        ));
        www.assert_running("www (direct) after the benchmark");
    }

    let rev = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace())
        .output()
        .map(|o| text(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "\nwrk -d {secs}s -c 50 -t 2 --latency, medians of {runs} runs, at {rev}\n\n\
         | setup | server | page | req/s | p50 | p99 | req/s vs nginx |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: |"
    );
    for row in &rows {
        let nginx = rows
            .iter()
            .find(|r| r.setup == row.setup && r.page == row.page && r.server == "nginx")
            .map_or(f64::NAN, Row::rps);
        println!(
            "| {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2}× |",
            row.setup,
            row.server,
            if row.page == "big.bin" {
                "1 MiB file".to_string()
            } else {
                let size = std::fs::metadata(root.join(row.page)).map_or(0, |m| m.len());
                format!("{} ({size} B)", row.page)
            },
            row.rps(),
            row.p50() / 1e3,
            row.p99() / 1e3,
            row.rps() / nginx
        );
    }
    let errors: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.samples
                .iter()
                .filter(|s| !s.errors.is_empty())
                .map(move |s| format!("{} {} {}: {}", r.setup, r.server, r.page, s.errors))
        })
        .collect();
    if !errors.is_empty() {
        println!("\nwrk reported errors:\n{}", errors.join("\n"));
    }
}

#[test]
fn wrk_reports_are_read() {
    let report = "Running 5s test @ http://127.0.0.1:8080/\n  2 threads and 50 connections\n\
        \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
        \x20   Latency   812.00us  1.20ms  30.00ms   90.00%\n\
        \x20 Latency Distribution\n     50%  612.00us\n     75%    1.00ms\n     90%    1.50ms\n     99%    2.25s\n\
        \x20 1000 requests in 5.00s, 1.00MB read\n  Socket errors: connect 0, read 3, write 0, timeout 0\n\
        Requests/sec:  12345.67\nTransfer/sec:      1.00MB\n";
    let s = parse_wrk(report).unwrap();
    assert_eq!(s.rps, 12345.67);
    assert_eq!(s.p50_us, 612.0);
    assert_eq!(s.p99_us, 2.25e6);
    assert!(s.errors.contains("read 3"), "{}", s.errors);
    assert!(parse_wrk("Requests/sec: 1\n").is_err());
    assert_eq!(micros("1.5m"), Some(90e6));
    assert_eq!(micros("3"), None);
}
