//! size: stripped sizes of the images and tenders `kiln build` makes,
//! beside a stripped static C program and the bare KVM baseline.

use std::path::Path;
use std::time::Duration;

use super::{Prepared, progress, ready};
use crate::error::BenchError;
use crate::exec::{self, Context, argv};
use crate::report::{Baseline, Row, Status};
use crate::setup::{Availability, Variant};

const SECTION: &str = "size";
const UNIT: &str = "KiB";

/// The size in KiB of a stripped copy of `path`.
fn stripped_kib(work: &Path, path: &Path) -> Result<f64, BenchError> {
    let copy = work.join("stripped");
    std::fs::copy(path, &copy).map_err(|e| BenchError::io("copy to", &copy, e))?;
    exec::run_ok(
        &argv([Path::new("strip"), copy.as_path()]),
        Context::default(),
        Duration::from_secs(60),
    )?;
    let len = std::fs::metadata(&copy)
        .map_err(|e| BenchError::io("stat", &copy, e))?
        .len();
    let _ = std::fs::remove_file(&copy);
    Ok(len as f64 / 1024.0)
}

fn row(work: &Path, name: &str, target: &str, path: &Path, baseline: Option<Baseline>) -> Row {
    match stripped_kib(work, path) {
        Ok(kib) => Row::ok(SECTION, name, target, kib, UNIT).against(baseline),
        Err(e) => Row::missing(SECTION, name, target, UNIT, Status::Failed(e.to_string())),
    }
}

/// Runs the size section.
pub fn run(p: &Prepared) -> Vec<Row> {
    progress("size: stripping copies");
    let work = &p.env.work;
    let mut rows = Vec::new();
    let mut base = |name: &str, path: &Result<std::path::PathBuf, String>| -> Option<Baseline> {
        let r = match path {
            Ok(path) => row(work, name, "-", path, None),
            Err(why) => Row::missing(
                SECTION,
                name,
                "-",
                UNIT,
                Status::NotAvailable(crate::report::Unavailable::NoBaseline(why.clone())),
            ),
        };
        let b = matches!(r.status, Status::Ok).then(|| Baseline {
            name: name.into(),
            value: r.value,
        });
        rows.push(r);
        b
    };
    let static_base = base("static exec (gcc -static)", &p.static_hello);
    let bare_base = base(&p.bare_kvm_name(), &p.bare_kvm);
    for (app, builds) in [("hello", &p.hello), ("www", &p.www)] {
        for (variant, a) in builds {
            let name = format!("{app} image");
            rows.push(match ready(a, SECTION, &name, *variant, UNIT) {
                Ok(b) => row(work, &name, variant.name(), &b.image, static_base.clone()),
                Err(r) => *r,
            });
        }
    }
    for (tender, variant) in [("kiln-hvt", Variant::Hvt), ("kiln-spt", Variant::Spt)] {
        for (app, modules, builds) in [("hello", "no modules", &p.hello), ("www", "net", &p.www)] {
            let name = format!("{tender} for {app} ({modules})");
            let a = builds
                .iter()
                .find(|(v, _)| *v == variant)
                .map_or(Availability::Broken("not built".into()), |(_, a)| a.clone());
            let baseline = (variant == Variant::Hvt)
                .then(|| bare_base.clone())
                .flatten();
            rows.push(match ready(&a, SECTION, &name, variant, UNIT) {
                Ok(b) => match &b.tender {
                    Some(t) => row(work, &name, variant.name(), t, baseline),
                    None => Row::missing(
                        SECTION,
                        &name,
                        variant.name(),
                        UNIT,
                        Status::Failed("no tender was built".into()),
                    ),
                },
                Err(r) => *r,
            });
        }
    }
    rows
}
