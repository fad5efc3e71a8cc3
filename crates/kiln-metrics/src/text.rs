//! The Prometheus text exposition format, version 0.0.4
//! (prometheus.io/docs/instrumenting/exposition_formats/): per family one
//! `# HELP name text` line (`\` and newline escaped), one `# TYPE name kind`
//! line, then its samples `name{label="value",...} value`, label values
//! with `\`, `"` and newline escaped; a histogram's samples are its
//! cumulative `name_bucket{le="..."}` lines ending with `le="+Inf"`, then
//! `name_sum` and `name_count`. Every line ends with `\n`.
//!
//! Families written twice (two collectors, or one per device) are merged:
//! the format allows each family name once, with all its samples together.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::metric::Histogram;

/// The `Content-Type` of a response in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The type of a family, its `# TYPE` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; by convention its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

struct FamilyText {
    name: String,
    kind: Kind,
    help: String,
    samples: String,
}

/// A page of metrics being written: families in the order they first
/// appear, each with its samples.
#[derive(Default)]
pub struct Exposition {
    families: Vec<FamilyText>,
}

/// Writes the samples of one family; see [`Exposition::family`].
pub struct Family<'a> {
    /// `None` when the family is refused (a bad name, or an earlier family
    /// of that name had another kind): its samples are dropped.
    text: Option<&'a mut FamilyText>,
}

/// Whether `name` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not
/// starting with the reserved `__`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Appends `text` with `\` and newline escaped, and `"` too when `quote`.
fn escape(out: &mut String, text: &str, quote: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Appends `v / 10^scale` in decimal, without trailing zeros after the
/// point: `5000` at scale 6 is `0.005`, `2000000` is `2`.
pub fn push_decimal(out: &mut String, v: u64, scale: u32) {
    let Some(unit) = 10u64.checked_pow(scale) else {
        let _ = write!(out, "{v}e-{scale}");
        return;
    };
    let (int, frac) = (v / unit, v % unit);
    let _ = write!(out, "{int}");
    if frac != 0 {
        let mut digits = String::new();
        let _ = write!(digits, "{frac:0width$}", width = scale as usize);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts (or continues) the family `name` of `kind`. A name that is
    /// not a valid metric name, or that an earlier family of another kind
    /// used, gets a writer that drops its samples: the page stays valid.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> Family<'_> {
        if !valid_metric_name(name) {
            return Family { text: None };
        }
        let index = match self.families.iter().position(|f| f.name == name) {
            Some(i) if self.families[i].kind == kind => i,
            Some(_) => return Family { text: None },
            None => {
                self.families.push(FamilyText {
                    name: name.into(),
                    kind,
                    help: help.into(),
                    samples: String::new(),
                });
                self.families.len() - 1
            }
        };
        Family {
            text: self.families.get_mut(index),
        }
    }

    /// The page: every family with its `# HELP` and `# TYPE` lines. A
    /// family without samples is left out.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for f in self.families.iter().filter(|f| !f.samples.is_empty()) {
            out.push_str("# HELP ");
            out.push_str(&f.name);
            if !f.help.is_empty() {
                out.push(' ');
                escape(&mut out, &f.help, false);
            }
            out.push_str("\n# TYPE ");
            out.push_str(&f.name);
            out.push(' ');
            out.push_str(f.kind.word());
            out.push('\n');
            out.push_str(&f.samples);
        }
        out
    }
}

/// Appends `name{labels,extra} ` (the braces only when there are labels).
/// Labels with invalid names are left out.
fn push_series(out: &mut String, name: &str, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
    out.push_str(name);
    let mut first = true;
    for (label, value) in labels.iter().copied().chain(extra) {
        if !valid_label_name(label) {
            continue;
        }
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(label);
        out.push_str("=\"");
        escape(out, value, true);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
}

impl Family<'_> {
    /// One sample of a counter or gauge.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        if let Some(f) = self.text.as_deref_mut() {
            push_series(&mut f.samples, &f.name, labels, None);
            let _ = writeln!(f.samples, "{value}");
        }
    }

    /// One sample of a gauge that may be negative.
    pub fn sample_signed(&mut self, labels: &[(&str, &str)], value: i64) {
        if let Some(f) = self.text.as_deref_mut() {
            push_series(&mut f.samples, &f.name, labels, None);
            let _ = writeln!(f.samples, "{value}");
        }
    }

    /// One histogram's series: its cumulative buckets (`le` in the
    /// histogram's unit), `le="+Inf"`, `_sum` and `_count`. Only in a
    /// family of kind [`Kind::Histogram`].
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &Histogram) {
        let Some(f) = self.text.as_deref_mut() else {
            return;
        };
        if f.kind != Kind::Histogram {
            return;
        }
        let snapshot = h.snapshot();
        let mut name = String::with_capacity(f.name.len() + 7);
        name.push_str(&f.name);
        name.push_str("_bucket");
        let mut le = String::new();
        for (i, (bound, count)) in snapshot.cumulative.iter().enumerate() {
            le.clear();
            if i + 1 == snapshot.cumulative.len() {
                le.push_str("+Inf");
            } else {
                push_decimal(&mut le, *bound, h.scale());
            }
            push_series(&mut f.samples, &name, labels, Some(("le", &le)));
            let _ = writeln!(f.samples, "{count}");
        }
        name.truncate(f.name.len());
        name.push_str("_sum");
        push_series(&mut f.samples, &name, labels, None);
        push_decimal(&mut f.samples, snapshot.sum, h.scale());
        f.samples.push('\n');
        name.truncate(f.name.len());
        name.push_str("_count");
        push_series(&mut f.samples, &name, labels, None);
        let _ = writeln!(f.samples, "{}", snapshot.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_page() {
        static BOUNDS: [u64; 3] = [500, 5_000, 1_000_000];
        let latency = Histogram::new(&BOUNDS, 6);
        for us in [100, 700, 2_000_000] {
            latency.observe(us);
        }
        let mut page = Exposition::new();
        page.family(
            "www_requests_total",
            "Responses sent, by status class",
            Kind::Counter,
        )
        .sample(&[("code", "2xx")], 3);
        page.family("net_tcp_connections", "TCP sockets open", Kind::Gauge)
            .sample(&[], 2);
        page.family(
            "www_request_duration_seconds",
            "From the request's first byte to its response",
            Kind::Histogram,
        )
        .histogram(&[("handler", "files")], &latency);
        // The same family again: merged into the first.
        page.family("www_requests_total", "ignored", Kind::Counter)
            .sample(&[("code", "4xx")], 1);
        page.family("temperature", "Signed", Kind::Gauge)
            .sample_signed(&[], -4);
        assert_eq!(
            page.finish(),
            "# HELP www_requests_total Responses sent, by status class\n\
             # TYPE www_requests_total counter\n\
             www_requests_total{code=\"2xx\"} 3\n\
             www_requests_total{code=\"4xx\"} 1\n\
             # HELP net_tcp_connections TCP sockets open\n\
             # TYPE net_tcp_connections gauge\n\
             net_tcp_connections 2\n\
             # HELP www_request_duration_seconds From the request's first byte to its response\n\
             # TYPE www_request_duration_seconds histogram\n\
             www_request_duration_seconds_bucket{handler=\"files\",le=\"0.0005\"} 1\n\
             www_request_duration_seconds_bucket{handler=\"files\",le=\"0.005\"} 2\n\
             www_request_duration_seconds_bucket{handler=\"files\",le=\"1\"} 2\n\
             www_request_duration_seconds_bucket{handler=\"files\",le=\"+Inf\"} 3\n\
             www_request_duration_seconds_sum{handler=\"files\"} 2.0008\n\
             www_request_duration_seconds_count{handler=\"files\"} 3\n\
             # HELP temperature Signed\n\
             # TYPE temperature gauge\n\
             temperature -4\n"
        );
    }

    #[test]
    fn escaping_of_help_and_label_values() {
        let mut page = Exposition::new();
        page.family("x_total", "a \\ b\nc \"q\"", Kind::Counter)
            .sample(&[("path", "/a\"b\\c\nd")], 1);
        assert_eq!(
            page.finish(),
            "# HELP x_total a \\\\ b\\nc \"q\"\n\
             # TYPE x_total counter\n\
             x_total{path=\"/a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn invalid_names_and_kind_clashes_keep_the_page_valid() {
        let mut page = Exposition::new();
        page.family("9bad", "", Kind::Counter).sample(&[], 1);
        page.family("bad-name", "", Kind::Counter).sample(&[], 1);
        page.family("ok", "", Kind::Gauge)
            .sample(&[("__reserved", "x"), ("bad-label", "y"), ("good", "z")], 1);
        page.family("ok", "", Kind::Counter).sample(&[], 2);
        page.family("empty", "", Kind::Counter);
        assert_eq!(
            page.finish(),
            "# HELP ok\n# TYPE ok gauge\nok{good=\"z\"} 1\n"
        );
    }

    #[test]
    fn names() {
        assert!(valid_metric_name("a:b_c9"));
        assert!(valid_metric_name("_x"));
        assert!(!valid_metric_name(""));
        assert!(!valid_metric_name("1x"));
        assert!(!valid_metric_name("a.b"));
        assert!(valid_label_name("le"));
        assert!(!valid_label_name("__name__"));
        assert!(!valid_label_name("a:b"));
    }

    #[test]
    fn decimals() {
        let cases = [
            (0, 6, "0"),
            (5_000, 6, "0.005"),
            (1_500_000, 6, "1.5"),
            (2_000_000, 6, "2"),
            (7, 0, "7"),
            (123, 2, "1.23"),
            (u64::MAX, 0, "18446744073709551615"),
            (1, 19, "0.0000000000000000001"),
            (1, 20, "1e-20"),
        ];
        for (v, scale, want) in cases {
            let mut s = String::new();
            push_decimal(&mut s, v, scale);
            assert_eq!(s, want, "{v} at scale {scale}");
        }
    }
}
