//! Benchmarks: LogStore set and get rates over a file-backed block device
//! with 512-byte and 4 KiB sectors, and the sequential throughput of the
//! file block device itself with 512-byte and 64 KiB requests. Each figure
//! is the median of several runs. Run with `cargo bench -p kiln-store`;
//! the temporary files go to `$TMPDIR` (the file system matters: every
//! `set` ends with an fsync).

use std::path::PathBuf;
use std::time::Instant;

use kiln_devices::{Block, KvRo, KvRw};
use kiln_store::LogStore;
use kiln_unix::FileBlock;

const RUNS: usize = 5;

fn report(name: &str, runs: &mut [f64], unit: &str) {
    runs.sort_by(f64::total_cmp);
    let median = runs[runs.len() / 2];
    println!(
        "{name:<48} {median:>12.1} {unit}   (min {:.1}, max {:.1}, {} runs)",
        runs[0],
        runs[runs.len() - 1],
        runs.len()
    );
}

struct TempFile(PathBuf);

impl TempFile {
    /// A file of `bytes` zeros, written out and synced (not sparse), so
    /// that timed writes do not allocate blocks.
    fn zeroed(tag: &str, bytes: u64) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("kiln-store-bench-{tag}-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &file, &vec![0u8; bytes as usize]).unwrap();
        file.sync_all().unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn block(file: &TempFile, sector_size: u32) -> FileBlock {
    FileBlock::open(
        kiln_unix::platform(),
        "bench",
        file.0.to_str().unwrap(),
        sector_size,
    )
    .unwrap()
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    kiln_rt::block_on(kiln_unix::platform(), f)
}

/// `set` and `get` rates for values of `value_len` bytes over 1000 keys.
fn log_store(sector_size: u32, value_len: usize) {
    let (mut sets, mut gets) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let file = TempFile::zeroed("log", 16 << 20);
        let store = run(LogStore::open("bench", block(&file, sector_size))).unwrap();
        let value = vec![0x5a; value_len];
        let n = 2000;
        let start = Instant::now();
        run(async {
            for i in 0..n {
                store.set(&format!("k{}", i % 1000), &value).await.unwrap();
            }
        });
        sets.push(n as f64 / start.elapsed().as_secs_f64());
        let start = Instant::now();
        let reads = 20_000;
        run(async {
            for i in 0..reads {
                let v = store.get(&format!("k{}", i % 1000)).await.unwrap();
                assert_eq!(v.len(), value_len);
            }
        });
        gets.push(reads as f64 / start.elapsed().as_secs_f64());
    }
    let name = format!("LogStore {sector_size} B sectors, {value_len} B values");
    report(&format!("{name}: set (durable)"), &mut sets, "ops/s");
    report(&format!("{name}: get"), &mut gets, "ops/s");
}

/// Sequential write (then one flush) and read of 64 MiB in `request`-byte
/// requests.
fn file_block(request: usize) {
    let total: u64 = 64 << 20;
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let file = TempFile::zeroed("seq", total);
        let dev = block(&file, 512);
        let sectors_per = (request / 512) as u64;
        let mut buf = vec![0xa5u8; request];
        let count = total / request as u64;
        let start = Instant::now();
        run(async {
            for i in 0..count {
                dev.write(i * sectors_per, &buf).await.unwrap();
            }
            dev.flush().await.unwrap();
        });
        writes.push(total as f64 / start.elapsed().as_secs_f64() / (1 << 20) as f64);
        let start = Instant::now();
        run(async {
            for i in 0..count {
                dev.read(i * sectors_per, &mut buf).await.unwrap();
            }
        });
        reads.push(total as f64 / start.elapsed().as_secs_f64() / (1 << 20) as f64);
    }
    report(
        &format!("FileBlock sequential write+fsync, {request} B requests"),
        &mut writes,
        "MiB/s",
    );
    report(
        &format!("FileBlock sequential read, {request} B requests"),
        &mut reads,
        "MiB/s",
    );
}

/// One-sector writes, each followed by a flush, at consecutive sectors:
/// the device-level cost under every small durable `set`.
fn durable_sector_writes(sector_size: u32) {
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let file = TempFile::zeroed("sync", 16 << 20);
        let dev = block(&file, sector_size);
        let buf = vec![0x3cu8; sector_size as usize];
        let n = 2000;
        let start = Instant::now();
        run(async {
            for i in 0..n {
                dev.write(i, &buf).await.unwrap();
                dev.flush().await.unwrap();
            }
        });
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    report(
        &format!("FileBlock {sector_size} B write + fsync, consecutive"),
        &mut rates,
        "ops/s",
    );
}

fn main() {
    durable_sector_writes(512);
    durable_sector_writes(4096);
    for sector_size in [512, 4096] {
        log_store(sector_size, 100);
        log_store(sector_size, 4000);
    }
    file_block(512);
    file_block(64 * 1024);
}
