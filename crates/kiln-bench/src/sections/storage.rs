//! storage: block throughput, store changes per second and SIGKILL crash iterations per target
//! (virtio: block throughput in 64 KiB requests only, on QEMU's microvm, `sections::virtio`
//! building and running blockbench).
//!
//! `examples/blockbench --mode bench` times its own sequential writes (then
//! one flush) and reads with the monotonic clock, in 512 B and 64 KiB
//! requests, 256 in flight at a time (its default `--depth`; 16 of 64 KiB), and prints
//! MiB/s; hvt runs it twice, with kiln's BLOCK_EXCHANGE and with
//! `KILN_HVT_NO_EXTENSIONS=1` (one exit per request); the baseline is the same I/O from this
//! host process (`pwrite`/`pread` on a file, then `fdatasync`). `examples/
//! notes --churn` makes numbered `set`/`remove` changes, each flushed, and
//! prints the time they took; the baseline is a host loop writing and
//! `fdatasync`ing one 1 KiB record per change. The crash rows run notes'
//! crash-test mode a bounded number of times, SIGKILLing it at a random
//! moment and checking every acknowledged change after the restart (the
//! full test is `crates/kiln/tests/store_targets.rs`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Prepared, progress, runnable};
use crate::error::BenchError;
use crate::exec::{self, Context};
use crate::report::{Baseline, Row, Status};
use crate::setup::{self, Availability, Built, Variant};

const SECTION: &str = "storage";
/// The targets measured.
pub const VARIANTS: [Variant; 3] = [Variant::Unix, Variant::Hvt, Variant::Spt];
/// Size of the device the block figures use.
const DEVICE_MIB: u64 = 16;
/// Longest one run may take.
const LIMIT: Duration = Duration::from_secs(120);

/// The command line running `b` with `blocks` attached, then `args`.
fn argv(b: &Built, blocks: &[String], args: &[&str]) -> Vec<OsString> {
    let mut a = Vec::new();
    if let Some(tender) = &b.tender {
        a.push(tender.as_os_str().to_owned());
        a.extend(blocks.iter().map(OsString::from));
        a.push(b.image.as_os_str().to_owned());
    } else {
        a.push(b.image.as_os_str().to_owned());
        a.extend(blocks.iter().map(OsString::from));
    }
    a.extend(args.iter().map(OsString::from));
    a
}

fn zero_file(path: &Path, len: u64) -> Result<(), BenchError> {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(len))
        .map_err(|e| BenchError::io("create", path, e))
}

/// kiln-hvt's switch that hides its extensions (`kiln_hvt::NO_EXTENSIONS_ENV`).
const NO_EXTENSIONS: &str = "KILN_HVT_NO_EXTENSIONS";

/// Runs `argv` and returns its stdout, or the error.
fn stdout_of(argv: &[OsString]) -> Result<String, BenchError> {
    stdout_in(argv, Context::default())
}

/// Runs `argv` in `ctx` and returns its stdout, or the error.
fn stdout_in(argv: &[OsString], ctx: Context<'_>) -> Result<String, BenchError> {
    let f = exec::run(argv, ctx, LIMIT)?;
    if !f.status.success() {
        return Err(BenchError::Setup(format!(
            "`{}` failed ({}): {}{}",
            exec::show(argv),
            f.status,
            f.stdout.trim(),
            f.stderr.trim()
        )));
    }
    Ok(f.stdout)
}

/// The MiB/s of blockbench's line starting with `what`.
fn mibps(out: &str, what: &str) -> Result<f64, BenchError> {
    out.lines()
        .find(|l| l.starts_with(what))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            BenchError::Setup(format!("no '{what}' figure in blockbench's output: {out}"))
        })
}

/// Host baseline: sequential `pwrite` of the device in `size`-byte
/// requests, `fdatasync`, then `pread`; (write, read) MiB/s.
fn host_io(path: &Path, size: usize) -> Result<(f64, f64), BenchError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| BenchError::io("open", path, e))?;
    let total = DEVICE_MIB << 20;
    let mut buf: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let requests = total / size as u64;
    let started = Instant::now();
    for r in 0..requests {
        file.write_all_at(&buf, r * size as u64)
            .map_err(|e| BenchError::io("write", path, e))?;
    }
    file.sync_data()
        .map_err(|e| BenchError::io("sync", path, e))?;
    let write = total as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for r in 0..requests {
        file.read_exact_at(&mut buf, r * size as u64)
            .map_err(|e| BenchError::io("read", path, e))?;
    }
    let read = total as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();
    Ok((write, read))
}

/// Host baseline: `changes` 1 KiB appends, each `fdatasync`ed; per second.
fn host_changes(path: &Path, changes: u32) -> Result<f64, BenchError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| BenchError::io("open", path, e))?;
    let record = [0x6bu8; 1024];
    let started = Instant::now();
    for i in 0..u64::from(changes) {
        file.write_all_at(&record, (i % 256) * 1024)
            .map_err(|e| BenchError::io("write", path, e))?;
        file.sync_data()
            .map_err(|e| BenchError::io("sync", path, e))?;
    }
    Ok(f64::from(changes) / started.elapsed().as_secs_f64())
}

/// The value notes sets for change `n` (`examples/notes/src/crash.rs`).
fn crash_value(n: u32) -> String {
    let len = 1 + (n.wrapping_mul(37) % 1000) as usize;
    format!("{n}.").chars().cycle().take(len).collect()
}

/// Whole lines of `reader`, through a channel.
fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        loop {
            let mut buf = Vec::new();
            match reader.read_until(b'\n', &mut buf) {
                Ok(n) if n > 0 && buf.last() == Some(&b'\n') => {
                    buf.pop();
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
    });
    rx
}

/// Runs notes' crash-test mode `iterations` times with SIGKILL at a random
/// moment (0 to `max_ms` ms after it has listed the store); (iterations,
/// failures).
fn crash(b: &Built, image: &Path, iterations: u32, max_ms: u64) -> Result<(u32, u32), BenchError> {
    zero_file(image, 128 << 10)?;
    let blocks = [format!("--block:data={}", image.display())];
    let mut acked: BTreeMap<String, Option<u32>> = BTreeMap::new();
    let mut in_flight: Option<(String, Option<u32>)> = None;
    let mut last = 0u32;
    let mut rng = 0x6b69_6c6e_u64 ^ u64::from(std::process::id());
    let (mut done, mut failures) = (0, 0);
    for i in 0..=iterations {
        let from = (last + 1).to_string();
        let churn = if i < iterations { "1000000" } else { "0" };
        let a = argv(b, &blocks, &["--state", "--churn", churn, "--from", &from]);
        let mut child = Command::new(&a[0])
            .args(&a[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot start `{}`: {e}", exec::show(&a))))?;
        let rx = lines(
            child
                .stdout
                .take()
                .ok_or_else(|| BenchError::Setup("no stdout".into()))?,
        );
        let mut found = BTreeMap::new();
        let mut ready = false;
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
            if line == "ready" {
                ready = true;
                break;
            }
            if let Some((k, v)) = line.strip_prefix("have ").and_then(|r| r.split_once(' ')) {
                found.insert(k.to_string(), v.to_string());
            }
        }
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Setup(format!(
                "iteration {i}: the restarted notes did not list its store"
            )));
        }
        let mut keys: Vec<String> = acked.keys().chain(found.keys()).cloned().collect();
        keys.sort();
        keys.dedup();
        let mut wrong = false;
        let mut next = BTreeMap::new();
        for key in keys {
            let mut allowed = vec![acked.get(&key).copied().flatten()];
            if let Some((k, v)) = &in_flight
                && *k == key
            {
                allowed.push(*v);
            }
            let got = found.get(&key);
            let hit = allowed.iter().find(|a| match (a, got) {
                (None, None) => true,
                (Some(n), Some(v)) => crash_value(*n) == *v,
                _ => false,
            });
            let now = match hit {
                Some(a) => *a,
                None => {
                    wrong = true;
                    got.and_then(|v| v.split('.').next()?.parse().ok())
                }
            };
            if now.is_some() {
                next.insert(key, now);
            }
        }
        failures += u32::from(wrong);
        acked = next;
        in_flight = None;
        if i == iterations {
            let _ = child.wait();
            break;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % (max_ms + 1)));
        let _ = child.kill();
        let _ = child.wait();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
            let w: Vec<&str> = line.split(' ').collect();
            if let [what, op, key, n] = w[..]
                && let Ok(n) = n.parse::<u32>()
            {
                last = last.max(n);
                let v = (op == "set").then_some(n);
                match what {
                    "try" => in_flight = Some((key.to_string(), v)),
                    "ack" => {
                        acked.insert(key.to_string(), v);
                        in_flight = None;
                    }
                    _ => {}
                }
            }
        }
        done += 1;
    }
    Ok((done, failures))
}

fn failed(name: &str, target: &str, unit: &'static str, e: &BenchError) -> Row {
    Row::missing(SECTION, name, target, unit, Status::Failed(e.to_string()))
}

/// Runs the storage section.
pub fn run(p: &Prepared) -> Vec<Row> {
    let env = &p.env;
    let mut rows = Vec::new();
    let work = env.work.join("storage");
    if let Err(e) = std::fs::create_dir_all(&work) {
        let e = BenchError::io("create", &work, e);
        return vec![failed("storage", "-", "-", &e)];
    }
    let device = work.join("device.img");
    let extra = work.join("extra.img");

    // Host baselines.
    progress("storage: host baselines");
    let mut io_base: BTreeMap<usize, (Option<Baseline>, Option<Baseline>)> = BTreeMap::new();
    for size in SIZES {
        let r = zero_file(&device, DEVICE_MIB << 20).and_then(|()| host_io(&device, size));
        let label = if size == 512 { "512 B" } else { "64 KiB" };
        let (w, r) = match r {
            Ok((w, r)) => (
                Some(Baseline {
                    name: format!("host pwrite loop, {label} requests"),
                    value: w,
                }),
                Some(Baseline {
                    name: format!("host pread loop, {label} requests"),
                    value: r,
                }),
            ),
            Err(_) => (None, None),
        };
        io_base.insert(size, (w, r));
    }
    let changes: u32 = if p.counts.quick { 100 } else { 500 };
    let change_base = zero_file(&device, 1 << 20)
        .and_then(|()| host_changes(&device, changes))
        .ok()
        .map(|v| Baseline {
            name: "host 1 KiB pwrite + fdatasync".into(),
            value: v,
        });
    let crash_iterations: u32 = if p.counts.quick { 5 } else { 20 };

    for variant in VARIANTS {
        let t = variant.name();
        let built = |all: &[(Variant, Availability)]| {
            let a = all.iter().find(|(v, _)| *v == variant).map_or_else(
                || Availability::Broken("not prepared".into()),
                |(_, a)| a.clone(),
            );
            with_kvm(a, variant)
        };
        let (bb, nb) = (built(&p.blockbench), built(&p.notes));

        progress(&format!("storage: block throughput on {t}"));
        for size in SIZES {
            match runnable(&bb, SECTION, &block_names(size)[0], variant, "MiB/s") {
                Err(r) => {
                    rows.push(*r);
                    rows.push(Row {
                        name: block_names(size)[1].clone(),
                        ..rows[rows.len() - 1].clone()
                    });
                }
                Ok(b) => {
                    let run = |blocks: &[String], args: &[&str]| stdout_of(&argv(b, blocks, args));
                    rows.extend(block_rows(t, size, &device, &extra, &io_base, &run));
                    if variant == Variant::Hvt {
                        // The same image with kiln's hvt extensions hidden:
                        // one BLOCK_READ or BLOCK_WRITE exit per request.
                        let plain = |blocks: &[String], args: &[&str]| {
                            let env = [(NO_EXTENSIONS, Some(std::ffi::OsStr::new("1")))];
                            let ctx = Context {
                                dir: None,
                                env: &env,
                            };
                            stdout_in(&argv(b, blocks, args), ctx)
                        };
                        let t = "hvt, KILN_HVT_NO_EXTENSIONS=1";
                        rows.extend(block_rows(t, size, &device, &extra, &io_base, &plain));
                    }
                }
            }
        }

        progress(&format!("storage: store changes and crash test on {t}"));
        let name = "store set/remove, each flushed";
        rows.push(match runnable(&nb, SECTION, name, variant, "changes/s") {
            Err(r) => *r,
            Ok(b) => {
                let image = work.join("notes.img");
                let n = changes.to_string();
                let r = zero_file(&image, 1 << 20).and_then(|()| {
                    stdout_of(&argv(
                        b,
                        &[format!("--block:data={}", image.display())],
                        &["--churn", &n, "--from", "1"],
                    ))
                });
                let us = r.as_ref().ok().and_then(|o| {
                    o.lines()
                        .find_map(|l| l.strip_prefix(&format!("done {n} changes in ")))
                        .and_then(|l| l.trim_end_matches(" us").parse::<f64>().ok())
                });
                match (r, us) {
                    (Ok(_), Some(us)) if us > 0.0 => {
                        Row::ok(SECTION, name, t, f64::from(changes) * 1e6 / us, "changes/s")
                            .against(change_base.clone())
                    }
                    (Err(e), _) => failed(name, t, "changes/s", &e),
                    (Ok(o), _) => Row::missing(
                        SECTION,
                        name,
                        t,
                        "changes/s",
                        Status::Failed(format!("no timing line in: {o}")),
                    ),
                }
            }
        });

        let max_ms = if variant == Variant::Hvt { 200 } else { 40 };
        let names = [
            "crash test: SIGKILL iterations",
            "crash test: restarts finding every acknowledged change",
        ];
        match runnable(&nb, SECTION, names[0], variant, "count") {
            Err(r) => rows.push(*r),
            Ok(b) => match crash(b, &work.join("crash.img"), crash_iterations, max_ms) {
                Ok((done, failures)) => {
                    rows.push(Row::ok(SECTION, names[0], t, f64::from(done), "count"));
                    // The baseline is the number of restarts: a ratio of
                    // 1.00x means no failure.
                    let row = Row::ok(
                        SECTION,
                        names[1],
                        t,
                        f64::from(done.saturating_sub(failures)),
                        "count",
                    )
                    .against(Some(Baseline {
                        name: "restarts".into(),
                        value: f64::from(done),
                    }));
                    rows.push(if failures == 0 {
                        row
                    } else {
                        Row {
                            status: Status::Failed(format!(
                                "{failures} of {done} restarts found the store wrong"
                            )),
                            ..row
                        }
                    });
                }
                Err(e) => rows.push(failed(names[0], t, "count", &e)),
            },
        }
    }
    // virtio: blockbench on QEMU's microvm under KVM, its disks on
    // virtio-blk (`kiln run -t virtio`), in 64 KiB requests only: each
    // request waits for QEMU's I/O thread (0.3-0.7 ms here), so 16 MiB in
    // 512 B requests would take 10-20 s each way (docs/targets.md).
    progress("storage: block throughput on virtio (QEMU microvm, KVM)");
    match super::virtio::blockbench(p) {
        Ok(run) => {
            for size in VIRTIO_SIZES {
                rows.extend(block_rows("virtio", size, &device, &extra, &io_base, &*run));
            }
        }
        Err(status) => {
            for name in VIRTIO_SIZES.into_iter().flat_map(block_names) {
                rows.push(Row::missing(
                    SECTION,
                    &name,
                    "virtio",
                    "MiB/s",
                    status.clone(),
                ));
            }
        }
    }
    let _ = std::fs::remove_file(&device);
    let _ = std::fs::remove_file(&extra);
    rows
}

/// What runs blockbench on a target: given the block flags and
/// blockbench's arguments, its stdout.
pub type Runner<'a> = dyn Fn(&[String], &[&str]) -> Result<String, BenchError> + 'a;

/// The request sizes of the block figures.
const SIZES: [usize; 2] = [512, 65536];
/// Those of virtio.
const VIRTIO_SIZES: [usize; 1] = [65536];

/// The write and read figures' names for `size`-byte requests.
fn block_names(size: usize) -> [String; 2] {
    let label = if size == 512 { "512 B" } else { "64 KiB" };
    [
        format!("sequential write, {label} requests"),
        format!("sequential read, {label} requests"),
    ]
}

/// The sequential write and read rows of target `t` for `size`-byte
/// requests: blockbench's bench mode through `run` (given the block flags
/// and blockbench's arguments, its stdout) on a zeroed [`DEVICE_MIB`] MiB
/// `data` disk (`device`) and the 64 KiB `extra` disk it needs, against
/// the host's loop of the same requests (`io_base`).
fn block_rows(
    t: &str,
    size: usize,
    device: &Path,
    extra: &Path,
    io_base: &BTreeMap<usize, (Option<Baseline>, Option<Baseline>)>,
    run: &Runner<'_>,
) -> Vec<Row> {
    let out = zero_file(device, DEVICE_MIB << 20)
        .and_then(|()| zero_file(extra, 64 << 10))
        .and_then(|()| {
            let blocks = [
                format!("--block:data={}", device.display()),
                format!("--block:extra={}", extra.display()),
            ];
            let size = size.to_string();
            let total = DEVICE_MIB.to_string();
            run(
                &blocks,
                &["--mode", "bench", "--size", &size, "--total", &total],
            )
        });
    let (wb, rb) = io_base.get(&size).cloned().unwrap_or((None, None));
    let [write, read] = block_names(size);
    [(write, "write", wb), (read, "read", rb)]
        .into_iter()
        .map(|(name, what, base)| {
            match out
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|o| mibps(o, what).map_err(|e| e.to_string()))
            {
                Ok(v) => Row::ok(SECTION, &name, t, v, "MiB/s").against(base),
                Err(e) => Row::missing(SECTION, &name, t, "MiB/s", Status::Failed(e)),
            }
        })
        .collect()
}

/// `a`, marked unrunnable on hvt when KVM is missing.
fn with_kvm(a: Availability, variant: Variant) -> Availability {
    match a {
        Availability::Ready(mut b) if variant == Variant::Hvt => {
            if b.unrunnable.is_none() {
                b.unrunnable = setup::kvm_missing();
            }
            Availability::Ready(b)
        }
        other => other,
    }
}
