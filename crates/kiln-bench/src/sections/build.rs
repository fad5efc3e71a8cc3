//! build: `kiln build` wall time of hello and www from clean (`kiln
//! clean`, a cargo target directory of its own) and after an edit of the
//! app (a comment appended to `src/lib.rs` of a copy). A quick run times
//! hello only, from clean with every dependency already compiled in the
//! shared target directory, then after an edit.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use super::{HELLO_VARIANTS, Prepared, progress};
use crate::error::BenchError;
use crate::report::{Row, Status};
use crate::setup::{Availability, Env, Variant, diagnostic};

const SECTION: &str = "build";

/// Times `kiln build -t TARGET dir`; configure refusals are "not
/// available".
fn timed_build(
    env: &Env,
    dir: &Path,
    target: &str,
    target_dir: Option<&Path>,
) -> Result<f64, Status> {
    let args = [
        OsStr::new("build"),
        OsStr::new("-t"),
        OsStr::new(target),
        dir.as_os_str(),
    ];
    let start = Instant::now();
    let f = env
        .kiln(&args, target_dir)
        .map_err(|e| Status::Failed(e.to_string()))?;
    let took = start.elapsed().as_secs_f64();
    if f.status.success() {
        Ok(took)
    } else {
        // A target kiln builds for must build: any failure is a failure.
        Err(Status::Failed(diagnostic(&f.stderr)))
    }
}

fn append_comment(dir: &Path) -> Result<(), BenchError> {
    let lib = dir.join("src/lib.rs");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&lib)
        .map_err(|e| BenchError::io("open", &lib, e))?;
    writeln!(f, "// edited by kiln-bench").map_err(|e| BenchError::io("append to", &lib, e))
}

/// What a status without a figure says.
fn reason(st: &Status) -> String {
    match st {
        Status::Ok => String::new(),
        Status::NotAvailable(why) => why.to_string(),
        Status::Skipped(why) | Status::Failed(why) => why.clone(),
    }
}

fn row(name: &str, target: &str, r: Result<f64, Status>) -> Row {
    match r {
        Ok(s) => Row::ok(SECTION, name, target, s, "s"),
        Err(status) => Row::missing(SECTION, name, target, "s", status),
    }
}

/// The quick run's rows for `app` on `variant`: hello from a fresh copy
/// after `kiln clean` in the shared target directory, where building the
/// same image beside it has compiled every dependency, then after an
/// edit; www's are left out.
fn quick_rows(p: &Prepared, app: &str, variant: Variant) -> [Row; 2] {
    let env = &p.env;
    let target = variant.target();
    let clean_name = format!("kiln build {app} from clean");
    let edit_name = format!("kiln build {app} after an edit");
    if app != "hello" {
        let st = Status::Skipped("--quick times hello's builds only; full runs time www's".into());
        return [
            row(&clean_name, target, Err(st.clone())),
            row(&edit_name, target, Err(st)),
        ];
    }
    let clean_name = format!("{clean_name}, dependencies compiled");
    let first = match p.hello.iter().find(|(v, _)| *v == variant) {
        Some((_, Availability::Ready(_))) => None,
        Some((_, Availability::Broken(why))) => Some(Status::Failed(format!("build: {why}"))),
        None => Some(Status::Failed("hello was not built".into())),
    };
    if let Some(st) = first {
        return [
            row(&clean_name, target, Err(st.clone())),
            row(&edit_name, target, Err(st)),
        ];
    }
    progress(&format!("build: {app} for {target}"));
    let shared = env.unikernel_target();
    let clean = env
        .copy_example(app, &format!("{app}-build-{target}"))
        .map_err(|e| Status::Failed(e.to_string()))
        .and_then(|dir| {
            match env.kiln(&[OsStr::new("clean"), dir.as_os_str()], None) {
                Ok(f) if f.status.success() => {}
                Ok(f) => return Err(Status::Failed(diagnostic(&f.stderr))),
                Err(e) => return Err(Status::Failed(e.to_string())),
            }
            timed_build(env, &dir, target, Some(&shared)).map(|s| (dir, s))
        });
    let edited = match &clean {
        Ok((dir, _)) => append_comment(dir)
            .map_err(|e| Status::Failed(e.to_string()))
            .and_then(|()| timed_build(env, dir, target, Some(&shared))),
        Err(Status::NotAvailable(why)) => Err(Status::NotAvailable(why.clone())),
        Err(st) => Err(Status::Failed(format!(
            "the build from clean failed: {}",
            reason(st)
        ))),
    };
    [
        row(&clean_name, target, clean.map(|(_, s)| s)),
        row(&edit_name, target, edited),
    ]
}

/// Runs the build section.
pub fn run(p: &Prepared) -> Vec<Row> {
    let env = &p.env;
    let mut rows = Vec::new();
    for app in ["hello", "www"] {
        for variant in HELLO_VARIANTS {
            if p.counts.quick {
                rows.extend(quick_rows(p, app, variant));
                continue;
            }
            let target = variant.target();
            let clean_name = format!("kiln build {app} from clean");
            let edit_name = format!("kiln build {app} after an edit");
            let dir = match env.copy_example(app, &format!("{app}-build-{target}")) {
                Ok(d) => d,
                Err(e) => {
                    let st = Status::Failed(e.to_string());
                    rows.push(Row::missing(SECTION, &clean_name, target, "s", st.clone()));
                    rows.push(Row::missing(SECTION, &edit_name, target, "s", st));
                    continue;
                }
            };
            progress(&format!("build: {app} for {target}"));
            let clean = env.kiln(&[OsStr::new("clean"), dir.as_os_str()], None);
            let first = match clean {
                Ok(f) if f.status.success() => timed_build(env, &dir, target, None),
                Ok(f) => Err(Status::Failed(diagnostic(&f.stderr))),
                Err(e) => Err(Status::Failed(e.to_string())),
            };
            let edited = match &first {
                Err(Status::NotAvailable(why)) => Err(Status::NotAvailable(why.clone())),
                Err(st) => Err(Status::Failed(format!(
                    "the build from clean failed: {}",
                    reason(st)
                ))),
                Ok(_) => append_comment(&dir)
                    .map_err(|e| Status::Failed(e.to_string()))
                    .and_then(|()| timed_build(env, &dir, target, None)),
            };
            rows.push(row(&clean_name, target, first));
            rows.push(row(&edit_name, target, edited));
        }
    }
    rows
}
