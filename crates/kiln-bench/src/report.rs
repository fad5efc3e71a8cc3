//! Results: one row per figure with its unit, baseline and ratio; printed
//! as a table, as JSON, and checked for sanity.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// The benchmark sections, in the order they run.
pub const SECTIONS: [&str; 13] = [
    "boot",
    "hvt",
    "size",
    "memory",
    "network",
    "storage",
    "build",
    "soak",
    "virtio",
    "bulk",
    "observe",
    "tls",
    "supervisor",
];

/// A figure a row compares against, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// What it is.
    pub name: String,
    /// Its value, in the row's unit.
    pub value: f64,
}

/// Why this machine cannot measure a figure. Anything else that keeps a
/// figure from being produced (a configure or build that fails on any
/// target, a load generator that fails) is [`Status::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Unavailable {
    /// `/dev/kvm` cannot be opened: the OS error.
    NoKvm(String),
    /// Not root: no network namespace or tap.
    NotRoot,
    /// A baseline program (gcc's static hello, bare-kvm) could not be made:
    /// why.
    NoBaseline(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NoKvm(e) => write!(f, "/dev/kvm cannot be opened ({e})"),
            Unavailable::NotRoot => {
                f.write_str("needs root for a network namespace and a tap; hint: run as root")
            }
            Unavailable::NoBaseline(why) => write!(f, "no baseline: {why}"),
        }
    }
}

/// Whether a row has a figure.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum Status {
    /// Measured.
    Ok,
    /// This machine cannot measure it (never a failure of kiln's).
    NotAvailable(Unavailable),
    /// Left out on purpose (`--quick`).
    Skipped(String),
    /// Measuring failed.
    Failed(String),
}

/// One figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The section (`boot`, `size`, ...).
    pub section: &'static str,
    /// What was measured.
    pub name: String,
    /// The target, or `-` for a baseline-only row.
    pub target: String,
    /// The value (the median where there are several runs).
    pub value: f64,
    /// The smallest and largest of several runs.
    pub min: Option<f64>,
    /// See `min`.
    pub max: Option<f64>,
    /// How many runs the value summarizes.
    pub runs: Option<usize>,
    /// The unit.
    pub unit: &'static str,
    /// What it compares against.
    pub baseline: Option<Baseline>,
    /// Whether there is a figure.
    #[serde(flatten)]
    pub status: Status,
}

impl Row {
    /// A measured row.
    pub fn ok(
        section: &'static str,
        name: &str,
        target: &str,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Row {
            section,
            name: name.into(),
            target: target.into(),
            value,
            min: None,
            max: None,
            runs: None,
            unit,
            baseline: None,
            status: Status::Ok,
        }
    }

    /// A row without a figure.
    pub fn missing(
        section: &'static str,
        name: &str,
        target: &str,
        unit: &'static str,
        status: Status,
    ) -> Self {
        Row {
            status,
            ..Row::ok(section, name, target, 0.0, unit)
        }
    }

    /// A row from samples (median, min, max).
    pub fn samples(
        section: &'static str,
        name: &str,
        target: &str,
        samples: &[f64],
        unit: &'static str,
    ) -> Self {
        let s = Summary::of(samples);
        Row {
            min: Some(s.min),
            max: Some(s.max),
            runs: Some(samples.len()),
            ..Row::ok(section, name, target, s.median, unit)
        }
    }

    /// With a baseline, when there is one.
    pub fn against(mut self, baseline: Option<Baseline>) -> Self {
        self.baseline = baseline;
        self
    }

    /// `value / baseline`, when both exist.
    pub fn ratio(&self) -> Option<f64> {
        match (&self.status, &self.baseline) {
            (Status::Ok, Some(b)) if b.value != 0.0 => Some(self.value / b.value),
            _ => None,
        }
    }

    /// What is wrong with this row's figures, if anything: a failure, or a
    /// value or baseline that is zero, negative or not finite.
    pub fn problem(&self) -> Option<String> {
        let bad = |v: f64| !v.is_finite() || v <= 0.0;
        match &self.status {
            Status::Failed(why) => Some(format!("failed: {why}")),
            Status::NotAvailable(_) | Status::Skipped(_) => None,
            Status::Ok => {
                let mut values = vec![self.value];
                values.extend(self.min);
                values.extend(self.max);
                values.extend(self.baseline.as_ref().map(|b| b.value));
                values
                    .into_iter()
                    .find(|v| bad(*v))
                    .map(|v| format!("not a sane figure: {v}"))
            }
        }
    }
}

/// Median, minimum and maximum.
pub struct Summary {
    /// The median (the upper one of an even count).
    pub median: f64,
    /// The minimum.
    pub min: f64,
    /// The maximum.
    pub max: f64,
}

impl Summary {
    /// Of `samples`; all zero when there are none.
    pub fn of(samples: &[f64]) -> Self {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        Summary {
            median: s.get(s.len() / 2).copied().unwrap_or(0.0),
            min: s.first().copied().unwrap_or(0.0),
            max: s.last().copied().unwrap_or(0.0),
        }
    }
}

/// Milliseconds in `d`.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A number with precision fitting its size.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The cells of a row: figure, target, value, unit, min–max, baseline,
/// ratio.
fn cells(r: &Row) -> [String; 7] {
    let value = match &r.status {
        Status::Ok => num(r.value),
        Status::NotAvailable(why) => format!("not available: {why}"),
        Status::Skipped(why) => format!("skipped: {why}"),
        Status::Failed(why) => format!("FAILED: {why}"),
    };
    let range = match (r.min, r.max, r.runs, &r.status) {
        (Some(lo), Some(hi), Some(n), Status::Ok) => format!("{}–{} ({n} runs)", num(lo), num(hi)),
        _ => "—".into(),
    };
    let baseline = r
        .baseline
        .as_ref()
        .map_or("—".into(), |b| format!("{} {}", b.name, num(b.value)));
    let ratio = r.ratio().map_or("—".into(), |x| format!("{}×", num(x)));
    [
        r.name.clone(),
        r.target.clone(),
        value,
        r.unit.into(),
        range,
        baseline,
        ratio,
    ]
}

const HEADER: [&str; 7] = [
    "figure",
    "target",
    "value",
    "unit",
    "min–max",
    "baseline",
    "ratio",
];

/// The rows of `section` as an aligned text table.
pub fn text_table(rows: &[Row]) -> String {
    let table: Vec<[String; 7]> = rows.iter().map(cells).collect();
    let mut width = HEADER.map(|h| h.chars().count());
    for row in &table {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count()).min(60);
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            let pad = w.saturating_sub(c.chars().count());
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c}{}  ", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(&mut out, &HEADER.map(String::from));
    for row in &table {
        line(&mut out, row);
    }
    out
}

/// The rows as a Markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        HEADER.join(" | "),
        " --- |".repeat(HEADER.len())
    );
    for row in rows {
        let c = cells(row).map(|c| c.replace('|', "\\|"));
        let _ = writeln!(out, "| {} |", c.join(" | "));
    }
    out
}
