//! observe: what logging and metrics cost www. wrk loads www started with
//! each of four settings in turn, in rounds, in one network namespace:
//! `--log=warn` (the baseline: no record is formatted), `--log=info` (the
//! default: www's per-request `debug` access log is filtered out by the
//! `log` macros' level check), `--log=debug` (a console line per request)
//! and `--metrics-path=/metrics` (responses counted by status class and
//! timed into a histogram, the stack's counters exported). The figure is
//! the median requests/s over the rounds; the ratio is against the
//! baseline of the same rounds. The goal: metrics cost at most 3%.

use std::time::Duration;

use super::network::{Wrk, wrk};
use super::{Prepared, progress, runnable};
use crate::error::BenchError;
use crate::exec::Service;
use crate::netns::{self, GUEST_V4, Netns, PREFIX};
use crate::report::{Baseline, Row, Status};
use crate::setup::{Built, Variant};

const SECTION: &str = "observe";
const UNIT: &str = "req/s";
/// How long a server may take to answer its first request.
const READY: Duration = Duration::from_secs(15);

/// The settings compared: a name for the table and www's arguments. The
/// first is the baseline.
const SETTINGS: [(&str, &[&str]); 4] = [
    ("www req/s, --log=warn (baseline)", &["--log=warn"]),
    (
        "www req/s, --log=info (debug access log filtered out)",
        &["--log=info"],
    ),
    (
        "www req/s, --log=debug (an access-log line per request)",
        &["--log=debug"],
    ),
    (
        "www req/s, --metrics-path=/metrics, --log=warn",
        &["--log=warn", "--metrics-path=/metrics"],
    ),
];

/// The targets measured, rounds and seconds of load per setting.
fn plan(quick: bool) -> (&'static [Variant], usize, u32) {
    if quick {
        (&[Variant::UnixDirect], 1, 2)
    } else {
        (&[Variant::UnixDirect, Variant::Hvt, Variant::Spt], 5, 5)
    }
}

/// Starts www as built with `extra` arguments inside `ns`; the server and
/// its URL.
fn start(
    p: &Prepared,
    ns: &Netns,
    built: &Built,
    extra: &[&str],
) -> Result<(Service, String), BenchError> {
    let mut args = vec![format!("--ipv4={GUEST_V4}/{PREFIX}"), "--port=80".into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let url = format!("http://{GUEST_V4}/");
    let log = p
        .env
        .work
        .join(format!("www-observe-{}.log", built.variant.name()));
    let mut service = ns.start(&built.argv(None, Some(netns::TAP), &args), &log)?;
    ns.wait_http(&mut service, &url, READY)?;
    Ok((service, url))
}

/// One load of www with `extra`.
fn load(
    p: &Prepared,
    ns: &Netns,
    built: &Built,
    extra: &[&str],
    secs: u32,
) -> Result<Wrk, BenchError> {
    let (service, url) = start(p, ns, built, extra)?;
    let r = wrk(ns, &url, secs, super::network::TIMEOUT_SECS);
    drop(service);
    r
}

/// Runs the observe section.
pub fn run(p: &Prepared) -> Vec<Row> {
    progress("observe: www req/s with logging and metrics settings");
    let mut rows = Vec::new();
    if let Some(why) = crate::netns::root_missing() {
        rows.push(Row::missing(
            SECTION,
            "all",
            "-",
            UNIT,
            Status::NotAvailable(why),
        ));
        return rows;
    }
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            let why = format!("cannot create a network namespace with a tap: {e}");
            rows.push(Row::missing(SECTION, "all", "-", UNIT, Status::Failed(why)));
            return rows;
        }
    };
    let (variants, rounds, secs) = plan(p.counts.quick);
    for variant in variants {
        let Some((_, a)) = p.www.iter().find(|(v, _)| v == variant) else {
            continue;
        };
        let target = variant.name();
        let built = match runnable(a, SECTION, "www", *variant, UNIT) {
            Ok(b) => b,
            Err(row) => {
                rows.push(*row);
                continue;
            }
        };
        progress(&format!(
            "observe: www on {target}, {rounds} round(s) of {} loads of {secs} s",
            SETTINGS.len()
        ));
        // Rounds of every setting in turn, so that a change in the
        // machine's load touches every setting alike.
        let mut samples: Vec<Result<Vec<f64>, String>> =
            SETTINGS.iter().map(|_| Ok(Vec::new())).collect();
        for _ in 0..rounds {
            for ((_, extra), got) in SETTINGS.iter().zip(samples.iter_mut()) {
                if let Ok(list) = got {
                    match load(p, &ns, built, extra, secs) {
                        Ok(w) => list.push(w.rps),
                        Err(e) => *got = Err(e.to_string()),
                    }
                }
            }
        }
        let median = |s: &Result<Vec<f64>, String>| {
            s.as_ref()
                .ok()
                .map(|v| crate::report::Summary::of(v).median)
        };
        let base = samples.first().and_then(median).map(|value| Baseline {
            name: "--log=warn".into(),
            value,
        });
        for (i, ((name, _), got)) in SETTINGS.iter().zip(&samples).enumerate() {
            rows.push(match got {
                Ok(v) => {
                    let row = Row::samples(SECTION, name, target, v, UNIT);
                    if i == 0 {
                        row
                    } else {
                        row.against(base.clone())
                    }
                }
                Err(e) => Row::missing(SECTION, name, target, UNIT, Status::Failed(e.clone())),
            });
        }
    }
    rows
}
