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

/// CPU time this thread has used: the machine may be shared, and wall time
/// then counts the time others ran.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `clients` connections each sending `per_client` requests for `/`, one
/// at a time, to www with metrics on or off; returns the wall time and
/// the CPU time.
fn run(
    clients: usize,
    per_client: usize,
    metrics: bool,
) -> (std::time::Duration, std::time::Duration) {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    let start = WallInstant::now();
    let cpu = thread_cpu();
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
        let options = www::Options {
            metrics_path: metrics.then(|| "/metrics".to_string()),
            ..www::Options::new(80, 512)
        };
        spawn(www::run(server, htdocs, kiln_devices::NoShutdown, options));
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
    (start.elapsed(), thread_cpu() - cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    for (clients, per_client) in [(1, 20_000), (100, 200)] {
        let total = clients as f64 * per_client as f64;
        // Metrics off and on in turn, seven times: the ratio of the
        // medians is the cost of counting and timing each response.
        let (mut off, mut on) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for _ in 0..7 {
            for (metrics, got) in [(false, &mut off), (true, &mut on)] {
                let (wall, cpu) = run(clients, per_client, metrics);
                got[0].push(total / wall.as_secs_f64());
                got[1].push(total / cpu.as_secs_f64());
            }
        }
        let [off_wall, off_cpu] = off.map(median);
        let [on_wall, on_cpu] = on.map(median);
        println!(
            "www, GET / ({} bytes), {clients} keep-alive connection(s) x {per_client}: \
             {off_cpu:.0} requests per CPU second, {on_cpu:.0} with --metrics-path ({:.3}x); \
             wall: {off_wall:.0} and {on_wall:.0} requests/s ({:.3}x)",
            INDEX.len(),
            on_cpu / off_cpu,
            on_wall / off_wall,
        );
    }
}
