//! A real crash test: a child process runs a write-heavy workload on a
//! `LogStore` over a file and prints each acknowledged write; the test
//! kills it with SIGKILL at random moments, reopens the store, and checks
//! that every acknowledged write is there and the one in flight is either
//! wholly there or not at all.
//!
//! The child is this test binary itself, re-run with `crash_child` and
//! `KILN_STORE_CRASH_CHILD` set. 20 kills by default, 200 with
//! `KILN_FULL_TESTS=1`.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_devices::{KvError, KvRo, KvRw};
use kiln_store::LogStore;
use kiln_unix::FileBlock;

const CHILD: &str = "KILN_STORE_CRASH_CHILD";
const KEYS: u64 = 16;

/// The value written by operation `i`: its length varies from empty to
/// several sectors, and its bytes say which operation wrote them.
fn value(i: u64) -> Vec<u8> {
    let len = (i.wrapping_mul(2_654_435_761) % 3000) as usize;
    let tag = i.to_le_bytes();
    (0..len).map(|j| tag[j % 8] ^ (j as u8)).collect()
}

fn key(i: u64) -> String {
    format!("dir{}/k{}", i % 3, i % KEYS)
}

/// Operation `i` removes its key one time in eight, sets it otherwise.
fn is_remove(i: u64) -> bool {
    i % 8 == 7
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    kiln_rt::block_on(kiln_unix::platform(), f)
}

fn open(path: &str, sector_size: u32) -> LogStore<FileBlock> {
    let block = FileBlock::open(kiln_unix::platform(), "data", path, sector_size).unwrap();
    run(LogStore::open("data", block)).unwrap_or_else(|e| panic!("{e}"))
}

/// The workload, when run as the child: operations `start..`, each
/// acknowledged on stdout once `set`/`remove` has returned.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD) else {
        return;
    };
    let start: u64 = std::env::var("KILN_STORE_START").unwrap().parse().unwrap();
    let sector_size: u32 = std::env::var("KILN_STORE_SECTOR").unwrap().parse().unwrap();
    let store = open(&path, sector_size);
    let mut out = std::io::stdout().lock();
    let began = Instant::now();
    run(async {
        // Bounded: the parent kills it long before either limit.
        for i in start..start + 1_000_000 {
            if began.elapsed() > Duration::from_secs(30) {
                break;
            }
            let result = if is_remove(i) {
                match store.remove(&key(i)).await {
                    Err(KvError::NotFound) => Ok(()),
                    other => other,
                }
            } else {
                store.set(&key(i), &value(i)).await
            };
            result.unwrap_or_else(|e| panic!("operation {i}: {e}"));
            writeln!(out, "ack {i}").unwrap();
            out.flush().unwrap();
        }
    });
}

/// A child process killed when dropped (if the test fails early).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn kill_repeatedly(sector_size: u32, sectors: u64, iterations: usize, deadline: Duration) {
    // Removed when dropped.
    let file = tempfile::Builder::new()
        .prefix(&format!("kiln-store-crash-{sector_size}-"))
        .suffix(".img")
        .tempfile()
        .unwrap()
        .into_temp_path();
    std::fs::write(
        &file,
        vec![0u8; (sectors * u64::from(sector_size)) as usize],
    )
    .unwrap();
    let path = file.to_str().unwrap().to_string();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test: seed {seed}, {iterations} kills, {sector_size}-byte sectors");
    let mut rng = Rng(seed);
    // What the store must hold: key -> the operation that last wrote it.
    let mut model: BTreeMap<String, u64> = BTreeMap::new();
    let mut next = 0u64;
    let began = Instant::now();
    let mut acks_total = 0;
    for iteration in 0..iterations {
        assert!(
            began.elapsed() < deadline,
            "crash test over its time budget after {iteration} kills"
        );
        let mut child = Child(
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
                .env(CHILD, &path)
                .env("KILN_STORE_START", next.to_string())
                .env("KILN_STORE_SECTOR", sector_size.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut stdout = child.0.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stdout.read_to_end(&mut all);
            all
        });
        // Kill at a random moment: mostly during the workload, sometimes
        // while the child is still starting or opening the store.
        std::thread::sleep(Duration::from_micros(rng.below(100_000) + 2_000));
        child.0.kill().unwrap();
        let status = child.0.wait().unwrap();
        assert!(
            !status.success(),
            "the child finished its workload before being killed"
        );
        let output = reader.join().unwrap();
        // Only whole lines: the last may have been cut by the kill.
        let text = String::from_utf8_lossy(&output);
        let whole = text.rsplit_once('\n').map_or("", |(w, _)| w);
        let acked: Vec<u64> = whole
            .lines()
            // The first may follow libtest's `test crash_child ... `.
            .filter_map(|l| l.find("ack ").and_then(|at| l.get(at + 4..)))
            .map(|n| n.parse().unwrap())
            .collect();
        for (n, &i) in acked.iter().enumerate() {
            assert_eq!(i, next + n as u64, "acknowledgements out of order");
            if is_remove(i) {
                model.remove(&key(i));
            } else {
                model.insert(key(i), i);
            }
        }
        acks_total += acked.len();
        // The operation in flight at the kill, if the child got that far.
        let in_flight = next + acked.len() as u64;
        let store = open(&path, sector_size);
        run(async {
            let mut applied = false;
            for k in 0..KEYS {
                for d in 0..3 {
                    let key = format!("dir{d}/k{k}");
                    let found = match store.get(&key).await {
                        Ok(v) => Some(v.into_owned()),
                        Err(KvError::NotFound) => None,
                        Err(e) => panic!("kill {iteration}: {key}: {e}"),
                    };
                    let expected = model.get(&key).map(|&i| value(i));
                    if found == expected {
                        continue;
                    }
                    // Only the operation in flight may differ, and only as
                    // a whole.
                    let flight_key = crate::key(in_flight);
                    let with_flight = if is_remove(in_flight) {
                        None
                    } else {
                        Some(value(in_flight))
                    };
                    assert!(
                        key == flight_key && found == with_flight,
                        "kill {iteration} (seed {seed}): {key} holds {:?} bytes, acknowledged {:?}, in flight op {in_flight} on {flight_key}",
                        found.as_ref().map(Vec::len),
                        expected.as_ref().map(Vec::len),
                    );
                    applied = true;
                }
            }
            if applied {
                if is_remove(in_flight) {
                    model.remove(&key(in_flight));
                } else {
                    model.insert(key(in_flight), in_flight);
                }
            }
        });
        drop(store);
        // Skip past the in-flight operation so that its number is never
        // reused with another outcome.
        next = in_flight + 1;
    }
    eprintln!(
        "crash test: {iterations} kills, {acks_total} acknowledged writes checked, {:?}",
        began.elapsed()
    );
    assert!(
        acks_total > iterations,
        "the kills came too early to test anything"
    );
}

fn iterations() -> (usize, Duration) {
    if std::env::var("KILN_FULL_TESTS").as_deref() == Ok("1") {
        (200, Duration::from_secs(600))
    } else {
        (20, Duration::from_secs(120))
    }
}

#[test]
fn sigkill_at_random_moments_512() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let (n, deadline) = iterations();
    // 256 KiB: regions of 255 sectors, so the workload compacts often.
    kill_repeatedly(512, 512, n, deadline);
}

#[test]
fn sigkill_at_random_moments_4096() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let (n, deadline) = iterations();
    kill_repeatedly(4096, 128, n, deadline);
}
