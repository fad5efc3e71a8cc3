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
/// The unit of the CPU figures.
const CPU_UNIT: &str = "µs";
/// How many times a server is started before its failure stands: the
/// tender of the setting before may still hold the tap for a moment
/// (kiln-spt's guest process exits after the tender).
const START_TRIES: usize = 10;
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
        // Two rotations of the four settings (see `rotation`), in about
        // the time five rounds of 5 s took.
        (
            &[Variant::UnixDirect, Variant::Hvt, Variant::Spt],
            2 * SETTINGS.len(),
            3,
        )
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
    let mut tries = 0;
    loop {
        tries += 1;
        let mut service = ns.start(&built.argv(None, Some(netns::TAP), &args), &log)?;
        match ns.wait_http(&mut service, &url, READY) {
            Ok(()) => return Ok((service, url)),
            Err(_) if tries < START_TRIES && service.exited().is_some() => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One load of www with `extra`: requests/s and CPU µs per request.
fn load(
    p: &Prepared,
    ns: &Netns,
    built: &Built,
    extra: &[&str],
    secs: u32,
) -> Result<(f64, f64), BenchError> {
    let (service, url) = start(p, ns, built, extra)?;
    let before = service.cpu_nanos();
    let r: Result<Wrk, BenchError> = wrk(ns, &url, secs, super::network::TIMEOUT_SECS);
    let cpu = service.cpu_nanos().saturating_sub(before);
    drop(service);
    let w = r?;
    let requests = (w.rps * f64::from(secs)).max(1.0);
    Ok((w.rps, cpu as f64 / 1e3 / requests))
}

/// The order of `n` settings in round `round`: all of them, starting
/// `round` places on.
fn rotation(round: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
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
        // machine's load touches every setting alike; each round starts one
        // setting further on, so that no setting always runs first or last
        // (in a fixed order, --log=info, the baseline's code, measured 1.07x
        // the baseline's CPU per request on spt, and the metrics setting,
        // always last, 1.07x; 1.02x alternated with the baseline).
        type Samples = Result<(Vec<f64>, Vec<f64>), String>;
        let mut samples: Vec<Samples> = SETTINGS.iter().map(|_| Ok(Default::default())).collect();
        for round in 0..rounds {
            for k in rotation(round, SETTINGS.len()) {
                let (Some((_, extra)), Some(got)) = (SETTINGS.get(k), samples.get_mut(k)) else {
                    continue;
                };
                if let Ok((rates, cpus)) = got {
                    match load(p, &ns, built, extra, secs) {
                        Ok((rps, cpu)) => {
                            rates.push(rps);
                            cpus.push(cpu);
                        }
                        Err(e) => *got = Err(e.to_string()),
                    }
                }
            }
        }
        let median = |v: &[f64]| crate::report::Summary::of(v).median;
        let base = |cpu: bool| {
            samples
                .first()
                .and_then(|s| s.as_ref().ok())
                .map(|(r, c)| Baseline {
                    name: "--log=warn".into(),
                    value: median(if cpu { c } else { r }),
                })
        };
        for (cpu, unit) in [(false, UNIT), (true, CPU_UNIT)] {
            for (i, ((name, _), got)) in SETTINGS.iter().zip(&samples).enumerate() {
                let name = if cpu {
                    name.replace("www req/s", "www CPU per request")
                } else {
                    name.to_string()
                };
                rows.push(match got {
                    Ok((rates, cpus)) => {
                        let v = if cpu { cpus } else { rates };
                        let row = Row::samples(SECTION, &name, target, v, unit);
                        if i == 0 { row } else { row.against(base(cpu)) }
                    }
                    Err(e) => Row::missing(SECTION, &name, target, unit, Status::Failed(e.clone())),
                });
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_takes_each_place_once_in_as_many_rounds() {
        let n = SETTINGS.len();
        let mut seen = vec![vec![0; n]; n];
        for round in 0..n {
            let order: Vec<usize> = rotation(round, n).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                (0..n).collect::<Vec<_>>(),
                "round {round}: {order:?}"
            );
            for (place, k) in order.into_iter().enumerate() {
                seen[k][place] += 1;
            }
        }
        assert!(seen.iter().flatten().all(|c| *c == 1), "{seen:?}");
    }
}
