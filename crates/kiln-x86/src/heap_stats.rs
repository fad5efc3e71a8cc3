//! What the heap reports: its size, the bytes allocated now and at most,
//! for the boot information and the metrics page (`kiln_heap_*`).

use kiln_metrics::{Exposition, Kind};

/// The heap's figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes handed to the allocator at boot.
    pub size: usize,
    /// Bytes allocated now (as asked for, without the allocator's
    /// overhead).
    pub in_use: usize,
    /// The most bytes allocated at once since boot.
    pub peak: usize,
}

/// Writes `stats` as the `kiln_heap_*` gauges.
pub fn write_metrics(stats: &HeapStats, out: &mut Exposition) {
    for (name, help, value) in [
        (
            "kiln_heap_size_bytes",
            "Bytes of memory the heap manages",
            stats.size,
        ),
        (
            "kiln_heap_in_use_bytes",
            "Bytes allocated now (as asked for)",
            stats.in_use,
        ),
        (
            "kiln_heap_peak_bytes",
            "The most bytes allocated at once since boot",
            stats.peak,
        ),
    ] {
        out.family(name, help, Kind::Gauge)
            .sample(&[], value as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges() {
        let mut page = Exposition::new();
        let stats = HeapStats {
            size: 64 << 20,
            in_use: 1000,
            peak: 5000,
        };
        write_metrics(&stats, &mut page);
        let text = page.finish();
        assert!(
            text.contains("# TYPE kiln_heap_in_use_bytes gauge\nkiln_heap_in_use_bytes 1000\n")
        );
        assert!(text.contains("kiln_heap_size_bytes 67108864\n"));
        assert!(text.contains("kiln_heap_peak_bytes 5000\n"));
    }
}
