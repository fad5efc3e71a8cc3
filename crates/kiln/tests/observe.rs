//! Observing a running unikernel end to end: `examples/www` built by `kiln
//! build` with the host-socket stack, run as a process on 127.0.0.1 with
//! `--metrics-path` and `--log`: its boot information and access log on the
//! console, and a `/metrics` page that a strict reader of the text format
//! accepts, with counters that match the requests made.

mod common;
mod support {
    pub mod net;
}

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use kiln_testsupport::ports::free_tcp_port;
use kiln_testsupport::prometheus;
use support::net::{Net, Running, example_image, request};

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
