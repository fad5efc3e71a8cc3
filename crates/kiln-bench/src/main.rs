//! kiln-bench: measures kiln on one machine in one run and prints every
//! figure as a row with its unit, its same-run baseline and the ratio.
//!
//! ```text
//! cargo run --release -p kiln-bench -- [--quick] [--only NAME] [--json] [--write-docs]
//! ```
//!
//! A full run writes `docs/benchmarks.md`. `--quick` is the smoke run at
//! the end of `scripts/test`: it produces every figure and fails unless
//! each is sane (measured, non-zero, finite), never on a time threshold,
//! and unless the soak section's server served its last window as fast and
//! as cheaply as its first, without memory growth (ratios within one run:
//! see `sections::soak`). Its figures are not comparable with a full
//! run's, and it takes about three minutes after `cargo test --workspace`
//! because it builds only what the tests have not:
//!
//! - the workspace programs it runs (`kiln`, `bare-kvm`, `kiln-hvt` and
//!   its bench harness) are dev builds by `cargo build --workspace --bins
//!   --examples --bench hvt`, which resolves features as `cargo test
//!   --workspace` does, so that after the tests only the harness compiles;
//!   rows measuring one of them say `dev build`;
//! - the images are built by `kiln build` into the cargo target directory
//!   kiln's tests build theirs in (`target/tmp/kiln-e2e-target`), so only
//!   the copies of the examples and the final links compile;
//! - fewer runs and shorter loads (boot 5 runs, ping 2000 packets or 5 s,
//!   wrk 5 s, 2000 frames per echo case, 100 store changes, 5 crash
//!   iterations); no 1 MiB-file wrk case in the network section (the
//!   soak builds www with the 1 MiB file for its four targets, not
//!   virtio's);
//! - build: hello only, on each target, "from clean, dependencies
//!   compiled" (a fresh copy after `kiln clean`, where building the same
//!   image has compiled every dependency) instead of a from-clean build in
//!   a target directory of its own, which takes minutes; then after an
//!   edit, as in a full run. www's builds are listed as skipped;
//! - soak: four windows of 2 s keep-alive, 1 s churn and 2 s on the 1 MiB
//!   file per kiln target (about 21 s each; nginx is left out) instead of
//!   10 minutes per target (`--soak-minutes N` sets the length of either).
//!
//! A wrk load that completes no request or records no latency (a server
//! slower than the load is long, as hvt under nested KVM has been) runs
//! once more, four times as long with a request timeout as long as the
//! load, in quick and full runs alike: a slow target gets a figure, and
//! the run stays bounded.
//!
//! Layers, bottom up: `error` (the error type), `exec` (running programs,
//! timed and bounded; services killed on drop), `netns` (a network
//! namespace with a tap, removed on drop; nginx's configuration), `setup`
//! (building `kiln`, the baselines and the examples' images per target
//! through the `kiln` CLI), `slow` (the soak's slow clients, which this
//! program runs inside the namespace), `sections` (boot, size, memory,
//! network, storage, build, soak: each returns rows), `report` (rows,
//! tables, sanity checks),
//! `machine` and `docs` (the generated `docs/benchmarks.md`).
#![deny(unsafe_code)]

mod docs;
mod error;
mod exec;
mod machine;
mod netns;
mod report;
mod sections;
mod setup;
mod slow;

use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;

use crate::report::{Row, SECTIONS, Status, Unavailable};
use crate::sections::hvt::Harness;
use crate::sections::{Counts, HELLO_VARIANTS, Prepared, WWW_VARIANTS, progress};
use crate::setup::{Availability, Env, Profile, Variant};

/// Measure kiln: boot, size, memory, network and build figures beside
/// same-run baselines.
#[derive(Debug, Parser)]
#[command(name = "kiln-bench", max_term_width = 100)]
struct Args {
    /// The smoke run: fewer runs, short loads, dev builds of the workspace
    /// programs, builds of hello only and with dependencies compiled; fails
    /// unless every figure is produced and sane (no time thresholds)
    #[arg(long)]
    quick: bool,
    /// Run only these sections (boot, hvt, size, memory, network, storage, build, soak,
    /// virtio, bulk, observe, tls, supervisor)
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    only: Vec<String>,
    /// Print the results as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Write docs/benchmarks.md (the default for a full run of every
    /// section)
    #[arg(long)]
    write_docs: bool,
    /// Minutes of load per target in the soak section (default: 10, or
    /// 20 s with --quick)
    #[arg(long, value_name = "N")]
    soak_minutes: Option<f64>,
    /// Run slow clients instead of benchmarks (ADDR,COUNT,SECONDS; what
    /// the soak section starts inside its network namespace)
    #[arg(long, value_name = "SPEC", hide = true)]
    slow_clients: Option<String>,
}

/// The `--json` document.
#[derive(Serialize)]
struct Results<'a> {
    command: &'a str,
    date: &'a str,
    load_average_before: &'a str,
    load_average_after: &'a str,
    machine: &'a machine::Machine,
    quick: bool,
    rows: &'a [Row],
}

/// Builds `app` (a fresh copy of `examples/APP` named `APP-VARIANT`, or
/// `copy` for all variants) for each of `variants`.
fn build_all(
    env: &Env,
    app: &str,
    copy: Option<&str>,
    variants: &[Variant],
    net: bool,
) -> Vec<(Variant, Availability)> {
    variants
        .iter()
        .map(|&v| {
            progress(&format!("building {app} for {}", v.name()));
            let name = copy.map_or_else(|| format!("{app}-{}", v.name()), str::to_owned);
            let a = match env.copy_example(app, &name) {
                Ok(dir) => setup::build(env, &dir, v, net),
                Err(e) => Availability::Broken(e.to_string()),
            };
            if let Availability::Broken(why) = &a {
                progress(&format!("{app} on {}: FAILED: {why}", v.name()));
            }
            (v, a)
        })
        .collect()
}

/// The baselines and the hvt section's programs, built with cargo into
/// the command's target directory.
struct Programs {
    static_hello: Result<std::path::PathBuf, String>,
    bare_kvm: Result<std::path::PathBuf, String>,
    hvt: Result<Harness, String>,
}

/// Builds the baselines and the hvt section's programs; `harness` is the
/// one [`Env::build_kiln`] built, if it did.
fn build_programs(
    env: &Env,
    wants: &dyn Fn(&str) -> bool,
    harness: Option<&std::path::Path>,
) -> Programs {
    let not_needed = || "not needed".to_string();
    let static_hello = if wants("boot") || wants("size") {
        progress("building the static C baseline");
        env.build_static_hello().map_err(|e| e.to_string())
    } else {
        Err(not_needed())
    };
    let bare_kvm = if wants("boot") || wants("size") || wants("hvt") {
        progress("building kiln-hvt's bare-kvm example");
        env.build_bare_kvm().map_err(|e| e.to_string())
    } else {
        Err(not_needed())
    };
    let hvt = match harness {
        Some(path) => Ok(Harness::Built(path.to_owned())),
        None if wants("hvt") && setup::kvm_missing().is_none() => {
            progress("building kiln-hvt and its bench harness");
            sections::hvt::build(env).map_err(|e| e.to_string())
        }
        None => Err(not_needed()),
    };
    Programs {
        static_hello,
        bare_kvm,
        hvt,
    }
}

/// Builds everything the chosen sections run: the programs cargo builds
/// in the command's target directory on one thread while `kiln build`
/// makes the images in the unikernel target directory on this one (each
/// directory takes one build at a time).
fn prepare(
    env: Env,
    counts: Counts,
    sections: &[&str],
    harness: Option<&std::path::Path>,
) -> Prepared {
    let wants = |s: &str| sections.contains(&s);
    // A quick build section times rebuilds of hello beside its images.
    let images_for_build = wants("build") && counts.quick;
    let (programs, images) = std::thread::scope(|scope| {
        let programs = scope.spawn(|| build_programs(&env, &wants, harness));
        let hello = if wants("boot")
            || wants("size")
            || wants("memory")
            || wants("supervisor")
            || images_for_build
        {
            build_all(&env, "hello", None, &HELLO_VARIANTS, false)
        } else {
            Vec::new()
        };
        let www = if wants("size") || wants("memory") || wants("network") || wants("observe") {
            build_all(&env, "www", None, &WWW_VARIANTS, true)
        } else {
            Vec::new()
        };
        let www_big = if (wants("network") && !counts.quick) || wants("soak") {
            WWW_VARIANTS
                .into_iter()
                .map(|v| {
                    progress(&format!("building www with a 1 MiB file for {}", v.name()));
                    let copy = env.copy_example("www", &format!("www-big-{}", v.name()));
                    let a = match copy.and_then(|dir| {
                        let path = dir.join("htdocs").join(sections::BIG_FILE);
                        std::fs::write(&path, sections::big_file())
                            .map_err(|e| error::BenchError::io("write", path, e))?;
                        Ok(dir)
                    }) {
                        Ok(dir) => setup::build(&env, &dir, v, true),
                        Err(e) => Availability::Broken(e.to_string()),
                    };
                    (v, a)
                })
                .collect()
        } else {
            Vec::new()
        };
        let (blockbench, notes) = if wants("storage") {
            let variants = sections::storage::VARIANTS;
            (
                build_all(&env, "blockbench", Some("blockbench"), &variants, false),
                build_all(&env, "notes", Some("notes"), &variants, false),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let bulk = if wants("bulk") {
            build_all(
                &env,
                "bulk",
                None,
                sections::bulk::variants(counts.quick),
                true,
            )
        } else {
            Vec::new()
        };
        let wwws = if wants("tls") {
            let variants: &[Variant] = if counts.quick {
                &sections::tls::QUICK_VARIANTS
            } else {
                &sections::tls::VARIANTS
            };
            build_all(&env, "wwws", None, variants, true)
        } else {
            Vec::new()
        };
        let programs = programs.join().unwrap_or_else(|_| {
            let why = "the thread building it panicked".to_string();
            Programs {
                static_hello: Err(why.clone()),
                bare_kvm: Err(why.clone()),
                hvt: Err(why),
            }
        });
        (
            programs,
            [hello, www, www_big, blockbench, notes, bulk, wwws],
        )
    });
    let [hello, www, www_big, blockbench, notes, bulk, wwws] = images;
    Prepared {
        env,
        counts,
        static_hello: programs.static_hello,
        bare_kvm: programs.bare_kvm,
        hvt_harness: programs.hvt,
        hello,
        www,
        www_big,
        blockbench,
        notes,
        bulk,
        wwws,
    }
}

/// Wall time per phase of the run, for the progress on stderr.
struct Phases {
    since: std::time::Instant,
    done: Vec<(String, f64)>,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            since: std::time::Instant::now(),
            done: Vec::new(),
        }
    }
}

impl Phases {
    /// Ends the phase `name`, which began when the last one ended.
    fn done(&mut self, name: &str) {
        let now = std::time::Instant::now();
        let took = now.duration_since(self.since).as_secs_f64();
        self.done.push((name.to_owned(), took));
        self.since = now;
    }

    /// `name N.N s` for each phase, and the total.
    fn summary(&self) -> String {
        let total: f64 = self.done.iter().map(|(_, s)| s).sum();
        let mut parts: Vec<String> = self
            .done
            .iter()
            .map(|(name, s)| format!("{name} {s:.1} s"))
            .collect();
        parts.push(format!("total {total:.1} s"));
        parts.join(", ")
    }
}

/// Problems that make the run fail: failed or insane figures, and under
/// `CI=true` figures missing for want of /dev/kvm or root.
fn problems(rows: &[Row]) -> Vec<String> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let mut out = Vec::new();
    for r in rows {
        let what = format!("{} / {} / {}", r.section, r.name, r.target);
        if let Some(p) = r.problem() {
            out.push(format!("{what}: {p}"));
        }
        if let Status::NotAvailable(why @ (Unavailable::NoKvm(_) | Unavailable::NotRoot)) =
            &r.status
            && ci
        {
            out.push(format!("{what}: not available with CI=true: {why}"));
        }
    }
    out
}

/// Sections a quick run without `--only` leaves out, and why.
const NOT_QUICK: [(&str, &str); 1] = [(
    "tls",
    "its release build of rustls and the RustCrypto crates takes 1 to 3 minutes on 2 cores",
)];

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(spec) = &args.slow_clients {
        let Some((addr, count, secs)) = slow::parse_spec(spec) else {
            eprintln!(
                "kiln-bench: error: bad --slow-clients `{spec}`\nhint: it takes ADDR,COUNT,SECONDS"
            );
            return ExitCode::from(2);
        };
        let tell = |r: &slow::SlowReport| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", r.line());
            let _ = out.flush();
        };
        slow::run(addr, count, secs, &tell);
        return ExitCode::SUCCESS;
    }
    if let Some(m) = args.soak_minutes
        && !(m.is_finite() && m > 0.0)
    {
        eprintln!("kiln-bench: error: --soak-minutes {m} is not a positive number of minutes");
        return ExitCode::from(2);
    }
    let sections: Vec<&str> = if args.only.is_empty() && args.quick {
        // The smoke run in CI: a section whose images alone take minutes
        // to build runs only when named.
        for (name, why) in NOT_QUICK {
            eprintln!(
                "kiln-bench: --quick leaves out {name} ({why}); `--quick --only {name}` runs it"
            );
        }
        SECTIONS
            .iter()
            .copied()
            .filter(|s| NOT_QUICK.iter().all(|(name, _)| name != s))
            .collect()
    } else if args.only.is_empty() {
        SECTIONS.to_vec()
    } else {
        let mut chosen = Vec::new();
        for name in &args.only {
            match SECTIONS.iter().find(|s| **s == name.as_str()) {
                Some(s) => chosen.push(*s),
                None => {
                    eprintln!(
                        "kiln-bench: error: unknown section `{name}`\nhint: --only takes {}",
                        SECTIONS.join(", ")
                    );
                    return ExitCode::from(2);
                }
            }
        }
        chosen
    };
    let mut command = String::from("cargo run --release -p kiln-bench --");
    for a in std::env::args().skip(1) {
        command.push(' ');
        command.push_str(&a);
    }
    let machine = machine::Machine::probe();
    let date = machine::now_utc();
    let load_before = machine::load_average();

    let profile = if args.quick {
        Profile::Dev
    } else {
        Profile::Release
    };
    let env = match Env::new(profile) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("kiln-bench: error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut phases = Phases::default();
    progress(&format!("building kiln ({})", env.profile.dir()));
    let built = env.build_kiln();
    phases.done("kiln");
    let harness = match built {
        Ok(harness) => harness,
        Err(e) => {
            eprintln!("kiln-bench: error: cannot build the kiln tool: {e}");
            return ExitCode::FAILURE;
        }
    };
    let docs_path = env.workspace.join("docs/benchmarks.md");
    let prepared = prepare(env, Counts::new(args.quick), &sections, harness.as_deref());
    phases.done("images and baselines");
    let mut rows = Vec::new();
    for section in &sections {
        let new = match *section {
            "boot" => sections::boot::run(&prepared),
            "hvt" => sections::hvt::run(&prepared),
            "size" => sections::size::run(&prepared),
            "memory" => sections::memory::run(&prepared),
            "network" => sections::network::run(&prepared),
            "observe" => sections::observe::run(&prepared),
            "storage" => sections::storage::run(&prepared),
            "virtio" => sections::virtio::run(&prepared),
            "bulk" => sections::bulk::run(&prepared),
            "supervisor" => sections::supervisor::run(&prepared),
            "soak" => sections::soak::run(
                &prepared,
                sections::soak::Plan::new(args.quick, args.soak_minutes),
            ),
            "tls" => {
                let mut rows = sections::tls::run(&prepared);
                if args.quick {
                    rows.extend(sections::tls::skipped_in_quick());
                }
                rows
            }
            _ => sections::build::run(&prepared),
        };
        phases.done(section);
        if !args.json {
            println!("\n## {section}\n\n{}", report::text_table(&new));
        }
        rows.extend(new);
    }
    let load_after = machine::load_average();
    if args.json {
        let results = Results {
            command: &command,
            date: &date,
            load_average_before: &load_before,
            load_average_after: &load_after,
            machine: &machine,
            quick: args.quick,
            rows: &rows,
        };
        match serde_json::to_string_pretty(&results) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("kiln-bench: error: cannot write JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let full = !args.quick && args.only.is_empty();
    if args.write_docs || full {
        // The page's hand-written notes are kept: a page that exists but
        // cannot be read stops the run rather than lose them.
        let old = match std::fs::read_to_string(&docs_path) {
            Ok(old) => old,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                eprintln!(
                    "kiln-bench: error: cannot read {} to keep its notes: {e}",
                    docs_path.display()
                );
                return ExitCode::FAILURE;
            }
        };
        let page = docs::page(
            &machine,
            &command,
            &date,
            (&load_before, &load_after),
            &rows,
            docs::kept_notes(&old),
        );
        match std::fs::write(&docs_path, page) {
            Ok(()) => progress(&format!("wrote {}", docs_path.display())),
            Err(e) => {
                eprintln!(
                    "kiln-bench: error: cannot write {}: {e}",
                    docs_path.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    progress(&format!("time per phase: {}", phases.summary()));
    let problems = problems(&rows);
    if problems.is_empty() {
        progress(&format!("{} figures, all sane", rows.len()));
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("kiln-bench: error: {p}");
        }
        eprintln!(
            "kiln-bench: error: {} of {} figures failed",
            problems.len(),
            rows.len()
        );
        ExitCode::FAILURE
    }
}
