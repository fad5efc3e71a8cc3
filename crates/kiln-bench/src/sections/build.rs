//! build: `kiln build` wall time of hello and www from clean (`kiln
//! clean`, a cargo target directory of its own) and after an edit of the
//! app (a comment appended to `src/lib.rs` of a copy).

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
        let why = diagnostic(&f.stderr);
        if why.contains("not yet supported") || why.contains("not supported") {
            Err(Status::NotAvailable(why))
        } else {
            Err(Status::Failed(why))
        }
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

fn row(name: &str, target: &str, r: Result<f64, Status>) -> Row {
    match r {
        Ok(s) => Row::ok(SECTION, name, target, s, "s"),
        Err(status) => Row::missing(SECTION, name, target, "s", status),
    }
}

/// Runs the build section.
pub fn run(p: &Prepared) -> Vec<Row> {
    let env = &p.env;
    let mut rows = Vec::new();
    for app in ["hello", "www"] {
        for variant in HELLO_VARIANTS {
            let target = variant.target();
            let clean_name = format!("kiln build {app} from clean");
            let edit_name = format!("kiln build {app} after an edit");
            // A quick run edits the copy the images were built from (its
            // dependencies are built) and times only the rebuild.
            let copy = if p.counts.quick {
                format!("{app}-{}", variant.name())
            } else {
                format!("{app}-build-{target}")
            };
            let dir = match env.copy_example(app, &copy) {
                Ok(d) => d,
                Err(e) => {
                    let st = Status::Failed(e.to_string());
                    rows.push(Row::missing(SECTION, &clean_name, target, "s", st.clone()));
                    rows.push(Row::missing(SECTION, &edit_name, target, "s", st));
                    continue;
                }
            };
            // A quick run times one rebuild: hello on unix.
            if p.counts.quick && (app, variant) != ("hello", Variant::Unix) {
                let st = Status::Skipped("--quick times only hello on unix after an edit".into());
                rows.push(Row::missing(SECTION, &clean_name, target, "s", st.clone()));
                rows.push(Row::missing(SECTION, &edit_name, target, "s", st));
                continue;
            }
            progress(&format!("build: {app} for {target}"));
            let (target_dir, first) = if p.counts.quick {
                let builds = if app == "hello" { &p.hello } else { &p.www };
                let first = match builds.iter().find(|(v, _)| *v == variant) {
                    Some((_, Availability::Ready(_))) => Status::Skipped("--quick".into()),
                    Some((_, Availability::Missing(why))) => Status::NotAvailable(why.clone()),
                    Some((_, Availability::Broken(why))) => Status::Failed(why.clone()),
                    None => Status::Failed("not prepared".into()),
                };
                rows.push(row(&clean_name, target, Err(first.clone())));
                (Some(env.unikernel_target()), Some(first))
            } else {
                let clean = env.kiln(&[OsStr::new("clean"), dir.as_os_str()], None);
                let r = match clean {
                    Ok(f) if f.status.success() => timed_build(env, &dir, target, None),
                    Ok(f) => Err(Status::Failed(diagnostic(&f.stderr))),
                    Err(e) => Err(Status::Failed(e.to_string())),
                };
                rows.push(row(&clean_name, target, r));
                (None, rows.last().map(|r| r.status.clone()))
            };
            let edited = match first {
                Some(Status::NotAvailable(why)) => Err(Status::NotAvailable(why)),
                Some(Status::Failed(why)) => Err(Status::Failed(format!("the first build: {why}"))),
                _ => append_comment(&dir)
                    .map_err(|e| Status::Failed(e.to_string()))
                    .and_then(|()| timed_build(env, &dir, target, target_dir.as_deref())),
            };
            rows.push(row(&edit_name, target, edited));
        }
    }
    rows
}
