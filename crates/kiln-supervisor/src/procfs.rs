//! What the daemon reads about processes from `/proc`: start times (to
//! recognise a pid again after a restart), the processes it marked, and
//! CPU time, memory and I/O counters summed over a unikernel's process tree.

use std::collections::HashMap;
use std::fs;

use serde::Serialize;

/// The environment variable that marks a process the daemon started:
/// `KILN_SUPERVISED=<daemon id>/<name>/<instance>`.
pub const MARK: &str = "KILN_SUPERVISED";

/// The fields of `/proc/PID/stat` the daemon uses.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// The parent's pid.
    pub ppid: i32,
    /// User CPU time in clock ticks.
    pub utime: u64,
    /// System CPU time in clock ticks.
    pub stime: u64,
    /// When the process started, in clock ticks after boot.
    pub start: u64,
    /// `Z` for a zombie, `X` for dead.
    pub state: u8,
}

/// Parses `/proc/PID/stat`; `None` when the process does not exist.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses the text of a `stat` file. The command name (field 2) is in
/// parentheses and may contain spaces and parentheses: fields are counted
/// from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        state: *field(3)?.as_bytes().first()?,
        ppid: field(4)?.parse().ok()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
        start: field(22)?.parse().ok()?,
    })
}

/// Whether `pid` is alive (not a zombie) and started at `start`.
pub fn is_same(pid: i32, start: u64) -> bool {
    stat(pid).is_some_and(|s| s.start == start && s.state != b'Z' && s.state != b'X')
}

/// The clock ticks per second of `/proc` times.
pub fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// The processes whose environment carries [`MARK`] with `daemon_id`, as
/// (pid, name, instance), without the children of marked processes (the
/// spt guest process and a tap's guard share their tender's environment).
pub fn marked(daemon_id: &str) -> Vec<(i32, String, u64)> {
    let prefix = format!("{MARK}={daemon_id}/");
    let mut found: HashMap<i32, (String, u64, i32)> = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        for var in environ.split(|b| *b == 0) {
            let Some(rest) = var.strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            let Ok(rest) = std::str::from_utf8(rest) else {
                continue;
            };
            let Some((name, instance)) = rest.split_once('/') else {
                continue;
            };
            let (Ok(instance), Some(st)) = (instance.parse(), stat(pid)) else {
                continue;
            };
            if st.state != b'Z' && st.state != b'X' {
                found.insert(pid, (name.to_string(), instance, st.ppid));
            }
        }
    }
    let marked: Vec<i32> = found.keys().copied().collect();
    found
        .into_iter()
        .filter(|(_, (_, _, ppid))| !marked.contains(ppid))
        .map(|(pid, (name, instance, _))| (pid, name, instance))
        .collect()
}

/// `pid` and its descendants (through `/proc/PID/task/TID/children`).
pub fn tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        i += 1;
        if out.len() > 4096 {
            break;
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            out.extend(
                children
                    .split_ascii_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// Counters of a unikernel's process tree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    /// The processes counted (the tender, on spt its guest, and the
    /// guard of each tap opened with offloads: kiln-tap's).
    pub processes: u32,
    /// User CPU time, milliseconds.
    pub user_ms: u64,
    /// System CPU time, milliseconds.
    pub system_ms: u64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Peak resident memory of any one process, bytes.
    pub peak_rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Voluntary context switches.
    pub voluntary_ctxt_switches: u64,
    /// Involuntary context switches.
    pub nonvoluntary_ctxt_switches: u64,
    /// Bytes read from storage (`/proc/PID/io` `read_bytes`).
    pub storage_read_bytes: u64,
    /// Bytes written to storage (`/proc/PID/io` `write_bytes`).
    pub storage_write_bytes: u64,
    /// Bytes passed to read-like system calls (files, taps, sockets).
    pub rchar: u64,
    /// Bytes passed to write-like system calls.
    pub wchar: u64,
}

/// Sums the counters of `pid`'s tree.
pub fn usage(pid: i32) -> Usage {
    let tick_ms = 1000 / ticks_per_second().max(1);
    let mut u = Usage::default();
    for p in tree(pid) {
        let Some(st) = stat(p) else { continue };
        u.processes += 1;
        u.user_ms += st.utime * tick_ms;
        u.system_ms += st.stime * tick_ms;
        if let Ok(status) = fs::read_to_string(format!("/proc/{p}/status")) {
            let kb = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_ascii_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            u.rss_bytes += kb("VmRSS:") * 1024;
            u.peak_rss_bytes = u.peak_rss_bytes.max(kb("VmHWM:") * 1024);
            u.threads += kb("Threads:");
            u.voluntary_ctxt_switches += kb("voluntary_ctxt_switches:");
            u.nonvoluntary_ctxt_switches += kb("nonvoluntary_ctxt_switches:");
        }
        if let Ok(io) = fs::read_to_string(format!("/proc/{p}/io")) {
            let get = |key: &str| {
                io.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            u.storage_read_bytes += get("read_bytes:");
            u.storage_write_bytes += get("write_bytes:");
            u.rchar += get("rchar:");
            u.wchar += get("wchar:");
        }
    }
    u
}

/// The supplementary groups of `pid` (`Groups:` in `/proc/PID/status`).
pub fn groups(pid: i32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_ascii_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_command_name() {
        let line = "42 (a) b) (c) S 7 42 42 0 -1 4194560 100 0 0 0 12 34 0 0 20 0 1 0 98765 1000 200 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.ppid, s.utime, s.stime, s.start, s.state),
            (7, 12, 34, 98765, b'S')
        );
        assert!(parse_stat("42 (x").is_none());
        assert!(parse_stat("42 (x) S 1").is_none());
    }

    #[test]
    fn own_process() {
        let me = std::process::id() as i32;
        let st = stat(me).unwrap();
        assert!(is_same(me, st.start));
        assert!(!is_same(me, st.start + 1));
        assert!(usage(me).rss_bytes > 0);
    }
}
