//! Benchmarks of the unix platform: timer overshoot, TCP round trips and
//! bulk throughput over loopback. Run with `cargo bench -p kiln-unix`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kiln_devices::{Stack, TcpListener as _, TcpStream as _};
use kiln_rt::{block_on, sleep, spawn};
use kiln_unix::{SocketStack, platform};

fn report(name: &str, value: f64, unit: &str) {
    println!("{name:<44} {value:>12.1} {unit}");
}

async fn timer_overshoot() {
    let mut overshoot = Vec::new();
    for _ in 0..200 {
        let d = Duration::from_micros(500);
        let start = Instant::now();
        sleep(d).await;
        overshoot.push(start.elapsed().saturating_sub(d).as_secs_f64() * 1e6);
    }
    overshoot.sort_by(f64::total_cmp);
    report("sleep(500us) overshoot, median", overshoot[100], "us");
    report("sleep(500us) overshoot, p99", overshoot[198], "us");
}

async fn tcp() {
    let stack = SocketStack::new(platform());
    let listener = stack
        .listen_tcp("127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr();
    spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });

    let mut client = stack.connect_tcp(addr).await.unwrap();
    let rounds = 20_000;
    let start = Instant::now();
    let mut byte = [0u8; 1];
    for _ in 0..rounds {
        client.write_all(b"x").await.unwrap();
        client.read(&mut byte).await.unwrap();
    }
    report(
        "TCP 1-byte round trips",
        rounds as f64 / start.elapsed().as_secs_f64(),
        "per s",
    );

    let chunk = vec![7u8; 64 * 1024];
    let mut back = vec![0u8; 64 * 1024];
    let total = 256 * chunk.len();
    let start = Instant::now();
    for _ in 0..256 {
        client.write_all(&chunk).await.unwrap();
        let mut got = 0;
        while got < chunk.len() {
            got += client.read(&mut back[got..]).await.unwrap();
        }
    }
    report(
        "TCP echo throughput, 64 KiB lockstep",
        total as f64 / start.elapsed().as_secs_f64() / 1e6,
        "MB/s",
    );
}

fn main() {
    block_on(platform(), async {
        timer_overshoot().await;
        tcp().await;
    });
}
