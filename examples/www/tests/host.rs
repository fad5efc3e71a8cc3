//! www on the unix platform's host-socket stack, fetched by `curl` over
//! 127.0.0.1: what a browser sees, byte for byte.

mod support;

use std::process::Command;
use std::time::Duration;

use kiln_baked::{Baked, digest_of};
use kiln_rt::{block_on, timeout};
use kiln_testsupport::platform::in_thread;
use kiln_testsupport::ports::free_tcp_port;
use kiln_testsupport::process::stdout_of;
use kiln_testsupport::skip::{have, skip};
use kiln_unix::{SocketStack, platform};
use support::{bake, file};

fn htdocs() -> Baked {
    bake(&[
        file("css/site.css"),
        file("img/kiln.png"),
        file("index.html"),
    ])
}

/// Runs curl with `args`; stdout on success.
fn curl(args: &[&str]) -> Result<Vec<u8>, String> {
    stdout_of(
        Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args),
    )
    .map_err(|e| e.to_string())
}

fn client(port: u16) -> Result<(), String> {
    let base = format!("http://127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(format!("kiln-www-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (index, png) = (dir.join("index.html"), dir.join("kiln.png"));
    // Two URLs on one kept-alive connection.
    let log = curl(&[
        "-v",
        "-o",
        index.to_str().unwrap(),
        &format!("{base}/"),
        "-o",
        png.to_str().unwrap(),
        &format!("{base}/img/kiln.png"),
    ]);
    let got_index = std::fs::read(&index).map_err(|e| e.to_string());
    let got_png = std::fs::read(&png).map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    log?;
    if got_index? != include_bytes!("../htdocs/index.html") {
        return Err("index.html differs".into());
    }
    if got_png? != include_bytes!("../htdocs/img/kiln.png") {
        return Err("kiln.png differs".into());
    }
    let head = String::from_utf8(curl(&["-I", &format!("{base}/css/site.css")])?).unwrap();
    let etag = format!(
        "\"{}\"",
        kiln_devices::Digest(digest_of(include_bytes!("../htdocs/css/site.css")))
    );
    if !head.starts_with("HTTP/1.1 200 OK\r\n")
        || !head.contains("Content-Type: text/css; charset=utf-8\r\n")
        || !head.contains(&format!("ETag: {etag}\r\n"))
    {
        return Err(format!("unexpected HEAD response: {head:?}"));
    }
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("If-None-Match: {etag}"),
        &format!("{base}/css/site.css"),
    ])?;
    if status != b"304" {
        return Err(format!(
            "If-None-Match gave {}",
            String::from_utf8_lossy(&status)
        ));
    }
    Ok(())
}

#[test]
fn curl_fetches_the_site_over_host_sockets() {
    if !have("curl", "--version") {
        return skip(
            "curl_fetches_the_site_over_host_sockets",
            "`curl` is not installed (scripts/test installs it)",
        );
    }
    // A free port: the kernel picks one, we let it go and take it.
    let port = free_tcp_port();
    let result = block_on(
        platform(),
        timeout(Duration::from_secs(60), async move {
            let stack = SocketStack::new(platform());
            kiln_rt::spawn(www::start(stack, htdocs(), port, 512));
            kiln_rt::sleep(Duration::from_millis(50)).await;
            // curl blocks in a thread of its own.
            in_thread(Duration::from_secs(50), move || client(port))
                .await
                .unwrap_or_else(|| Err("curl did not finish within 50 s".into()))
        }),
    );
    result
        .expect("the test timed out")
        .unwrap_or_else(|e| panic!("{e}"));
}
