//! The direct stack against the host kernel, over kiln-unix's tap inside a
//! network namespace of its own: it gets an IPv4 address from dnsmasq over
//! DHCP, and the kernel's `ping`, `curl` and UDP sockets reach it over IPv4
//! and IPv6.
//!
//! Needs root, `ip`, `ping`, `curl` and `dnsmasq` (scripts/test installs
//! them). The outer test creates the namespace and re-runs this test binary
//! inside it (`ip netns exec`) for the inner half; everything the inner half
//! creates lives in the namespace and goes with it.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_devices::{MacAddress, Stack, TcpListener as _, TcpStream as _, UdpSocket as _};
use kiln_net::{Config, NetStack};
use kiln_rt::{block_on, spawn, timeout};
use kiln_testsupport::netns::{self, Netns};
use kiln_testsupport::platform::in_thread;
use kiln_testsupport::process::{ChildGuard, stdout_of};
use kiln_testsupport::skip::netns_or_skip;
use kiln_unix::{Tap, platform};

const IFNAME: &str = "kiln0";
const HOST_V4: &str = "10.78.0.1";
const GUEST_V6: &str = "fd00:78::2";
const GUEST_MAC: MacAddress = MacAddress([0x02, 0x6b, 0x6e, 0x65, 0x74, 0x01]);
/// Bytes served at `/big`.
const BIG: usize = 1 << 20;

#[test]
fn direct_stack_in_a_network_namespace() {
    let tools = [
        ("ping", "-V", "iputils-ping"),
        ("curl", "--version", "curl"),
        ("dnsmasq", "--version", "dnsmasq-base"),
    ];
    if !netns_or_skip("direct_stack_in_a_network_namespace", &tools) {
        return;
    }
    let ns = Netns::new("net");
    let status = ns.run_test("inside_a_namespace", Duration::from_secs(90));
    assert!(status.success(), "inner namespace test failed: {status}");
}

/// Runs `command`, returning its stdout, or an error with its stderr.
fn run(command: &str, args: &[&str]) -> Result<String, String> {
    stdout_of(Command::new(command).args(args))
        .map(|out| String::from_utf8_lossy(&out).into_owned())
        .map_err(|e| e.to_string())
}

/// What the host side does, in a thread of its own (its tools block).
fn host_side(v4: Ipv4Addr) -> Result<(), String> {
    let v4s = v4.to_string();
    run("ping", &["-c", "2", "-W", "5", &v4s])?;
    run("ping", &["-6", "-c", "2", "-W", "5", GUEST_V6])?;
    for url in [
        format!("http://{v4s}/hello"),
        format!("http://[{GUEST_V6}]/hello"),
    ] {
        let body = run("curl", &["-sS", "--max-time", "10", &url])?;
        if body != "hello from kiln-net\n" {
            return Err(format!("{url}: unexpected body {body:?}"));
        }
    }
    let size = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &format!("http://{v4s}/big"),
        ],
    )?;
    if size != BIG.to_string() {
        return Err(format!("/big: downloaded {size} bytes, expected {BIG}"));
    }
    let udp = UdpSocket::bind((HOST_V4, 0)).map_err(|e| e.to_string())?;
    udp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    udp.send_to(b"kiln datagram", (v4, 7))
        .map_err(|e| e.to_string())?;
    let mut buf = [0; 64];
    let (n, from) = udp
        .recv_from(&mut buf)
        .map_err(|e| format!("UDP echo: {e}"))?;
    if &buf[..n] != b"kiln datagram" || from != SocketAddr::from((v4, 7)) {
        return Err(format!("UDP echo: got {:?} from {from}", &buf[..n]));
    }
    Ok(())
}

/// Answers `GET /hello` and `GET /big`, one request per connection.
async fn http_responder(mut stream: kiln_net::TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body: Vec<u8> = if head.starts_with(b"GET /big ") {
        (0..BIG).map(|i| (i % 251) as u8).collect()
    } else {
        b"hello from kiln-net\n".to_vec()
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(header.as_bytes()).await.is_ok() && stream.write_all(&body).await.is_ok() {
        let _ = stream.shutdown().await;
        // Wait for the client's FIN so the data is not cut short.
        let _ = timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    }
}

#[test]
#[ignore = "run by direct_stack_in_a_network_namespace inside a network namespace"]
fn inside_a_namespace() {
    let ns = netns::inside().expect("run by direct_stack_in_a_network_namespace");
    let began = Instant::now();

    let result = block_on(
        platform(),
        timeout(Duration::from_secs(75), async {
            let tap = Tap::open(platform(), "service", IFNAME, Some(GUEST_MAC)).unwrap();
            netns::address(IFNAME, &format!("{HOST_V4}/24"), Some("fd00:78::1/64"));
            let leases = format!("/tmp/{ns}.leases");
            let dnsmasq = Command::new("dnsmasq")
                .args([
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--user=root",
                    "--bind-interfaces",
                    // Offer at once, without first pinging the address.
                    "--no-ping",
                    &format!("--interface={IFNAME}"),
                    "--dhcp-range=10.78.0.50,10.78.0.60,255.255.255.0,1h",
                    &format!("--dhcp-leasefile={leases}"),
                    "--pid-file=",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            let _dnsmasq = ChildGuard(dnsmasq);

            // DHCP for IPv4 (no --ipv4), a static IPv6 address.
            let config = Config::parse([
                &*format!("--ipv6={GUEST_V6}/64"),
                "--ipv6-gateway=fd00:78::1",
            ])
            .unwrap();
            let stack = NetStack::new(tap, config, 0x6b696c6e).unwrap();
            let v4 = timeout(Duration::from_secs(30), stack.wait_ipv4())
                .await
                .expect("no DHCP lease within 30 s");
            eprintln!("leased {v4} after {:?}", began.elapsed());
            let _ = std::fs::remove_file(&leases);
            assert!(
                (50..=60).contains(&v4.octets()[3]) && v4.octets()[..3] == [10, 78, 0],
                "leased {v4}, outside dnsmasq's range"
            );

            let listener = stack.listen_tcp("[::]:80".parse().unwrap()).await.unwrap();
            spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    spawn(http_responder(stream));
                }
            });
            let udp = stack.bind_udp("0.0.0.0:7".parse().unwrap()).await.unwrap();
            spawn(async move {
                let mut buf = [0; 1500];
                while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                    let _ = udp.send_to(&buf[..n], from).await;
                }
            });

            // The host's tools block in a thread of their own.
            let outcome = in_thread(Duration::from_secs(60), move || {
                let r = host_side(v4);
                eprintln!("host side done after {:?}", began.elapsed());
                r
            })
            .await;
            outcome.unwrap_or_else(|| Err("the host side did not finish within 60 s".into()))
        }),
    );
    result
        .expect("the namespace test timed out")
        .unwrap_or_else(|e| panic!("{e}"));
}
