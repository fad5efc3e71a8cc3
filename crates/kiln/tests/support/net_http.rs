//! The HTTP checks run against a `www` image on any stack: each takes the
//! server's address and returns what went wrong, so that one suite serves
//! the host-socket stack on 127.0.0.1 and the direct stack in a namespace.
#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use super::net::{Conn, Response, curl, files_under, htdocs, request, text};

/// A check of the suite: its name and its function.
pub type Check = (&'static str, fn(SocketAddr) -> Result<(), String>);

/// Every check, in the order the direct-stack test runs them.
pub const ALL: &[Check] = &[
    ("pages_are_byte_identical", pages_are_byte_identical),
    ("head_has_headers_and_no_body", head_has_headers_and_no_body),
    ("etag_gives_304", etag_gives_304),
    ("missing_page_is_404", missing_page_is_404),
    (
        "other_methods_get_405_with_allow",
        other_methods_get_405_with_allow,
    ),
    ("malformed_then_good", malformed_then_good),
    ("fifty_parallel_clients", fifty_parallel_clients),
    ("keep_alive_and_pipelined", keep_alive_and_pipelined),
    ("half_requests_do_not_hurt", half_requests_do_not_hurt),
    (
        "odd_requests_get_the_right_status",
        odd_requests_get_the_right_status,
    ),
];

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}/{path}")
}

/// The content type www gives `path`.
fn expected_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The entity tag of `path` under htdocs: its SHA-256, computed by
/// `sha256sum`, quoted.
fn expected_etag(path: &str) -> Result<String, String> {
    let file = htdocs().join(path);
    let out = Command::new("sha256sum")
        .arg(&file)
        .output()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    let hex = text(&out.stdout);
    let hex = hex
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .ok_or_else(|| format!("sha256sum {} gave {hex:?}", file.display()))?;
    Ok(format!("\"{hex}\""))
}

fn expect_status(r: &Response, status: u16, what: &str) -> Result<(), String> {
    if r.status == status {
        Ok(())
    } else {
        Err(format!("{what}: expected {status}, got {r:?}"))
    }
}

/// `curl` fetches every file of htdocs byte for byte, and `/`, `/docs/`
/// give the index pages; every 200 has the right type and length.
pub fn pages_are_byte_identical(addr: SocketAddr) -> Result<(), String> {
    let files = files_under(&htdocs());
    if files.len() < 5 {
        return Err(format!("htdocs has only {} files", files.len()));
    }
    let mut pages: Vec<(String, &[u8])> = files
        .iter()
        .map(|(path, bytes)| (path.clone(), bytes.as_slice()))
        .collect();
    pages.push((String::new(), &files["index.html"]));
    pages.push(("docs/".into(), &files["docs/index.html"]));
    for (path, bytes) in &pages {
        let got = curl(Command::new("curl"), &["-g", &url(addr, path)])?;
        if got != *bytes {
            return Err(format!(
                "curl /{path}: {} bytes that differ from the file's {}",
                got.len(),
                bytes.len()
            ));
        }
        let r = request(addr, "GET", &format!("/{path}"), "")?;
        expect_status(&r, 200, &format!("GET /{path}"))?;
        let file = if path.is_empty() || path.ends_with('/') {
            format!("{path}index.html")
        } else {
            path.clone()
        };
        if r.body != *bytes
            || r.header("content-type") != Some(expected_type(&file))
            || r.header("content-length") != Some(&bytes.len().to_string())
        {
            return Err(format!(
                "GET /{path}: headers {:?} and {} body bytes; expected {} bytes of {}",
                r.headers,
                r.body.len(),
                bytes.len(),
                expected_type(&file)
            ));
        }
    }
    Ok(())
}

/// HEAD gives the GET's headers (length, type, tag) and no body: the next
/// response on the same connection starts right after the head.
pub fn head_has_headers_and_no_body(addr: SocketAddr) -> Result<(), String> {
    for (path, bytes) in files_under(&htdocs()) {
        let mut conn = Conn::open(addr).map_err(|e| format!("connect: {e}"))?;
        conn.send(
            format!(
                "HEAD /{path} HTTP/1.1\r\nHost: kiln\r\n\r\n\
                 GET /robots.txt HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .map_err(|e| format!("send: {e}"))?;
        let head = conn.response(true)?;
        expect_status(&head, 200, &format!("HEAD /{path}"))?;
        let etag = expected_etag(&path)?;
        if head.header("content-length") != Some(&bytes.len().to_string())
            || head.header("content-type") != Some(expected_type(&path))
            || head.header("etag") != Some(&etag)
        {
            return Err(format!(
                "HEAD /{path}: headers {:?}; expected Content-Length {}, {}, ETag {etag}",
                head.headers,
                bytes.len(),
                expected_type(&path)
            ));
        }
        let next = conn.response(false)?;
        expect_status(&next, 200, "GET /robots.txt after a HEAD")?;
        if next.body != std::fs::read(htdocs().join("robots.txt")).unwrap_or_default() {
            return Err(format!(
                "the response after HEAD /{path} is not robots.txt: a body followed the HEAD?"
            ));
        }
        conn.closed()?;
    }
    Ok(())
}

/// `If-None-Match` with the page's tag gives 304 without a body; another
/// tag gives the page.
pub fn etag_gives_304(addr: SocketAddr) -> Result<(), String> {
    let first = request(addr, "GET", "/css/site.css", "")?;
    expect_status(&first, 200, "GET /css/site.css")?;
    let etag = first
        .header("etag")
        .ok_or("no ETag on GET /css/site.css")?
        .to_string();
    if etag != expected_etag("css/site.css")? {
        return Err(format!("ETag {etag} is not the file's SHA-256"));
    }
    let mut conn = Conn::open(addr).map_err(|e| format!("connect: {e}"))?;
    conn.send(
        format!(
            "GET /css/site.css HTTP/1.1\r\nHost: kiln\r\nIf-None-Match: {etag}\r\n\r\n\
             GET /css/site.css HTTP/1.1\r\nHost: kiln\r\nIf-None-Match: \"0123\", W/{etag}\r\n\r\n\
             GET /css/site.css HTTP/1.1\r\nHost: kiln\r\nIf-None-Match: \"other\"\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .map_err(|e| format!("send: {e}"))?;
    for what in ["the same tag", "a list with the weak tag"] {
        let r = conn.response(false)?;
        expect_status(&r, 304, &format!("If-None-Match with {what}"))?;
        if r.header("etag") != Some(&etag) || r.header("content-length").is_some() {
            return Err(format!("304 with headers {:?}", r.headers));
        }
    }
    let r = conn.response(false)?;
    expect_status(&r, 200, "If-None-Match with another tag")?;
    if r.body != first.body {
        return Err("the 200 after a non-matching tag has another body".into());
    }
    conn.closed()
}

/// A missing page is a 404 and the connection stays usable.
pub fn missing_page_is_404(addr: SocketAddr) -> Result<(), String> {
    for path in ["/nope.html", "/img/missing.png", "/docs/nope/"] {
        let r = request(addr, "GET", path, "")?;
        expect_status(&r, 404, &format!("GET {path}"))?;
    }
    let mut conn = Conn::open(addr).map_err(|e| format!("connect: {e}"))?;
    conn.send(
        b"GET /nope HTTP/1.1\r\nHost: kiln\r\n\r\n\
          GET /robots.txt HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\n\r\n",
    )
    .map_err(|e| format!("send: {e}"))?;
    expect_status(&conn.response(false)?, 404, "GET /nope (kept alive)")?;
    expect_status(&conn.response(false)?, 200, "GET /robots.txt after a 404")?;
    conn.closed()
}

/// Methods other than GET and HEAD get 405 with `Allow: GET, HEAD`.
pub fn other_methods_get_405_with_allow(addr: SocketAddr) -> Result<(), String> {
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = request(addr, method, "/index.html", "Content-Length: 0\r\n")?;
        expect_status(&r, 405, method)?;
        if r.header("allow") != Some("GET, HEAD") {
            return Err(format!("{method}: 405 without Allow: GET, HEAD: {r:?}"));
        }
    }
    Ok(())
}

/// A malformed request gets 400 and the connection closes; a good request
/// on a new connection is served.
pub fn malformed_then_good(addr: SocketAddr) -> Result<(), String> {
    let garbage: [&[u8]; 3] = [
        b"\x01\x02\x03 not http at all\r\n\r\n",
        b"GET /index.html HTTP/1.1\r\nHost: kiln\r\nBad Header Line\r\n\r\n",
        b"GET /index.html HTTP/1.1\r\n\r\n", // no Host
    ];
    for bytes in garbage {
        let mut conn = Conn::open(addr).map_err(|e| format!("connect: {e}"))?;
        conn.send(bytes).map_err(|e| format!("send: {e}"))?;
        let r = conn.response(false)?;
        expect_status(&r, 400, &format!("{:?}", text(bytes)))?;
        conn.closed()?;
        let good = request(addr, "GET", "/index.html", "")?;
        expect_status(&good, 200, "GET /index.html after a malformed request")?;
    }
    Ok(())
}

/// 50 clients at once, each fetching three pages on a kept-alive
/// connection: every response whole and right.
pub fn fifty_parallel_clients(addr: SocketAddr) -> Result<(), String> {
    let files = files_under(&htdocs());
    let pages = ["index.html", "img/kiln.png", "docs/http.html"];
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let expected: Vec<(String, Vec<u8>)> = (0..3)
                .map(|k| {
                    let p = pages[(i + k) % pages.len()];
                    (p.to_string(), files[p].clone())
                })
                .collect();
            std::thread::spawn(move || -> Result<(), String> {
                let mut conn = Conn::open(addr).map_err(|e| format!("client {i}: connect: {e}"))?;
                for (path, bytes) in &expected {
                    conn.send(format!("GET /{path} HTTP/1.1\r\nHost: kiln\r\n\r\n").as_bytes())
                        .map_err(|e| format!("client {i}: send: {e}"))?;
                    let r = conn
                        .response(false)
                        .map_err(|e| format!("client {i}: {e}"))?;
                    if r.status != 200 || r.body != *bytes {
                        return Err(format!(
                            "client {i}: GET /{path} gave {} with {} bytes",
                            r.status,
                            r.body.len()
                        ));
                    }
                }
                Ok(())
            })
        })
        .collect();
    let mut failures = Vec::new();
    for client in clients {
        match client.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("a client thread panicked".into()),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of 50 clients failed: {}",
            failures.len(),
            failures.join("; ")
        ))
    }
}

/// Requests one after another on one connection, then five pipelined in
/// one write: answered in order, each whole.
pub fn keep_alive_and_pipelined(addr: SocketAddr) -> Result<(), String> {
    let files = files_under(&htdocs());
    let mut conn = Conn::open(addr).map_err(|e| format!("connect: {e}"))?;
    for path in ["index.html", "about.html", "img/kiln.svg", "index.html"] {
        conn.send(format!("GET /{path} HTTP/1.1\r\nHost: kiln\r\n\r\n").as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let r = conn.response(false)?;
        if r.status != 200 || r.body != files[path] || r.header("connection") == Some("close") {
            return Err(format!(
                "keep-alive GET /{path}: {} {:?}",
                r.status, r.headers
            ));
        }
    }
    let pipeline = [
        ("GET", "docs/http.html"),
        ("HEAD", "img/kiln.png"),
        ("GET", "robots.txt"),
        ("GET", "missing"),
        ("GET", "css/site.css"),
    ];
    let mut bytes = Vec::new();
    for (i, (method, path)) in pipeline.iter().enumerate() {
        let close = if i + 1 == pipeline.len() {
            "Connection: close\r\n"
        } else {
            ""
        };
        bytes.extend_from_slice(
            format!("{method} /{path} HTTP/1.1\r\nHost: kiln\r\n{close}\r\n").as_bytes(),
        );
    }
    conn.send(&bytes).map_err(|e| format!("send: {e}"))?;
    for (method, path) in pipeline {
        let r = conn.response(method == "HEAD")?;
        let good = match files.get(path) {
            Some(_) if method == "HEAD" => {
                r.status == 200
                    && r.body.is_empty()
                    && r.header("content-length") == Some(&files[path].len().to_string())
            }
            Some(body) => r.status == 200 && r.body == *body,
            None => r.status == 404,
        };
        if !good {
            return Err(format!(
                "pipelined {method} /{path}: {} {:?} with {} body bytes",
                r.status,
                r.headers,
                r.body.len()
            ));
        }
    }
    conn.closed()
}

/// Clients that send half a request and go away, or stop sending, or
/// half-close, leave the server answering others at once.
pub fn half_requests_do_not_hurt(addr: SocketAddr) -> Result<(), String> {
    let half = b"GET /index.html HTTP/1.1\r\nHost: ki";
    // Half a request, then gone.
    for _ in 0..20 {
        let mut conn = Conn::open(addr).map_err(|e| format!("connect: {e}"))?;
        conn.send(half).map_err(|e| format!("send: {e}"))?;
    }
    // Half a request, then silence: others are served meanwhile.
    let mut silent = Conn::open(addr).map_err(|e| format!("connect: {e}"))?;
    silent.send(half).map_err(|e| format!("send: {e}"))?;
    let started = Instant::now();
    expect_status(
        &request(addr, "GET", "/about.html", "")?,
        200,
        "GET beside a silent client",
    )?;
    if started.elapsed() > Duration::from_secs(5) {
        return Err(format!(
            "a GET beside a silent client took {:?}",
            started.elapsed()
        ));
    }
    // Half a request, then the client's end of the stream: the server
    // ends the connection (with or without a 400).
    let mut ended = Conn::open(addr).map_err(|e| format!("connect: {e}"))?;
    ended.send(half).map_err(|e| format!("send: {e}"))?;
    ended.shutdown_write();
    let rest = ended.rest()?;
    if !rest.is_empty() && !rest.starts_with(b"HTTP/1.1 400 ") {
        return Err(format!("after half a request and a FIN: {:?}", text(&rest)));
    }
    drop(silent);
    expect_status(
        &request(addr, "GET", "/", "")?,
        200,
        "GET after the half requests",
    )
}

/// Paths that climb out of the site, a directory without its slash, an
/// HTTP/1.0 request, an unknown version and an oversized head each get
/// their status; nothing outside the site is ever served.
pub fn odd_requests_get_the_right_status(addr: SocketAddr) -> Result<(), String> {
    for path in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/docs/../../x",
    ] {
        let r = request(addr, "GET", path, "")?;
        if r.status != 400 && r.status != 404 {
            return Err(format!("GET {path}: {r:?}"));
        }
    }
    let r = request(addr, "GET", "/docs", "")?;
    expect_status(&r, 301, "GET /docs")?;
    if r.header("location") != Some("/docs/") {
        return Err(format!("GET /docs: Location {:?}", r.header("location")));
    }
    let cases: [(&[u8], u16); 3] = [
        (b"GET /robots.txt HTTP/1.0\r\n\r\n", 200),
        (b"GET /robots.txt HTTP/2.0\r\nHost: kiln\r\n\r\n", 505),
        (&[], 431),
    ];
    let long = format!("GET /{} HTTP/1.1\r\nHost: kiln\r\n\r\n", "a".repeat(9000));
    for (bytes, status) in cases {
        let bytes = if bytes.is_empty() {
            long.as_bytes()
        } else {
            bytes
        };
        let mut conn = Conn::open(addr).map_err(|e| format!("connect: {e}"))?;
        conn.send(bytes).map_err(|e| format!("send: {e}"))?;
        let what = text(&bytes[..bytes.len().min(40)]);
        expect_status(&conn.response(false)?, status, &what)?;
        // HTTP/1.0 without keep-alive, and every error, close.
        conn.closed().map_err(|e| format!("{what:?}: {e}"))?;
    }
    Ok(())
}
