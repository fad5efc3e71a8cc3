//! memory: peak resident set (VmHWM of the process and its children) of
//! www on each target after a short wrk load, beside nginx under the same
//! load; and the smallest `--mem` each example runs with under a tender.

use std::time::Duration;

use super::network::{TIMEOUT_SECS, start_nginx, start_www, wrk};
use super::{Prepared, progress, runnable};
use crate::error::BenchError;
use crate::exec::{self, Context};
use crate::netns::Netns;
use crate::report::{Baseline, Row, Status};
use crate::setup::Built;

const SECTION: &str = "memory";
/// Seconds of load before the peak is read.
const LOAD_SECS: u32 = 1;
/// The largest `--mem` tried, MiB (the tenders' default).
const MEM_MAX: u32 = 512;

/// Whether hello runs to completion with `mem` MiB.
fn hello_runs(built: &Built, mem: u32) -> bool {
    let a = built.argv(Some(mem), None, &["--times".into(), "0".into()]);
    exec::run(&a, Context::default(), Duration::from_secs(30)).is_ok_and(|f| f.status.success())
}

/// Whether www answers a request with `mem` MiB.
fn www_runs(p: &Prepared, ns: &Netns, built: &Built, mem: u32) -> bool {
    start_www(&p.env, ns, built, Some(mem), Duration::from_secs(10)).is_ok()
}

/// The smallest MiB in 1..=MEM_MAX for which `works` holds, assuming that
/// more memory never hurts: a binary search of at most 10 runs.
fn smallest(mut works: impl FnMut(u32) -> bool) -> Result<u32, BenchError> {
    if !works(MEM_MAX) {
        return Err(BenchError::Setup(format!(
            "it does not run even with --mem={MEM_MAX}"
        )));
    }
    let (mut lo, mut hi) = (0, MEM_MAX);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if works(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

fn peak_row(target: &str, peak: Result<u64, BenchError>, base: Option<Baseline>) -> Row {
    let name = "www peak RSS under wrk";
    match peak {
        Ok(kib) => Row::ok(SECTION, name, target, kib as f64 / 1024.0, "MiB").against(base),
        Err(e) => Row::missing(SECTION, name, target, "MiB", Status::Failed(e.to_string())),
    }
}

/// Runs the memory section.
pub fn run(p: &Prepared) -> Vec<Row> {
    progress("memory: peak RSS under load and the smallest --mem");
    let mut rows = Vec::new();
    if let Some(why) = crate::netns::root_missing() {
        rows.push(Row::missing(
            SECTION,
            "all",
            "-",
            "—",
            Status::NotAvailable(why),
        ));
        return rows;
    }
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            let why = format!("cannot create a network namespace with a tap: {e}");
            rows.push(Row::missing(SECTION, "all", "-", "—", Status::Failed(why)));
            return rows;
        }
    };
    // The load's own figures do not matter here (a slow server may
    // complete none within it); the peak under it does.
    let root = p.env.workspace.join("examples/www/htdocs");
    let nginx = start_nginx(&p.env, &ns, &root).and_then(|s| {
        // wrk must run; how many requests it completes does not matter.
        wrk(&ns, &s.url, LOAD_SECS, TIMEOUT_SECS)?;
        s.service.peak_rss_kib()
    });
    let row = peak_row("nginx", nginx, None);
    let base = matches!(row.status, Status::Ok).then(|| Baseline {
        name: "nginx".into(),
        value: row.value,
    });
    rows.push(row);
    for (variant, a) in &p.www {
        let built = match runnable(a, SECTION, "www peak RSS under wrk", *variant, "MiB") {
            Ok(b) => b,
            Err(row) => {
                rows.push(*row);
                continue;
            }
        };
        let peak = start_www(&p.env, &ns, built, None, Duration::from_secs(15)).and_then(|s| {
            wrk(&ns, &s.url, LOAD_SECS, TIMEOUT_SECS)?;
            s.service.peak_rss_kib()
        });
        rows.push(peak_row(variant.name(), peak, base.clone()));
    }
    for (app, builds) in [("hello", &p.hello), ("www", &p.www)] {
        for (variant, a) in builds.iter().filter(|(v, _)| v.tendered()) {
            let name = format!("{app} smallest --mem");
            let built = match runnable(a, SECTION, &name, *variant, "MiB") {
                Ok(b) => b,
                Err(row) => {
                    rows.push(*row);
                    continue;
                }
            };
            progress(&format!(
                "memory: smallest --mem of {app} on {}",
                variant.name()
            ));
            let found = if app == "hello" {
                smallest(|m| hello_runs(built, m))
            } else {
                smallest(|m| www_runs(p, &ns, built, m))
            };
            rows.push(match found {
                Ok(mib) => Row::ok(SECTION, &name, variant.name(), f64::from(mib), "MiB"),
                Err(e) => Row::missing(
                    SECTION,
                    &name,
                    variant.name(),
                    "MiB",
                    Status::Failed(e.to_string()),
                ),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_smallest_working_size_in_few_runs() {
        for need in [1, 2, 3, 37, 64, 511, 512] {
            let mut runs = 0;
            let got = smallest(|m| {
                runs += 1;
                m >= need
            })
            .unwrap();
            assert_eq!(got, need);
            assert!(runs <= 11, "{runs} runs for {need}");
        }
        assert!(smallest(|_| false).is_err());
    }
}
