//! kiln-bench: measures kiln on one machine in one run and prints every
//! figure as a row with its unit, its same-run baseline and the ratio.
//!
//! ```text
//! cargo run --release -p kiln-bench -- [--quick] [--only NAME] [--json] [--write-docs]
//! ```
//!
//! Layers, bottom up: `error` (the error type), `exec` (running programs,
//! timed and bounded; services killed on drop), `netns` (a network
//! namespace with a tap, removed on drop; nginx's configuration), `setup`
//! (building `kiln`, the baselines and the examples' images per target
//! through the `kiln` CLI), `sections` (boot, size, memory, network,
//! build: each returns rows), `report` (rows, tables, sanity checks),
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

use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;

use crate::report::{Row, SECTIONS, Status};
use crate::sections::{Counts, HELLO_VARIANTS, Prepared, WWW_VARIANTS, progress};
use crate::setup::{Availability, Env, Variant};

/// Measure kiln: boot, size, memory, network and build figures beside
/// same-run baselines.
#[derive(Debug, Parser)]
#[command(name = "kiln-bench", max_term_width = 100)]
struct Args {
    /// Fewer runs, short loads, no from-clean builds; checks that every
    /// figure is produced and sane
    #[arg(long)]
    quick: bool,
    /// Run only these sections (boot, hvt, size, memory, network, storage, build)
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    only: Vec<String>,
    /// Print the results as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Write docs/benchmarks.md (the default for a full run of every
    /// section)
    #[arg(long)]
    write_docs: bool,
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

fn prepare(env: Env, counts: Counts, sections: &[&str]) -> Prepared {
    let wants = |s: &str| sections.contains(&s);
    let static_hello = if wants("boot") || wants("size") {
        progress("building the static C baseline");
        env.build_static_hello().map_err(|e| e.to_string())
    } else {
        Err("not needed".into())
    };
    let bare_kvm = if wants("boot") || wants("size") || wants("hvt") {
        progress("building kiln-hvt's bare-kvm example");
        env.build_bare_kvm().map_err(|e| e.to_string())
    } else {
        Err("not needed".into())
    };
    let build_all = |app: &str, variants: &[Variant], net: bool| {
        variants
            .iter()
            .map(|&v| {
                progress(&format!("building {app} for {}", v.name()));
                let a = match env.copy_example(app, &format!("{app}-{}", v.name())) {
                    Ok(dir) => setup::build(&env, &dir, v, net),
                    Err(e) => Availability::Broken(e.to_string()),
                };
                if let Availability::Missing(why) = &a {
                    progress(&format!("{app} on {}: not available: {why}", v.name()));
                }
                (v, a)
            })
            .collect::<Vec<_>>()
    };
    let images_for_build = wants("build") && counts.quick;
    let hello = if wants("boot") || wants("size") || wants("memory") || images_for_build {
        build_all("hello", &HELLO_VARIANTS, false)
    } else {
        Vec::new()
    };
    let www = if wants("size") || wants("memory") || wants("network") || images_for_build {
        build_all("www", &WWW_VARIANTS, true)
    } else {
        Vec::new()
    };
    let www_big = if wants("network") && !counts.quick {
        [Variant::Unix, Variant::UnixDirect]
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
    Prepared {
        env,
        counts,
        static_hello,
        bare_kvm,
        hello,
        www,
        www_big,
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
        if let Status::NotAvailable(why) = &r.status
            && ci
            && (why.contains("/dev/kvm") || why.contains("needs root"))
        {
            out.push(format!("{what}: not available with CI=true: {why}"));
        }
    }
    out
}

fn main() -> ExitCode {
    let args = Args::parse();
    let sections: Vec<&str> = if args.only.is_empty() {
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

    let env = match Env::new() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("kiln-bench: error: {e}");
            return ExitCode::from(2);
        }
    };
    progress("building kiln");
    if let Err(e) = env.build_kiln() {
        eprintln!("kiln-bench: error: cannot build the kiln tool: {e}");
        return ExitCode::FAILURE;
    }
    let docs_path = env.workspace.join("docs/benchmarks.md");
    let prepared = prepare(env, Counts::new(args.quick), &sections);
    let mut rows = Vec::new();
    for section in &sections {
        let new = match *section {
            "boot" => sections::boot::run(&prepared),
            "hvt" => sections::hvt::run(&prepared),
            "size" => sections::size::run(&prepared),
            "memory" => sections::memory::run(&prepared),
            "network" => sections::network::run(&prepared),
            "storage" => sections::storage::run(&prepared),
            _ => sections::build::run(&prepared),
        };
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
        let old = std::fs::read_to_string(&docs_path).unwrap_or_default();
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
