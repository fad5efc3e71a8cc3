//! `examples/www` and `examples/udp-echo` built by `kiln build` with the
//! host-socket stack and run as processes, driven over 127.0.0.1 and ::1:
//! what a client sees of every page, of HEAD, conditional requests, errors,
//! keep-alive, pipelining, many clients and broken ones; echoes of
//! datagrams of every size. No root needed.

mod common;
mod support {
    pub mod net;
    pub mod net_http;
}

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_testsupport::ports::{free_tcp_port as free_port, free_udp_port};
use kiln_testsupport::skip::{have, skip};
use support::net::{Net, Running, echo_roundtrips, example_image};
use support::net_http;

/// `www.unix` on a free port of the host, listening and ready.
fn start_www() -> (Running, SocketAddr) {
    let image = example_image("www", Net::Socket);
    // The port is free when picked; another process may take it before
    // www does, so try a few.
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = Command::new(&image);
        cmd.arg(format!("--port={port}"));
        let mut www = Running::spawn(cmd, "www-socket");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if www.log().contains(&format!("www: serving on port {port}")) {
                return (www, addr);
            }
            if www.exited().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if www.exited().is_none() {
            panic!(
                "www did not say it serves within 10 s\n--- its output\n{}",
                www.log()
            );
        }
        eprintln!(
            "www could not listen on {port}, trying another:\n{}",
            www.log()
        );
    }
    panic!("www could not listen on any of 5 free ports");
}

/// Runs `check` against a fresh www; the server must still be running
/// afterwards.
fn run(name: &str) {
    let (_, check) = net_http::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no check {name}"));
    if name == "pages_are_byte_identical" && !have("curl", "--version") {
        return skip(name, "`curl` is not installed (scripts/test installs it)");
    }
    let (mut www, addr) = start_www();
    if let Err(e) = check(addr) {
        panic!("{name}: {e}\n--- www's output\n{}", www.log());
    }
    www.assert_running(&format!("www after {name}"));
}

#[test]
fn pages_are_byte_identical() {
    run("pages_are_byte_identical");
}

#[test]
fn head_has_headers_and_no_body() {
    run("head_has_headers_and_no_body");
}

#[test]
fn etag_gives_304() {
    run("etag_gives_304");
}

#[test]
fn missing_page_is_404() {
    run("missing_page_is_404");
}

#[test]
fn other_methods_get_405_with_allow() {
    run("other_methods_get_405_with_allow");
}

#[test]
fn malformed_then_good() {
    run("malformed_then_good");
}

#[test]
fn fifty_parallel_clients() {
    run("fifty_parallel_clients");
}

#[test]
fn keep_alive_and_pipelined() {
    run("keep_alive_and_pipelined");
}

#[test]
fn half_requests_do_not_hurt() {
    run("half_requests_do_not_hurt");
}

#[test]
fn odd_requests_get_the_right_status() {
    run("odd_requests_get_the_right_status");
}

/// Every check of the suite is run by one of the tests above.
#[test]
fn every_check_has_a_test() {
    let source = include_str!("net_socket.rs");
    for (name, _) in net_http::ALL {
        assert!(
            source.contains(&format!("fn {name}() {{\n    run(\"{name}\");")),
            "no test runs the check {name}"
        );
    }
}

/// Datagram sizes echoed over loopback: empty, small, around the
/// Ethernet MTU, and the largest udp-echo echoes whole.
const SIZES: &[usize] = &[1, 0, 17, 512, 1472, 1500, 9000, 65507];

#[test]
fn udp_echo_on_ipv4_and_ipv6_loopback() {
    let image = example_image("udp-echo", Net::Socket);
    let port = free_udp_port();
    let mut cmd = Command::new(&image);
    cmd.arg(format!("--port={port}"));
    let mut echo = Running::spawn(cmd, "udp-echo-socket");
    echo.wait_until("udp-echo", Duration::from_secs(10), |log| {
        log.contains(&format!("INFO  udp_echo: echoing on port {port}"))
    });
    let v4 = echo_roundtrips(
        "127.0.0.1:0".parse().unwrap(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SIZES,
    );
    if let Err(e) = v4 {
        panic!(
            "udp-echo over 127.0.0.1: {e}\n--- its output\n{}",
            echo.log()
        );
    }
    if UdpSocket::bind("[::1]:0").is_err() {
        skip(
            "udp_echo_on_ipv4_and_ipv6_loopback (::1 part)",
            "this host has no IPv6 loopback",
        );
    } else if let Err(e) = echo_roundtrips(
        "[::1]:0".parse().unwrap(),
        SocketAddr::new("::1".parse().unwrap(), port),
        SIZES,
    ) {
        panic!("udp-echo over ::1: {e}\n--- its output\n{}", echo.log());
    }
    echo.assert_running("udp-echo after the echoes");
}
