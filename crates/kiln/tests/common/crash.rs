//! notes' crash-test mode seen from outside (`examples/notes/src/crash.rs`):
//! the values it writes, its output read line by line, and a model of what
//! the store may hold after a kill. Used by the crash tests of
//! `store_targets.rs` (unix, hvt, spt) and `virtio.rs`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::sync::mpsc;

use super::text;

/// The value notes' crash-test mode sets for change `n` (the rule of
/// `examples/notes/src/crash.rs`): `n.` repeated, cut to 1 to 1000 bytes.
pub fn crash_value(n: u32) -> String {
    let len = 1 + (n.wrapping_mul(37) % 1000) as usize;
    format!("{n}.").chars().cycle().take(len).collect()
}

/// What the store may hold: per key the number of the last acknowledged
/// change (`None`: absent), and the change in flight when the unikernel
/// was killed (printed as tried, never acknowledged).
#[derive(Default)]
pub struct Model {
    acked: BTreeMap<String, Option<u32>>,
    in_flight: Option<(String, Option<u32>)>,
}

impl Model {
    /// Checks what a restart found against the model; returns the
    /// problems, and makes `found` the new acknowledged state.
    pub fn check(&mut self, found: &BTreeMap<String, String>) -> Vec<String> {
        let mut problems = Vec::new();
        let mut keys: Vec<&String> = self.acked.keys().chain(found.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut next = BTreeMap::new();
        for key in keys {
            let mut allowed = vec![self.acked.get(key).copied().flatten()];
            if let Some((k, v)) = &self.in_flight
                && k == key
            {
                allowed.push(*v);
            }
            let got = found.get(key);
            let matched = allowed.iter().find(|a| match (a, got) {
                (None, None) => true,
                (Some(n), Some(v)) => crash_value(*n) == *v,
                _ => false,
            });
            match matched {
                Some(a) => {
                    if let Some(n) = a {
                        next.insert(key.clone(), Some(*n));
                    }
                }
                None => {
                    let shown = got.map_or("absent".to_string(), |v| {
                        format!("{} bytes starting {:?}", v.len(), &v[..v.len().min(24)])
                    });
                    let want: Vec<String> = allowed
                        .iter()
                        .map(|a| a.map_or("absent".into(), |n| format!("change {n}")))
                        .collect();
                    problems.push(format!("{key}: found {shown}, expected one of {want:?}"));
                    // Continue from what is there, as far as it is known.
                    if let Some(v) = got
                        && let Some(n) = v.split('.').next().and_then(|n| n.parse().ok())
                    {
                        next.insert(key.clone(), Some(n));
                    }
                }
            }
        }
        self.acked = next;
        self.in_flight = None;
        problems
    }

    /// Applies one line of the churn's output.
    pub fn apply(&mut self, line: &str, last: &mut u32) {
        let mut words = line.split(' ');
        let (Some(what), Some(op), Some(key), Some(n)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return;
        };
        let Ok(n) = n.parse::<u32>() else { return };
        *last = (*last).max(n);
        let value = if op == "set" { Some(n) } else { None };
        match what {
            "try" => self.in_flight = Some((key.to_string(), value)),
            "ack" => {
                self.acked.insert(key.to_string(), value);
                self.in_flight = None;
            }
            _ => {}
        }
    }
}

/// Reads whole lines from `reader` into a channel; a line cut short by
/// the kill (no newline) is dropped.
pub fn line_reader(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        loop {
            let mut buf = Vec::new();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) if buf.last() == Some(&b'\n') => {
                    buf.pop();
                    if tx.send(text(&buf)).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });
    rx
}
