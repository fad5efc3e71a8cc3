//! boot: whole-process wall time of a unikernel that exits at once
//! (`hello --times 0`) on each target, interleaved with a static C program
//! and a bare KVM VM so that all share the machine's load.

use std::time::Duration;

use super::{Prepared, progress, runnable};
use crate::exec::{self, Argv, argv};
use crate::report::{Baseline, Row, Status, Summary, ms};
use crate::setup::Variant;

const SECTION: &str = "boot";
const LIMIT: Duration = Duration::from_secs(30);
const STATIC: &str = "static exec (gcc -static)";

struct Case {
    variant: Option<Variant>,
    row: Row,
    argv: Option<Argv>,
    samples: Vec<f64>,
}

impl Case {
    fn new(name: &str, target: &str, argv: Option<Argv>, missing: Option<Status>) -> Self {
        Case {
            variant: None,
            row: Row::missing(SECTION, name, target, "ms", missing.unwrap_or(Status::Ok)),
            argv,
            samples: Vec::new(),
        }
    }

    fn time(&mut self) {
        let Some(a) = &self.argv else { return };
        match exec::time_once(a, LIMIT) {
            Ok(d) => self.samples.push(ms(d)),
            Err(e) => {
                self.row.status = Status::Failed(e.to_string());
                self.argv = None;
            }
        }
    }

    fn finish(mut self, baseline: Option<Baseline>) -> Row {
        if matches!(self.row.status, Status::Ok) {
            let r = Row::samples(
                SECTION,
                &self.row.name,
                &self.row.target,
                &self.samples,
                "ms",
            );
            self.row = r;
        }
        self.row.against(baseline)
    }
}

/// Runs the boot section.
pub fn run(p: &Prepared) -> Vec<Row> {
    let runs = p.counts.boot_runs;
    progress(&format!("boot: {runs} interleaved runs per case"));
    let baseline_case = |name: &str, path: &Result<std::path::PathBuf, String>| match path {
        Ok(path) => Case::new(name, "-", Some(argv([path])), None),
        Err(why) => Case::new(
            name,
            "-",
            None,
            Some(Status::NotAvailable(
                crate::report::Unavailable::NoBaseline(why.clone()),
            )),
        ),
    };
    let bare = p.bare_kvm_name();
    let mut cases = vec![
        baseline_case(STATIC, &p.static_hello),
        baseline_case(&bare, &p.bare_kvm),
    ];
    if let Some(why) = crate::setup::kvm_missing() {
        cases[1] = Case::new(&bare, "-", None, Some(Status::NotAvailable(why)));
    }
    let name = "hello --times 0";
    for (variant, a) in &p.hello {
        let mut case = match runnable(a, SECTION, name, *variant, "ms") {
            Ok(b) => Case::new(
                name,
                variant.name(),
                Some(b.argv(None, None, &["--times".into(), "0".into()])),
                None,
            ),
            Err(row) => Case {
                variant: None,
                row: *row,
                argv: None,
                samples: Vec::new(),
            },
        };
        case.variant = Some(*variant);
        cases.push(case);
    }
    // Warm the page cache once per case.
    for c in &mut cases {
        c.time();
        c.samples.clear();
    }
    for _ in 0..runs {
        for c in &mut cases {
            c.time();
        }
    }
    let medians: Vec<Option<f64>> = cases
        .iter()
        .map(|c| (!c.samples.is_empty()).then(|| Summary::of(&c.samples).median))
        .collect();
    let base = |i: usize, name: &str| {
        medians[i].map(|value| Baseline {
            name: name.into(),
            value,
        })
    };
    let (static_base, bare_base) = (base(0, STATIC), base(1, &bare));
    let mut rows = Vec::new();
    for c in cases {
        let baseline = match c.variant {
            None => None,
            Some(Variant::Hvt) => bare_base.clone(),
            Some(_) => static_base.clone(),
        };
        rows.push(c.finish(baseline));
    }
    rows
}
