//! `--metrics-path`: www over two kiln-net stacks on an in-memory wire
//! (virtual time); a few requests, then the metrics page read by a strict
//! parser of the text format, with counters that match the requests.

mod support;

use kiln_devices::{MacAddress, Stack, TcpStream as _};
use kiln_net::NetStack;
use kiln_testsupport::platform::run_virtual as run;
use kiln_testsupport::prometheus::{self, Page};
use std::time::Duration;
use support::htdocs;
use www::Options;

/// Sends `raw` on a new connection (which the request closes) and returns
/// the status and body of the response.
async fn request(client: &NetStack, raw: &str) -> (u16, String) {
    let mut s = client
        .connect_tcp("10.0.0.1:8080".parse().unwrap())
        .await
        .unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0; 16384];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    if raw.contains("/metrics") && status == 200 {
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
    }
    (status, body.to_string())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
}

/// Runs www with `metrics_path`, makes the requests in `raws`, then asks
/// for `last` and returns its status and body.
fn serve(metrics_path: Option<&str>, raws: &[String], last: &str) -> (Vec<u16>, (u16, String)) {
    let metrics_path = metrics_path.map(str::to_string);
    let raws = raws.to_vec();
    let last = last.to_string();
    run(async move {
        let (a, b) = kiln_net::pair::pair(
            MacAddress([2, 0, 0, 0, 0, 1]),
            MacAddress([2, 0, 0, 0, 0, 2]),
        );
        let cfg = |ip: &str| kiln_net::Config::parse([ip, "--no-slaac"]).unwrap();
        let server = NetStack::new(a, cfg("--ipv4=10.0.0.1/24"), 1).unwrap();
        let client = NetStack::new(b, cfg("--ipv4=10.0.0.2/24"), 2).unwrap();
        let options = Options {
            metrics_path,
            ..Options::new(8080, 512)
        };
        kiln_rt::spawn(www::run(
            server,
            htdocs(),
            kiln_devices::NoShutdown,
            options,
        ));
        kiln_rt::sleep(Duration::from_millis(1)).await;
        let mut statuses = Vec::new();
        for raw in &raws {
            statuses.push(request(&client, raw).await.0);
        }
        (statuses, request(&client, &last).await)
    })
}

fn page(body: &str) -> Page {
    prometheus::parse(body).unwrap_or_else(|e| panic!("{e}\n--- the page\n{body}"))
}

#[test]
fn counters_match_the_requests_made() {
    let raws = [
        get("/"),
        get("/"),
        get("/img/kiln.png"),
        get("/no-such-page"),
        "DELETE / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string(),
        get("/img"),
        "BAD\r\n\r\n".to_string(),
    ];
    let (statuses, (status, body)) = serve(Some("/metrics"), &raws, &get("/metrics"));
    assert_eq!(statuses, [200, 200, 200, 404, 405, 301, 400]);
    assert_eq!(status, 200);
    let p = page(&body);
    let responses = |code| p.value("www_responses_total", &[("code", code)]);
    // The page itself is counted once it is sent: not on itself.
    assert_eq!(responses("1xx"), Some(0.0));
    assert_eq!(responses("2xx"), Some(3.0));
    assert_eq!(responses("3xx"), Some(1.0));
    assert_eq!(responses("4xx"), Some(3.0));
    assert_eq!(responses("5xx"), Some(0.0));
    let family = p.family("www_request_duration_seconds").unwrap();
    assert_eq!(family.kind, "histogram");
    assert_eq!(
        p.value("www_request_duration_seconds_count", &[]),
        Some(7.0)
    );
    assert_eq!(
        p.value("www_request_duration_seconds_bucket", &[("le", "+Inf")]),
        Some(7.0)
    );
    assert_eq!(p.value("www_connections", &[]), Some(1.0), "the one asking");
    assert_eq!(p.value("www_connections_refused_total", &[]), Some(0.0));
    // The stack's families, registered by kiln-net.
    assert_eq!(p.family("kiln_net_frames_total").unwrap().kind, "counter");
    let rx = p
        .value("kiln_net_frames_total", &[("direction", "rx")])
        .unwrap();
    let tx = p
        .value("kiln_net_frames_total", &[("direction", "tx")])
        .unwrap();
    // Seven connections done before the page: each at least a SYN, a
    // request and an ACK in, a SYN-ACK and a response out.
    assert!(rx >= 21.0 && tx >= 14.0, "rx {rx} tx {tx}");
    let rx_bytes = p
        .value("kiln_net_bytes_total", &[("direction", "rx")])
        .unwrap();
    assert!(rx_bytes >= rx * 54.0, "{rx_bytes} bytes in {rx} frames");
    let sockets = p.value("kiln_net_tcp_sockets", &[]).unwrap();
    assert!(sockets >= 2.0);
    // The listener's ready sockets take the bulk buffers first.
    let bulk = p.value("kiln_net_tcp_bulk_sockets", &[]).unwrap();
    assert!(bulk >= 1.0 && bulk <= sockets, "{bulk} of {sockets}");
    assert_eq!(p.value("kiln_net_tcp_refused_total", &[]), Some(0.0));
}

#[test]
fn metrics_are_served_only_where_asked() {
    // Off (the default): /metrics is a path like any other.
    let (_, (status, _)) = serve(None, &[], &get("/metrics"));
    assert_eq!(status, 404);
    // Elsewhere, with HEAD too; other methods get 405.
    let head = "HEAD /_/stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string();
    let post = "POST /_/stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string();
    let (statuses, (status, body)) = serve(
        Some("/_/stats"),
        &[head, post, get("/metrics")],
        &get("/_/stats"),
    );
    assert_eq!(statuses, [200, 405, 404]);
    assert_eq!(status, 200);
    let p = page(&body);
    assert_eq!(
        p.value("www_responses_total", &[("code", "2xx")]),
        Some(1.0)
    );
    assert_eq!(
        p.value("www_responses_total", &[("code", "4xx")]),
        Some(2.0)
    );
}
