//! Bulk TCP throughput and connection rate between two stacks joined by an
//! in-memory wire. Timers run on virtual time, so the numbers are the CPU
//! cost of the stack (smoltcp, the driver, the socket handles) alone.

use std::cell::Cell;
use std::time::{Duration, Instant as WallInstant};

use kiln_devices::{Instant, MacAddress, Stack, TcpListener as _, TcpStream as _};
use kiln_net::pair::pair;
use kiln_net::{Config, NetStack};
use kiln_rt::{Platform, block_on, spawn};

#[derive(Default)]
struct VirtualPlatform {
    now: Cell<u64>,
}

impl Platform for VirtualPlatform {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.now.get())
    }
    fn wait(&self, deadline: Option<Instant>) {
        let d = deadline.expect("deadlock");
        self.now.set(self.now.get().max(d.as_nanos()));
    }
}

fn stacks() -> (NetStack, NetStack) {
    let (a, b) = pair(
        MacAddress([2, 0, 0, 0, 0, 1]),
        MacAddress([2, 0, 0, 0, 0, 2]),
    );
    let cfg = |ip: &str| Config::parse([ip, "--no-slaac"]).unwrap();
    (
        NetStack::new(a, cfg("--ipv4=10.0.0.1/24"), 1).unwrap(),
        NetStack::new(b, cfg("--ipv4=10.0.0.2/24"), 2).unwrap(),
    )
}

/// Sends `total` bytes from B to a sink on A; returns (wall time, virtual
/// time).
fn bulk(total: usize) -> (Duration, Duration) {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    let start = WallInstant::now();
    let virt = block_on(platform, async move {
        let (a, b) = stacks();
        let listener = a.listen_tcp("0.0.0.0:9".parse().unwrap()).await.unwrap();
        let sink = spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 65536];
            let mut got = 0;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                got += n;
            }
        });
        let mut s = b.connect_tcp("10.0.0.1:9".parse().unwrap()).await.unwrap();
        let chunk = vec![0x5a; 65536];
        let mut sent = 0;
        while sent < total {
            let n = (total - sent).min(chunk.len());
            s.write_all(&chunk[..n]).await.unwrap();
            sent += n;
        }
        s.shutdown().await.unwrap();
        assert_eq!(sink.await, total);
        Duration::from_nanos(kiln_rt::time::now().as_nanos())
    });
    (start.elapsed(), virt)
}

/// Opens `count` connections one after another, each sending a small
/// request and reading a small reply; returns the wall time.
fn connections(count: usize) -> Duration {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    let start = WallInstant::now();
    block_on(platform, async move {
        let (a, b) = stacks();
        let listener = a.listen_tcp("0.0.0.0:80".parse().unwrap()).await.unwrap();
        spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                spawn(async move {
                    let mut buf = [0; 64];
                    if let Ok(n) = s.read(&mut buf).await {
                        let _ = s.write_all(&buf[..n]).await;
                    }
                });
            }
        });
        for _ in 0..count {
            let mut s = b.connect_tcp("10.0.0.1:80".parse().unwrap()).await.unwrap();
            s.write_all(b"ping").await.unwrap();
            let mut buf = [0; 64];
            assert_eq!(s.read(&mut buf).await.unwrap(), 4);
        }
    });
    start.elapsed()
}

fn main() {
    let total = 256 << 20;
    let (wall, virt) = bulk(total);
    println!(
        "bulk TCP, 256 MiB one way: {:.3} s wall, {:.0} MiB/s (virtual time {:.3} s)",
        wall.as_secs_f64(),
        (total >> 20) as f64 / wall.as_secs_f64(),
        virt.as_secs_f64()
    );
    let count = 5000;
    let wall = connections(count);
    println!(
        "TCP connect + 4-byte echo, {count} in sequence: {:.3} s wall, {:.0} connections/s",
        wall.as_secs_f64(),
        count as f64 / wall.as_secs_f64()
    );
}
