//! A strict reader of the Prometheus text exposition format 0.0.4, for
//! tests of `/metrics` pages: every line must be a comment, a `# HELP`, a
//! `# TYPE` or a well-formed sample; names, label escapes and values are
//! checked; a family's lines must be together, its `# TYPE` before its
//! samples and at most once; a histogram's buckets must have `le`, be
//! cumulative and end with `+Inf` equal to its `_count`. Anything else is
//! an error naming the line.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`x_bucket` for a histogram `x`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A family: its `# TYPE` (`untyped` when none), help and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family's name.
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    pub kind: String,
    /// The `# HELP` text, unescaped.
    pub help: Option<String>,
    /// Its samples, in order.
    pub samples: Vec<Sample>,
}

/// A parsed page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    /// The families, in order.
    pub families: Vec<Family>,
}

impl Page {
    /// The value of the sample `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// The family `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }
}

fn metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unescape_help(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                other => return Err(format!("bad escape \\{other:?} in HELP")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parses `name{labels} value [timestamp]`.
fn sample(line: &str) -> Result<Sample, String> {
    let end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..end];
    if !metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let label = &rest[..eq];
            if !label_name(label) || label.starts_with("__") {
                return Err(format!("bad label name {label:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut v = String::new();
            let mut chars = rest.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => v.push('\\'),
                        Some((_, '"')) => v.push('"'),
                        Some((_, 'n')) => v.push('\n'),
                        other => return Err(format!("bad escape in label value: {other:?}")),
                    },
                    Some((_, '\n')) => return Err("newline in label value".into()),
                    Some((_, c)) => v.push(c),
                }
            };
            if labels.insert(label.to_string(), v).is_some() {
                return Err(format!("label {label} twice"));
            }
            rest = &rest[close + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with('}') {
                return Err("expected , or } after a label".into());
            }
        }
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected one space before the value")?;
    let mut words = rest.split(' ');
    let v = value(words.next().unwrap_or(""))?;
    if let Some(ts) = words.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if words.next().is_some() {
        return Err("extra words after the value".into());
    }
    Ok(Sample {
        name: name.into(),
        labels,
        value: v,
    })
}

/// The family a sample named `name` belongs to, given the current one.
fn belongs(family: &Family, name: &str) -> bool {
    match family.kind.as_str() {
        "histogram" => [
            format!("{}_bucket", family.name),
            format!("{}_sum", family.name),
            format!("{}_count", family.name),
        ]
        .contains(&name.to_string()),
        "summary" => {
            name == family.name
                || name == format!("{}_sum", family.name)
                || name == format!("{}_count", family.name)
        }
        _ => name == family.name,
    }
}

/// A histogram series as read: its `(le, count)` buckets, its `_count`,
/// whether it has a `_sum`.
type Series = (Vec<(f64, f64)>, Option<f64>, bool);

fn check_histogram(f: &Family) -> Result<(), String> {
    // Series by their labels other than `le`.
    let mut series: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
    for s in &f.samples {
        let key: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let entry = series.entry(key).or_default();
        if s.name.ends_with("_bucket") {
            let le = s.labels.get("le").ok_or("a bucket without le")?;
            entry.0.push((value(le)?, s.value));
        } else if s.name.ends_with("_count") {
            entry.1 = Some(s.value);
        } else {
            entry.2 = true;
        }
    }
    for (labels, (buckets, count, sum)) in series {
        let what = format!("histogram {} {labels:?}", f.name);
        if !buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        {
            return Err(format!("{what}: buckets not increasing and cumulative"));
        }
        let last = buckets.last().ok_or(format!("{what}: no buckets"))?;
        if last.0 != f64::INFINITY {
            return Err(format!("{what}: no le=\"+Inf\" bucket"));
        }
        if count != Some(last.1) {
            return Err(format!(
                "{what}: _count {count:?} is not the +Inf bucket {}",
                last.1
            ));
        }
        if !sum {
            return Err(format!("{what}: no _sum"));
        }
    }
    Ok(())
}

/// Parses `text` strictly; the error names the line.
pub fn parse(text: &str) -> Result<Page, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the page does not end with a newline".into());
    }
    let mut page = Page::default();
    // Families already closed (another family came after them).
    let mut done: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        let current = page.families.last_mut();
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // an ordinary comment
            }
            let name = words.next().unwrap_or("");
            if !metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            let arg = words.next().unwrap_or("");
            let family = match current {
                Some(f) if f.name == name => f,
                _ => {
                    if done.iter().any(|d| d == name)
                        || page.families.iter().any(|f| f.name == name)
                    {
                        return Err(at("family appears twice".into()));
                    }
                    if let Some(f) = page.families.last() {
                        done.push(f.name.clone());
                    }
                    page.families.push(Family {
                        name: name.into(),
                        kind: "untyped".into(),
                        help: None,
                        samples: Vec::new(),
                    });
                    page.families.last_mut().ok_or("unreachable")?
                }
            };
            if keyword == "HELP" {
                if family.help.is_some() {
                    return Err(at("HELP twice".into()));
                }
                family.help = Some(unescape_help(arg).map_err(at)?);
            } else {
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                    return Err(at(format!("bad type {arg:?}")));
                }
                if !family.samples.is_empty() || family.kind != "untyped" {
                    return Err(at("TYPE after samples or twice".into()));
                }
                family.kind = arg.into();
            }
            continue;
        }
        let s = sample(line).map_err(at)?;
        match current {
            Some(f) if belongs(f, &s.name) => f.samples.push(s),
            _ => {
                let name = s.name.clone();
                if done.contains(&name) || page.families.iter().any(|f| f.name == name) {
                    return Err(at("samples of a family not together".into()));
                }
                if let Some(f) = page.families.last() {
                    done.push(f.name.clone());
                }
                page.families.push(Family {
                    name,
                    kind: "untyped".into(),
                    help: None,
                    samples: vec![s],
                });
            }
        }
    }
    for f in &page.families {
        if f.kind == "histogram" {
            check_histogram(f)?;
        }
        if f.kind == "counter" && f.samples.iter().any(|s| s.value < 0.0) {
            return Err(format!("counter {} is negative", f.name));
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP a_total A \\\\ b\\n\n# TYPE a_total counter\n\
        a_total{code=\"2xx\",path=\"/x\\\"y\\\\\"} 3\na_total 1 1700000000000\n\
        # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n\
        # a comment\nplain -1.5e3\n";

    #[test]
    fn reads_a_valid_page() {
        let page = parse(GOOD).unwrap();
        assert_eq!(page.families.len(), 3);
        assert_eq!(
            page.family("a_total").unwrap().help.as_deref(),
            Some("A \\ b\n")
        );
        assert_eq!(
            page.value("a_total", &[("code", "2xx"), ("path", "/x\"y\\")]),
            Some(3.0)
        );
        assert_eq!(page.value("h_count", &[]), Some(2.0));
        assert_eq!(page.value("plain", &[]), Some(-1500.0));
    }

    #[test]
    fn refuses_what_the_format_does_not_allow() {
        let bad = [
            "a 1",                                                            // no final newline
            "a{b=\"c} 1\n",                                                   // unterminated
            "a{b=\"\\x\"} 1\n",                                               // bad escape
            "a{b=\"c\",b=\"d\"} 1\n",                                         // label twice
            "a{__x=\"c\"} 1\n",                                               // reserved
            "1a 1\n",                                                         // name
            "a  1\n",                                                         // two spaces
            "a one\n",                                                        // value
            "a 1\nb 1\na 2\n",                                                // not together
            "a 1\n# TYPE a counter\n",                                        // TYPE after samples
            "# TYPE a counter\n# TYPE a counter\na 1\n",                      // twice
            "# TYPE a counts\na 1\n",                                         // bad type
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
            "# TYPE c counter\nc -1\n",
        ];
        for text in bad {
            assert!(parse(text).is_err(), "accepted {text:?}");
        }
    }
}
