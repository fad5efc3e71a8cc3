//! Counters, gauges and histograms with fixed buckets: relaxed atomics, so
//! a metric can sit in a `static` or an `Rc` and be bumped from any task.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A value that only goes up (requests served, bytes sent).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at 0.
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds 1.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (connections open).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// A gauge at 0.
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds `n` (negative to subtract).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A distribution over fixed buckets, counted in integer units: a request
/// latency in microseconds, exposed in seconds with `scale` 6.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds (inclusive) of the buckets, increasing; the `+Inf`
    /// bucket is implied.
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative); one more than `bounds`.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
    scale: u32,
}

/// What a [`Histogram`] holds at one moment: cumulative bucket counts, as
/// the exposition format wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `(upper bound, observations <= bound)`, then the `+Inf` bucket as
    /// `(u64::MAX, count)`.
    pub cumulative: Vec<(u64, u64)>,
    /// The sum of the observations.
    pub sum: u64,
    /// How many observations.
    pub count: u64,
}

impl Histogram {
    /// A histogram over `bounds` (increasing upper bounds, in units of
    /// 10^-`scale` of the exposed unit: bounds in microseconds and `scale`
    /// 6 are exposed as seconds). Bounds that do not increase are dropped
    /// from the first one that does not.
    pub fn new(bounds: &'static [u64], scale: u32) -> Histogram {
        let increasing = bounds
            .windows(2)
            .position(|w| w[0] >= w[1])
            .map_or(bounds.len(), |i| i + 1);
        let bounds = &bounds[..increasing];
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
            scale,
        }
    }

    /// Records one observation of `v` units.
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(v, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The bounds' scale: values are in units of 10^-scale.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// The buckets, cumulative, with the sum and count. Read while tasks
    /// may observe (never on another thread in kiln), the count is made
    /// the `+Inf` bucket's so the two always agree.
    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        let mut total = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            total = total.saturating_add(bucket.load(Ordering::Relaxed));
            let bound = self.bounds.get(i).copied().unwrap_or(u64::MAX);
            cumulative.push((bound, total));
        }
        Snapshot {
            cumulative,
            sum: self.sum.load(Ordering::Relaxed),
            count: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_and_gauge() {
        let c = Counter::new();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
        let g = Gauge::new();
        g.add(3);
        g.add(-5);
        assert_eq!(g.get(), -2);
        g.set(7);
        assert_eq!(g.get(), 7);
    }

    #[test]
    fn histogram_buckets_are_upper_inclusive_and_cumulative() {
        static BOUNDS: [u64; 3] = [10, 100, 1000];
        let h = Histogram::new(&BOUNDS, 0);
        for v in [0, 10, 11, 100, 5000, 1000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(
            s.cumulative,
            [(10, 2), (100, 4), (1000, 5), (u64::MAX, 6)].to_vec()
        );
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 6121);
    }

    #[test]
    fn bounds_that_do_not_increase_are_cut() {
        static BOUNDS: [u64; 4] = [5, 50, 50, 7];
        let h = Histogram::new(&BOUNDS, 0);
        h.observe(60);
        assert_eq!(
            h.snapshot().cumulative,
            [(5, 0), (50, 0), (u64::MAX, 1)].to_vec()
        );
    }
}
