//! hvt: the tender's own costs, from kiln-hvt's benchmark harness
//! (`cargo bench -p kiln-hvt --bench hvt`): an image that halts at once
//! beside bare-kvm, the cost of one VM exit, POLL timeout precision, and
//! frames through an echo guest. A quick run runs the dev builds of
//! kiln-hvt and the harness that `cargo build --workspace` made, and its
//! rows say so.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Prepared, progress};
use crate::error::{BenchError, tail};
use crate::exec::{self, Argv, Context, argv};
use crate::report::{Baseline, Row, Status, Summary, ms};
use crate::setup::{BUILD_LIMIT, Env, kvm_missing};

const SECTION: &str = "hvt";
const LIMIT: Duration = Duration::from_secs(900);

/// `cargo bench` of kiln-hvt's harness, then `tail`.
fn bench_argv(env: &Env, tail: &[&str]) -> Argv {
    let mut a = argv([env.cargo.as_os_str()]);
    a.extend(argv([
        "bench",
        "--quiet",
        "-p",
        "kiln-hvt",
        "--bench",
        "hvt",
        "--manifest-path",
    ]));
    a.push(env.workspace.join("Cargo.toml").into());
    a.extend(argv(tail));
    a
}

/// How the section runs kiln-hvt's bench harness.
#[derive(Debug, Clone)]
pub enum Harness {
    /// Through `cargo bench` (full runs).
    Cargo,
    /// This executable, which [`Env::build_kiln`] built (quick runs).
    Built(PathBuf),
}

/// Builds what the section runs with the release profile: `kiln-hvt`
/// (all modules) and the harness.
pub fn build(env: &Env) -> Result<Harness, BenchError> {
    env.cargo_build(&["-p", "kiln-hvt", "--bin", "kiln-hvt"])?;
    let vars = [("CARGO_TARGET_DIR", Some(env.target_dir.as_os_str()))];
    let ctx = Context {
        dir: Some(&env.workspace),
        env: &vars,
    };
    exec::run_ok(&bench_argv(env, &["--no-run"]), ctx, BUILD_LIMIT)?;
    Ok(Harness::Cargo)
}

/// Runs the harness with `args`; its stdout.
fn harness(p: &Prepared, harness: &Harness, args: &[&str]) -> Result<String, BenchError> {
    let env = &p.env;
    let mut a = match harness {
        Harness::Cargo => bench_argv(env, &["--"]),
        Harness::Built(path) => argv([path]),
    };
    a.extend(argv(args));
    let runs = OsString::from(if p.counts.quick { "3" } else { "10" });
    let frames = OsString::from(if p.counts.quick { "2000" } else { "20000" });
    let vars = [
        ("CARGO_TARGET_DIR", Some(env.target_dir.as_os_str())),
        ("KILN_BENCH_RUNS", Some(runs.as_os_str())),
        ("KILN_BENCH_FRAMES", Some(frames.as_os_str())),
    ];
    let ctx = Context {
        dir: Some(&env.workspace),
        env: &vars,
    };
    Ok(exec::run_ok(&a, ctx, LIMIT)?.stdout)
}

/// The number just before `unit` in `line` (`12.5 us wall` -> 12.5).
fn before(line: &str, unit: &str) -> Option<f64> {
    let at = line.find(unit)?;
    line[..at].split_whitespace().last()?.parse().ok()
}

fn parse_err(out: &str, what: &'static str) -> BenchError {
    BenchError::Parse {
        what,
        program: "kiln-hvt's bench harness",
        output: tail(out, 300),
    }
}

/// Rows from the `exits` output.
fn exit_rows(out: &str) -> Result<Vec<Row>, BenchError> {
    let zero = out
        .lines()
        .find(|l| l.contains("zero timeout"))
        .ok_or_else(|| parse_err(out, "the zero-timeout POLL line"))?;
    let wall = before(zero, "us wall").ok_or_else(|| parse_err(out, "us wall per exit"))?;
    let cpu = before(zero, "us CPU").ok_or_else(|| parse_err(out, "us CPU per exit"))?;
    let timed = out
        .lines()
        .find(|l| l.contains("100 us timeout"))
        .ok_or_else(|| parse_err(out, "the 100 us POLL line"))?;
    let per = before(timed, "us wall per call").ok_or_else(|| parse_err(out, "us per call"))?;
    Ok(vec![
        Row::ok(
            SECTION,
            "one exit (POLL, zero timeout), wall",
            "hvt",
            wall,
            "us",
        ),
        Row::ok(
            SECTION,
            "one exit (POLL, zero timeout), CPU",
            "hvt",
            cpu,
            "us",
        ),
        Row::ok(
            SECTION,
            "POLL with a 100 us timeout, all told",
            "hvt",
            per,
            "us",
        )
        .against(Some(Baseline {
            name: "the timeout asked for".into(),
            value: 100.0,
        })),
    ])
}

/// Rows from the `net` output.
fn net_rows(out: &str) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    for line in out.lines().filter(|l| l.contains("-byte frames, window")) {
        let case = line
            .split(':')
            .next()
            .map(str::trim)
            .ok_or_else(|| parse_err(out, "a frame case"))?;
        let rate = before(line, "frames/s").ok_or_else(|| parse_err(out, "frames/s"))?;
        let cpu = before(line, "us per frame").ok_or_else(|| parse_err(out, "tender CPU"))?;
        rows.push(Row::ok(
            SECTION,
            &format!("echo guest, {case}"),
            "hvt",
            rate,
            "frames/s",
        ));
        rows.push(Row::ok(
            SECTION,
            &format!("echo guest, {case}: tender CPU per frame"),
            "hvt",
            cpu,
            "us",
        ));
    }
    if rows.is_empty() {
        return Err(parse_err(out, "frame cases"));
    }
    Ok(rows)
}

/// `kiln-hvt --mem=512 halt.hvt` interleaved with bare-kvm.
fn halt_rows(p: &Prepared, guests: &Path) -> Result<Vec<Row>, BenchError> {
    let bare = p
        .bare_kvm
        .as_ref()
        .map_err(|e| BenchError::Setup(e.clone()))?;
    let tender = p.env.built().join("kiln-hvt");
    let halt = guests.join("halt.hvt");
    let cases = [
        argv([bare.as_os_str()]),
        argv([tender.as_os_str(), "--mem=512".as_ref(), halt.as_os_str()]),
    ];
    let limit = Duration::from_secs(30);
    for c in &cases {
        exec::time_once(c, limit)?;
    }
    let mut samples = [Vec::new(), Vec::new()];
    for _ in 0..p.counts.boot_runs {
        for (c, s) in cases.iter().zip(samples.iter_mut()) {
            s.push(ms(exec::time_once(c, limit)?));
        }
    }
    let base = Baseline {
        name: p.bare_kvm_name(),
        value: Summary::of(&samples[0]).median,
    };
    let name = "kiln-hvt --mem=512 on an image that halts at once";
    Ok(vec![
        Row::samples(SECTION, name, "hvt", &samples[1], "ms").against(Some(base)),
    ])
}

/// Runs the hvt section.
pub fn run(p: &Prepared) -> Vec<Row> {
    if let Some(why) = kvm_missing() {
        return vec![Row::missing(
            SECTION,
            "kiln-hvt harness",
            "hvt",
            "—",
            Status::NotAvailable(why),
        )];
    }
    progress("hvt: kiln-hvt's bench harness (halt guest, exits, net echo)");
    let guests = p.env.work.join("hvt-guests");
    let guests_arg = guests.display().to_string();
    let mut rows = Vec::new();
    let failed = |name: &str, e: BenchError| {
        Row::missing(SECTION, name, "hvt", "—", Status::Failed(e.to_string()))
    };
    let h = match &p.hvt_harness {
        Ok(h) => h,
        Err(why) => {
            let e = BenchError::Setup(format!("cannot build kiln-hvt and its harness: {why}"));
            return vec![failed("kiln-hvt harness", e)];
        }
    };
    match harness(p, h, &["write-guests", &guests_arg]).and_then(|_| halt_rows(p, &guests)) {
        Ok(r) => rows.extend(r),
        Err(e) => rows.push(failed("halt guest boot", e)),
    }
    match harness(p, h, &["exits"]).and_then(|out| exit_rows(&out)) {
        Ok(r) => rows.extend(r),
        Err(e) => rows.push(failed("exits", e)),
    }
    match harness(p, h, &["net"]).and_then(|out| net_rows(&out)) {
        Ok(r) => rows.extend(r),
        Err(e) => rows.push(failed("net echo", e)),
    }
    for r in &mut rows {
        r.name.push_str(p.env.profile.note());
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_harness_output() {
        let exits = "exits: POLL with a zero timeout, 2000 in a loop (median of 10 runs): 45.0 us wall, 17.7 us CPU per exit\n\
                     exits: POLL with a 100 us timeout, 2000 in a loop: 255.3 us wall per call\n";
        let rows = exit_rows(exits).unwrap();
        let v: Vec<f64> = rows.iter().map(|r| r.value).collect();
        assert_eq!(v, [45.0, 17.7, 255.3]);
        let net = "net: echo guest over a datagram socket pair, 20000 frames per case\n\
                   \x20   60-byte frames, window 1:     4384 frames/s   228.1 us wall per frame (round trip)  tender CPU  60.0 us per frame\n\
                   \x20 1514-byte frames, window 8:     6068 frames/s   164.8 us wall per frame  tender CPU  49.0 us per frame\n";
        let rows = net_rows(net).unwrap();
        let v: Vec<f64> = rows.iter().map(|r| r.value).collect();
        assert_eq!(v, [4384.0, 60.0, 6068.0, 49.0]);
        assert_eq!(rows[0].name, "echo guest, 60-byte frames, window 1");
        assert!(net_rows("nothing").is_err());
        assert!(exit_rows("exits: POLL with a zero timeout: nothing").is_err());
    }
}
