//! Requests per second: clients on one kiln-net stack send keep-alive GETs
//! to www on another, over an in-memory wire, with timers on virtual time.

use std::cell::Cell;
use std::time::Instant as WallInstant;

use kiln_baked::{Baked, Entry, digest_of};
use kiln_devices::{Instant, MacAddress, Stack, TcpStream as _};
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

const INDEX: &[u8] = include_bytes!("../htdocs/index.html");

/// `clients` connections each sending `per_client` requests for `/`, one
/// at a time; returns the wall time.
fn run(clients: usize, per_client: usize) -> std::time::Duration {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    let start = WallInstant::now();
    block_on(platform, async move {
        let (a, b) = kiln_net::pair::pair(
            MacAddress([2, 0, 0, 0, 0, 1]),
            MacAddress([2, 0, 0, 0, 0, 2]),
        );
        let cfg = |ip: &str| kiln_net::Config::parse([ip, "--no-slaac"]).unwrap();
        let server = kiln_net::NetStack::new(a, cfg("--ipv4=10.0.0.1/24"), 1).unwrap();
        let client = kiln_net::NetStack::new(b, cfg("--ipv4=10.0.0.2/24"), 2).unwrap();
        let entries = vec![Entry {
            path: "index.html",
            data: INDEX,
            digest: digest_of(INDEX),
        }];
        let htdocs = Baked::new(Box::leak(entries.into_boxed_slice())).unwrap();
        spawn(www::start(server, htdocs, 80, 512));
        kiln_rt::sleep(std::time::Duration::from_millis(1)).await;
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let client = client.clone();
                spawn(async move {
                    let mut s = client
                        .connect_tcp("10.0.0.1:80".parse().unwrap())
                        .await
                        .unwrap();
                    let mut buf = vec![0; 8192];
                    for _ in 0..per_client {
                        s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                            .await
                            .unwrap();
                        // Read one whole response: head, then Content-Length.
                        let mut got = 0;
                        let mut need = usize::MAX;
                        while got < need {
                            let n = s.read(&mut buf[got..]).await.unwrap();
                            assert!(n > 0, "server closed");
                            got += n;
                            if need == usize::MAX
                                && let Some(end) =
                                    buf[..got].windows(4).position(|w| w == b"\r\n\r\n")
                            {
                                need = end + 4 + INDEX.len();
                            }
                        }
                        assert_eq!(got, need);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    });
    start.elapsed()
}

fn main() {
    for (clients, per_client) in [(1, 20_000), (100, 200)] {
        let wall = run(clients, per_client);
        let total = clients * per_client;
        println!(
            "www, GET / ({} bytes), {clients} keep-alive connection(s) x {per_client}: {:.3} s wall, {:.0} requests/s",
            INDEX.len(),
            wall.as_secs_f64(),
            total as f64 / wall.as_secs_f64()
        );
    }
}
