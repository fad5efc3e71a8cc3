//! The bulk unikernel as the code generator composes it for `--net direct`
//! on unix (kiln-unix's tap, kiln-net's stack, `bulk::start`) inside a
//! network namespace: Debian's `iperf3 -c` runs a test each way, and
//! megabytes go through the echo port and come back with the same SHA-256,
//! with an MTU of 1500, 9000 and 65520 (the largest a tap takes below
//! 64 KiB frames), with the tap's offloads on and off,
//! and with 1% of the frames lost each way (iptables' `statistic` match:
//! `tc netem` is not in every kernel, the test machines' included).
//!
//! Needs root, `ip`, `iptables` and `iperf3` (scripts/test installs them). The
//! outer tests create the namespace and re-run this test binary inside it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::Duration;

use kiln_devices::MacAddress;
use kiln_net::{Config, NetStack};
use kiln_rt::{block_on, timeout};
use kiln_testsupport::netns::{self, Netns};
use kiln_testsupport::platform::in_thread;
use kiln_testsupport::skip::netns_or_skip;
use kiln_unix::{Console, Tap, TapOptions, platform};
use sha2::{Digest, Sha256};

const TOOLS: [(&str, &str, &str); 3] = [
    ("iperf3", "--version", "iperf3"),
    ("iptables", "-V", "iptables"),
    ("ethtool", "--version", "ethtool"),
];

/// One configuration of the wire.
struct Case {
    name: &'static str,
    mtu: u32,
    offloads: bool,
    /// Frames dropped each way, percent.
    loss: u32,
    /// The host turns the offloads the tap negotiated off again
    /// (`ethtool -K TAP tx off sg off tso off`): it then sends plain
    /// frames, whose TCP checksums kiln-net checks itself.
    host_refuses: bool,
    /// Bytes through the echo port (each way).
    bytes: usize,
    /// Whether iperf3 runs a test each way too.
    iperf: bool,
}

fn cases(mib: usize) -> Vec<Case> {
    let m = mib << 20;
    vec![
        Case {
            name: "mtu 1500, offloads",
            mtu: 1500,
            offloads: true,
            loss: 0,
            host_refuses: false,
            bytes: m,
            iperf: true,
        },
        Case {
            name: "mtu 1500, no offloads",
            mtu: 1500,
            offloads: false,
            loss: 0,
            host_refuses: false,
            bytes: m,
            iperf: true,
        },
        Case {
            name: "mtu 9000, offloads",
            mtu: 9000,
            offloads: true,
            loss: 0,
            host_refuses: false,
            bytes: m,
            iperf: false,
        },
        Case {
            name: "mtu 9000, no offloads",
            mtu: 9000,
            offloads: false,
            loss: 0,
            host_refuses: false,
            bytes: m,
            iperf: false,
        },
        Case {
            name: "mtu 65520, offloads",
            mtu: 65520,
            offloads: true,
            loss: 0,
            host_refuses: false,
            bytes: m,
            iperf: false,
        },
        Case {
            name: "mtu 65520, no offloads",
            mtu: 65520,
            offloads: false,
            loss: 0,
            host_refuses: false,
            bytes: m,
            iperf: false,
        },
        Case {
            name: "mtu 1500, offloads, 1% loss",
            mtu: 1500,
            offloads: true,
            loss: 1,
            host_refuses: false,
            bytes: m / 2,
            iperf: false,
        },
        Case {
            name: "mtu 1500, offloads refused by the host",
            mtu: 1500,
            offloads: true,
            loss: 0,
            host_refuses: true,
            bytes: m,
            iperf: false,
        },
    ]
}

#[test]
fn bulk_transfers_are_byte_identical_in_a_network_namespace() {
    let test = "bulk_transfers_are_byte_identical_in_a_network_namespace";
    if !netns_or_skip(test, &TOOLS) {
        return;
    }
    let ns = Netns::new("bulk");
    let status = ns.run_test("inside_a_namespace", Duration::from_secs(120));
    assert!(status.success(), "inner namespace test failed: {status}");
}

/// 64 MiB each way per case; by hand:
/// `cargo test -p bulk --test netns -- --ignored full_size`.
#[test]
#[ignore = "64 MiB each way per case: minutes; run by hand"]
fn full_size_bulk_transfers_are_byte_identical() {
    if !netns_or_skip("full_size_bulk_transfers_are_byte_identical", &TOOLS) {
        return;
    }
    let ns = Netns::new("bulkfull");
    let status = ns.run_test("inside_a_namespace_full", Duration::from_secs(900));
    assert!(status.success(), "inner namespace test failed: {status}");
}

#[test]
#[ignore = "run by bulk_transfers_are_byte_identical_in_a_network_namespace inside a namespace"]
fn inside_a_namespace() {
    netns::inside().expect("run by bulk_transfers_are_byte_identical_in_a_network_namespace");
    run_cases(cases(4), Duration::from_secs(100));
}

#[test]
#[ignore = "run by full_size_bulk_transfers_are_byte_identical inside a namespace"]
fn inside_a_namespace_full() {
    netns::inside().expect("run by full_size_bulk_transfers_are_byte_identical");
    run_cases(cases(64), Duration::from_secs(850));
}

fn run_cases(cases: Vec<Case>, limit: Duration) {
    let result = block_on(
        platform(),
        timeout(limit, async {
            for (i, case) in cases.into_iter().enumerate() {
                let ifname = format!("kiln{i}");
                let host = format!("10.81.{i}.1");
                let guest = format!("10.81.{i}.2");
                // The host side first: the tap takes its MTU when attached.
                netns::ip(&["tuntap", "add", "dev", &ifname, "mode", "tap"]);
                netns::ip(&["link", "set", &ifname, "mtu", &case.mtu.to_string()]);
                let options = TapOptions {
                    offloads: case.offloads,
                };
                let mac = MacAddress([0x02, 0x6b, 0x62, 0x75, 0x6c, i as u8]);
                let service =
                    Tap::open_with(platform(), "service", &ifname, Some(mac), options).unwrap();
                netns::address(&ifname, &format!("{host}/24"), None);
                if case.host_refuses {
                    let off = Command::new("ethtool")
                        .args(["-K", &ifname, "tx", "off", "sg", "off", "tso", "off"])
                        .status()
                        .expect("ethtool");
                    assert!(off.success(), "ethtool -K failed");
                }
                if case.loss > 0 {
                    let p = format!("0.{:02}", case.loss);
                    for (chain, dir) in [("OUTPUT", "-o"), ("INPUT", "-i")] {
                        let drop = Command::new("iptables")
                            .args(["-A", chain, dir, &ifname, "-m", "statistic"])
                            .args(["--mode", "random", "--probability", &p, "-j", "DROP"])
                            .status()
                            .expect("iptables");
                        assert!(drop.success(), "iptables failed");
                    }
                }
                let args = [format!("--ipv4={guest}/24"), "--no-slaac".into()];
                let (config, _) = Config::extract(args.iter().map(String::as_str)).unwrap();
                let stack = NetStack::new(service, config, 0x62_75_6c + i as u64).unwrap();
                kiln_rt::spawn(bulk::start(
                    stack,
                    Console::stdout(),
                    5201,
                    5202,
                    1024 * 1024,
                    1024 * 1024,
                ));
                let name = case.name;
                let r = in_thread(limit, move || host_side(&guest, &case))
                    .await
                    .unwrap_or_else(|| Err("the host side did not finish".into()));
                if let Err(e) = r {
                    return Err(format!("{name}: {e}"));
                }
                eprintln!("bulk: {name}: ok");
            }
            Ok(())
        }),
    );
    result
        .expect("the namespace test timed out")
        .unwrap_or_else(|e: String| panic!("{e}"));
}

fn host_side(guest: &str, case: &Case) -> Result<(), String> {
    let echoed = echo(guest, case.bytes)?;
    if case.iperf {
        for reverse in [false, true] {
            let rate = iperf3(guest, reverse)?;
            eprintln!(
                "bulk: {}: iperf3{}: {:.0} Mbit/s",
                case.name,
                if reverse { " -R" } else { "" },
                rate / 1e6
            );
        }
    }
    eprintln!("bulk: {}: {echoed} bytes echoed", case.name);
    Ok(())
}

/// Sends `len` bytes of noise to the echo port while reading them back;
/// both SHA-256 digests must match. Returns the bytes read back.
fn echo(guest: &str, len: usize) -> Result<usize, String> {
    let addr = format!("{guest}:5202");
    let mut conn = connect(&addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut writer = conn.try_clone().map_err(|e| e.to_string())?;
    let sender = std::thread::spawn(move || -> Result<[u8; 32], String> {
        let mut hash = Sha256::new();
        let mut x: u64 = 0x6b69_6c6e_6275_6c6b;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            for b in &mut chunk[..n] {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            writer.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
            hash.update(&chunk[..n]);
            left -= n;
        }
        writer
            .shutdown(Shutdown::Write)
            .map_err(|e| e.to_string())?;
        Ok(hash.finalize().into())
    });
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                got += n;
            }
            Err(e) => return Err(format!("reading the echo after {got} bytes: {e}")),
        }
    }
    let sent = sender.join().map_err(|_| "the sender panicked")??;
    let back: [u8; 32] = hash.finalize().into();
    if got != len || sent != back {
        return Err(format!(
            "sent {len} bytes, got {got} back; SHA-256 {} vs {}",
            hex(&sent),
            hex(&back)
        ));
    }
    Ok(got)
}

fn connect(addr: &str) -> Result<TcpStream, String> {
    let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut last = String::new();
    // The stack may still be resolving the host's address.
    for _ in 0..50 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(c) => return Ok(c),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("cannot connect to {addr}: {last}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// One second of `iperf3 -c` (`-R`: the unikernel sends); the receiver's
/// bits per second.
fn iperf3(guest: &str, reverse: bool) -> Result<f64, String> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", guest, "-t", "1", "-J"]);
    if reverse {
        cmd.arg("-R");
    }
    let out = kiln_testsupport::process::run(&mut cmd, Duration::from_secs(30))
        .map_err(|e| format!("iperf3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("iperf3 failed: {text}"));
    }
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("iperf3's JSON: {e}: {text}"))?;
    let received = &json["end"]["sum_received"];
    let bytes = received["bytes"].as_u64().unwrap_or(0);
    let bps = received["bits_per_second"].as_f64().unwrap_or(0.0);
    if bytes == 0 || bps <= 0.0 {
        return Err(format!("iperf3 moved nothing: {text}"));
    }
    Ok(bps)
}
