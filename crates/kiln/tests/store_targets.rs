//! Storage on every target through the CLI: `kiln build -t unix|hvt|spt`
//! builds `examples/notes` and `examples/blockbench`, and the tests run the
//! images (directly on unix, under `kiln-hvt` and `kiln-spt` otherwise).
//!
//! - notes formats a fresh zero-filled image on first use, keeps its notes
//!   across runs with 512- and 4096-byte sectors, and reports a note whose
//!   record was damaged on the medium instead of serving its bytes;
//! - blockbench's bad requests (past the end, straddling it, misaligned,
//!   partial sectors, empty) each get the expected typed `BlockError`, and
//!   two named block devices stay apart;
//! - the crash test starts notes' write-heavy mode, kills the process or
//!   tender with SIGKILL at a random moment, restarts, and checks that
//!   every acknowledged change is there with its exact value and that a
//!   change in flight is either wholly there or wholly absent. 200
//!   iterations per target with `CI=true` or `KILN_FULL_TESTS=1`, 20
//!   otherwise; the seed is printed and `KILN_CRASH_SEED` replays one.
//!
//! hvt needs `/dev/kvm`: without it the hvt tests say loudly that they are
//! skipped, and fail instead when `CI=true`. Builds share the
//! `KILN_TARGET_DIR` of `tests/e2e.rs` and `tests/solo5.rs`.

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::crash::{Model, line_reader};
use common::{kiln, ok, run_for, shared_target_dir, temp_dir, text};
use kiln_testsupport::process::ChildGuard;
use kiln_testsupport::skip::kvm_or_skip;

/// Longest a build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest one run of a unikernel may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Unix,
    Hvt,
    Spt,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Unix => "unix",
            Target::Hvt => "hvt",
            Target::Spt => "spt",
        }
    }
}

/// Whether `target` can run here; says why not.
fn can_run(target: Target, test: &str) -> bool {
    target != Target::Hvt || kvm_or_skip(test)
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// Builds each example once per target, whichever test asks first.
static BUILT: Mutex<Vec<(String, Target)>> = Mutex::new(Vec::new());

/// `kiln build -t TARGET examples/NAME`, once per test binary.
fn build(name: &str, target: Target) -> PathBuf {
    let dir = example(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.contains(&(name.to_string(), target)) {
        let out = run_for(
            kiln()
                .env("KILN_TARGET_DIR", shared_target_dir())
                .args(["build", "-t", target.name()])
                .arg(&dir),
            BUILD_TIMEOUT,
        );
        ok(out, &format!("kiln build -t {} {name}", target.name()));
        built.push((name.to_string(), target));
    }
    dir
}

/// The command that runs the built example `name` on `target` with
/// the block flags `blocks` and the unikernel arguments `args`.
fn command(dir: &Path, name: &str, target: Target, blocks: &[String], args: &[&str]) -> Command {
    let dist = dir.join("dist");
    let mut cmd = match target {
        Target::Unix => {
            let mut cmd = Command::new(dist.join(format!("{name}.unix")));
            cmd.args(blocks);
            cmd
        }
        Target::Hvt | Target::Spt => {
            let mut cmd = Command::new(dist.join(format!("kiln-{}", target.name())));
            cmd.args(blocks)
                .arg(dist.join(format!("{name}.{}", target.name())));
            cmd
        }
    };
    cmd.args(args);
    cmd
}

/// A zero-filled image of `len` bytes at `path`.
fn zero_image(path: &Path, len: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(len))
        .expect("create a zero-filled image");
}

// ---------------------------------------------------------------- notes

/// Flips the case of the first byte of the first occurrence of `needle`
/// in the file at `path` (a plausible value, with a checksum no longer
/// matching).
fn flip(path: &Path, needle: &[u8]) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} is not on the image", text(needle)));
    bytes[at] ^= 0x20;
    std::fs::write(path, &bytes).unwrap();
}

/// notes: formatting on first use, persistence with both sector sizes, a
/// damaged record reported.
fn notes(target: Target) {
    let test = format!("notes_on_{}", target.name());
    if !can_run(target, &test) {
        return;
    }
    let dir = build("notes", target);
    let tmp = temp_dir(&test);
    for sector in [512u32, 4096] {
        let image = tmp.path().join(format!("notes-{sector}.img"));
        zero_image(&image, 1 << 20);
        let blocks = [
            format!("--block:data={}", image.display()),
            format!("--block-sector-size:data={sector}"),
        ];
        let run = |args: &[&str]| -> String {
            let out = run_for(
                &mut command(&dir, "notes", target, &blocks, args),
                RUN_TIMEOUT,
            );
            text(&ok(out, &format!("notes {args:?} ({sector}-byte sectors)")).stdout)
        };

        // A fresh zero-filled image is formatted on first use.
        assert_eq!(run(&[]), "0 notes\n", "{sector}-byte sectors");
        let bytes = std::fs::read(&image).unwrap();
        assert!(
            bytes.windows(4).any(|w| w == b"KLHD"),
            "the first run left no store header on the {sector}-byte-sector image"
        );

        // Notes persist from one run to the next. The first is longer than
        // a sector, so that its end lies in its record's second sector.
        let long = format!("{}tail-of-the-first", "a".repeat(sector as usize));
        assert_eq!(run(&["--add", &long]), format!("1: {long}\n1 notes\n"));
        assert_eq!(
            run(&["--add", "second-note"]),
            format!("1: {long}\n2: second-note\n2 notes\n")
        );
        assert_eq!(run(&[]), format!("1: {long}\n2: second-note\n2 notes\n"));

        // Damage the first note's value past its record's first sector (a
        // later record exists, so this is not a torn write): the note is
        // reported damaged, never served, and the others still print.
        flip(&image, b"tail-of-the-first");
        let out = run(&[]);
        assert_eq!(
            out, "1: (damaged on the medium)\n2: second-note\n2 notes\n",
            "{sector}-byte sectors"
        );
        assert!(!out.contains("Tail"), "damaged bytes were served: {out}");

        // Replacing the notes makes the store whole again.
        assert_eq!(run(&["--clear", "--add", "again"]), "1: again\n1 notes\n");
        assert_eq!(run(&["--add", "last"]), "1: again\n2: last\n2 notes\n");

        // Damage a record's first sector (its key): the store cannot say
        // which key lost its value, so opening refuses the device.
        flip(&image, b"again");
        let out = run_for(
            &mut command(&dir, "notes", target, &blocks, &[]),
            RUN_TIMEOUT,
        );
        // The error goes to stderr on unix and to the console (stdout) on
        // hvt and spt.
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(
            said.contains("corrupt") && said.contains("hint:"),
            "{sector}-byte sectors: {said}"
        );
        assert!(
            !said.contains("1: again") && !said.contains("1: Again"),
            "{said}"
        );
    }
}

#[test]
fn notes_on_unix() {
    notes(Target::Unix);
}

#[test]
fn notes_on_hvt() {
    notes(Target::Hvt);
}

#[test]
fn notes_on_spt() {
    notes(Target::Spt);
}

// ---------------------------------------------------------- blockbench

/// What blockbench's `errors` mode must print for a 2048-sector device of
/// 512-byte sectors.
const ERRORS: &str = "geometry: 512 x 2048
read-past-end: Err(OutOfRange { sector: 2048, count: 1, sectors: 2048 })
write-straddling-end: Err(OutOfRange { sector: 2047, count: 2, sectors: 2048 })
read-straddling-end: Err(OutOfRange { sector: 2047, count: 2, sectors: 2048 })
read-at-max-sector: Err(OutOfRange { sector: 18446744073709551615, count: 1, sectors: 2048 })
read-partial-sector: Err(Misaligned { len: 100 })
write-partial-sector: Err(Misaligned { len: 100 })
read-sector-and-a-byte: Err(Misaligned { len: 513 })
write-sector-and-a-byte: Err(Misaligned { len: 513 })
read-empty: Err(Misaligned { len: 0 })
write-empty: Err(Misaligned { len: 0 })
write-last-sector: Ok(())
read-last-sector: Ok(()) same=true
";

/// blockbench: bad requests get typed errors and change nothing; two named
/// devices stay apart.
fn blockbench(target: Target) {
    let test = format!("bad_block_requests_on_{}", target.name());
    if !can_run(target, &test) {
        return;
    }
    let dir = build("blockbench", target);
    let tmp = temp_dir(&test);
    let data = tmp.path().join("data.img");
    let extra = tmp.path().join("extra.img");
    zero_image(&data, 1 << 20);
    zero_image(&extra, 64 << 10);
    let blocks = [
        format!("--block:data={}", data.display()),
        format!("--block:extra={}", extra.display()),
    ];

    let out = ok(
        run_for(
            &mut command(&dir, "blockbench", target, &blocks, &["--mode", "errors"]),
            RUN_TIMEOUT,
        ),
        "blockbench --mode errors",
    );
    assert_eq!(text(&out.stdout), ERRORS);
    // Only the one valid write reached the file: its last sector.
    let bytes = std::fs::read(&data).unwrap();
    assert_eq!(bytes.len(), 1 << 20, "the device file changed size");
    let (head, last) = bytes.split_at(bytes.len() - 512);
    assert!(
        head.iter().all(|&b| b == 0),
        "a refused request wrote to the device"
    );
    assert!(
        last.iter().all(|&b| b == 0x5a),
        "the valid write is missing"
    );

    let out = ok(
        run_for(
            &mut command(&dir, "blockbench", target, &blocks, &["--mode", "devices"]),
            RUN_TIMEOUT,
        ),
        "blockbench --mode devices",
    );
    assert_eq!(
        text(&out.stdout),
        "data: 512 x 2048\nextra: 512 x 128\ndata holds d1, extra holds e2\n"
    );
    let d = std::fs::read(&data).unwrap();
    let e = std::fs::read(&extra).unwrap();
    assert!(d[..512].iter().all(|&b| b == 0xd1), "data's sector 0");
    assert!(e[..512].iter().all(|&b| b == 0xe2), "extra's sector 0");
    assert!(e[512..].iter().all(|&b| b == 0), "extra past sector 0");
    assert_eq!(e.len(), 64 << 10, "extra changed size");

    // A device left unattached is refused, naming it.
    let out = run_for(
        &mut command(&dir, "blockbench", target, &blocks[..1], &[]),
        RUN_TIMEOUT,
    );
    assert_ne!(out.status.code(), Some(0), "ran without device 'extra'");
    assert!(text(&out.stderr).contains("extra"), "{}", text(&out.stderr));
}

#[test]
fn bad_block_requests_on_unix() {
    blockbench(Target::Unix);
}

#[test]
fn bad_block_requests_on_hvt() {
    blockbench(Target::Hvt);
}

#[test]
fn bad_block_requests_on_spt() {
    blockbench(Target::Spt);
}

// ----------------------------------------------------------- crash test

/// A small seeded generator (xorshift64*), so that a failing run can be
/// replayed with `KILN_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The counts of one target's crash test.
struct CrashReport {
    iterations: u32,
    failures: u32,
    changes: u64,
}

/// Iterations of the crash test per target.
fn crash_iterations() -> u32 {
    let full = std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("KILN_FULL_TESTS").as_deref() == Ok("1");
    if full { 200 } else { 20 }
}

/// Longest one target's crash test may take: all three together stay
/// under five minutes. On hvt, opening and listing the store costs well
/// over a second per restart on a nested-KVM host (see the storage
/// benchmark), most of the budget.
fn crash_budget(target: Target) -> Duration {
    match target {
        Target::Unix | Target::Spt => Duration::from_secs(60),
        Target::Hvt => Duration::from_secs(240),
    }
}
/// Longest wait for a restarted unikernel to list the store.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest random delay between `ready` and the kill: a store change takes
/// about 2 ms on unix and 7 ms on spt, 80 ms on hvt.
fn max_kill_delay_ms(target: Target) -> u64 {
    match target {
        Target::Unix | Target::Spt => 40,
        Target::Hvt => 120,
    }
}

/// Starts notes' crash-test mode `iterations` times on `target`, killing
/// it at a random moment each time, and checks the store after each.
fn crash(target: Target, iterations: u32, seed: u64) -> CrashReport {
    let dir = build("notes", target);
    let tmp = temp_dir(&format!("crash-{}", target.name()));
    let image = tmp.path().join("crash.img");
    // 128 KiB: regions of 64 sectors, so that the log compacts every few
    // dozen changes (kills land in compactions too) and a restart replays
    // a short log.
    zero_image(&image, 128 << 10);
    let blocks = [format!("--block:data={}", image.display())];
    let mut rng = Rng(seed | 1);
    let mut model = Model::default();
    let mut report = CrashReport {
        iterations: 0,
        failures: 0,
        changes: 0,
    };
    let mut last = 0u32;
    let started = Instant::now();
    let tag = format!("crash test on {} (seed {seed})", target.name());
    // One more run than iterations: the last only lists the store.
    let budget = crash_budget(target);
    let mut listing = Duration::ZERO;
    for i in 0..=iterations {
        assert!(
            started.elapsed() < budget,
            "{tag}: only {} of {iterations} iterations within {budget:?}; a restart took {:?} on average to list the store",
            report.iterations,
            listing / i.max(1)
        );
        let restarted = Instant::now();
        let from = (last + 1).to_string();
        let churn = if i < iterations { "1000000" } else { "0" };
        let child = command(&dir, "notes", target, &blocks, &[])
            .args(["--state", "--churn", churn, "--from", &from])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start notes");
        let mut child = ChildGuard(child);
        let lines = line_reader(child.0.stdout.take().expect("piped stdout"));
        let mut stderr = child.0.stderr.take().expect("piped stderr");
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });

        // The store as the restart found it.
        let mut found = BTreeMap::new();
        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line == "ready" => break true,
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("have ")
                        && let Some((key, value)) = rest.split_once(' ')
                    {
                        found.insert(key.to_string(), value.to_string());
                    }
                }
                Err(_) => break false,
            }
        };
        if !ready {
            let _ = child.0.kill();
            let _ = child.0.wait();
            panic!(
                "{tag}: iteration {i}: the restarted unikernel did not list the store\n--- stderr\n{}",
                err.join().unwrap_or_default()
            );
        }
        listing += restarted.elapsed();
        let problems = model.check(&found);
        if !problems.is_empty() {
            report.failures += 1;
            eprintln!("{tag}: iteration {i}: {}", problems.join("; "));
        }
        if i == iterations {
            let _ = finish(child, err);
            break;
        }

        std::thread::sleep(Duration::from_millis(
            rng.below(max_kill_delay_ms(target) + 1),
        ));
        let early = child.0.try_wait().ok().flatten();
        let _ = child.0.kill(); // SIGKILL
        let _ = child.0.wait();
        let before = last;
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
            model.apply(&line, &mut last);
        }
        if let Some(status) = early {
            panic!(
                "{tag}: iteration {i}: the unikernel stopped by itself ({status})\n--- stderr\n{}",
                err.join().unwrap_or_default()
            );
        }
        report.changes += u64::from(last.saturating_sub(before));
        report.iterations += 1;
    }
    eprintln!(
        "{tag}: {} iterations, {} failures, {} changes tried, {:?} ({:?} per restart to list the store)",
        report.iterations,
        report.failures,
        report.changes,
        started.elapsed(),
        listing / (iterations + 1)
    );
    report
}

/// Waits for a child that is ending by itself and its stderr reader.
fn finish(mut child: ChildGuard, err: std::thread::JoinHandle<String>) -> String {
    let started = Instant::now();
    while let Ok(None) = child.0.try_wait() {
        if started.elapsed() > RUN_TIMEOUT {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(child);
    err.join().unwrap_or_default()
}

/// The seed: `KILN_CRASH_SEED` if set, else from the clock.
fn crash_seed() -> u64 {
    std::env::var("KILN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn crash_test(target: Target) {
    let test = format!("crash_on_{}", target.name());
    if !can_run(target, &test) {
        return;
    }
    let seed = crash_seed();
    let iterations = crash_iterations();
    eprintln!("{test}: {iterations} iterations, seed {seed} (replay with KILN_CRASH_SEED={seed})");
    let report = crash(target, iterations, seed);
    assert_eq!(report.iterations, iterations, "{test}: seed {seed}");
    assert_eq!(
        report.failures, 0,
        "{test}: {} of {} iterations found the store wrong; seed {seed} (KILN_CRASH_SEED={seed} replays it)",
        report.failures, report.iterations
    );
    assert!(
        report.changes >= u64::from(iterations),
        "{test}: only {} changes were tried in {iterations} iterations: the kills came too early to test anything",
        report.changes
    );
}

#[test]
fn crash_on_unix() {
    crash_test(Target::Unix);
}

#[test]
fn crash_on_hvt() {
    crash_test(Target::Hvt);
}

#[test]
fn crash_on_spt() {
    crash_test(Target::Spt);
}
