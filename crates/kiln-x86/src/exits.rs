//! Times the unikernel handed control to its host, by call, for the
//! metrics page (`kiln_exits_total{call}`): on hvt each hypercall (an
//! `out`, so a VM exit), on spt each system call, on virtio each queue
//! notification, halt and console write. The platform's host layer counts
//! every such call into a slot and names the slots; a count is a plain
//! load, add and store (one thread, no lock).

use core::sync::atomic::{AtomicU64, Ordering};

use kiln_metrics::{Exposition, Kind};

/// Slots a host layer may count into.
pub const SLOTS: usize = 16;

static COUNTS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// Counts one call in `slot` (out of range: not counted).
#[inline]
pub fn count(slot: usize) {
    if let Some(c) = COUNTS.get(slot) {
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
}

/// The calls counted in `slot` so far.
pub fn get(slot: usize) -> u64 {
    COUNTS.get(slot).map_or(0, |c| c.load(Ordering::Relaxed))
}

/// Writes `kiln_exits_total` with one sample per named slot (`names[i]`
/// names slot `i`; empty names are skipped).
pub fn write_metrics(names: &[&str], out: &mut Exposition) {
    let mut f = out.family(
        "kiln_exits_total",
        "Times the unikernel handed control to its host, by call (hvt: hypercalls, each a VM exit; spt: system calls; virtio: queue notifications, halts, console writes; unix: the reactor's ppoll calls)",
        Kind::Counter,
    );
    for (slot, name) in names.iter().enumerate() {
        if !name.is_empty() {
            f.sample(&[("call", name)], get(slot));
        }
    }
}

/// Registers `kiln_exits_total` with the metrics registry for the rest of
/// the program.
pub fn register_metrics(names: &'static [&'static str]) {
    let registration =
        kiln_metrics::register(move |out: &mut Exposition| write_metrics(names, out));
    core::mem::forget(registration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_slot() {
        let before = get(3);
        count(3);
        count(3);
        count(SLOTS);
        assert_eq!(get(3), before + 2);
        let mut page = Exposition::new();
        write_metrics(&["", "", "", "poll"], &mut page);
        let text = page.finish();
        assert!(text.contains("# TYPE kiln_exits_total counter\n"));
        assert!(text.contains(&alloc::format!(
            "kiln_exits_total{{call=\"poll\"}} {}\n",
            before + 2
        )));
        assert!(!text.contains("call=\"\""));
    }
}
