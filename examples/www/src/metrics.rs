//! What www counts for `/metrics` (`--metrics-path`): responses by status
//! class and their latency, and the connection limit's counters, beside
//! the stack's and the runtime's families in `kiln_metrics`' registry.

use alloc::rc::Rc;

use kiln_metrics::{Counter, Exposition, Histogram, Kind, Registration};

use crate::clients::Clients;

/// Latency buckets in microseconds (exposed in seconds): 100 µs to 10 s.
static LATENCY_BOUNDS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 500_000, 1_000_000, 10_000_000,
];

/// Responses by status class and their latency, from a request's first
/// byte until its response was written.
#[derive(Debug)]
pub struct Metrics {
    /// `1xx` to `5xx`.
    by_class: [Counter; 5],
    latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All zero.
    pub fn new() -> Metrics {
        Metrics {
            by_class: Default::default(),
            latency: Histogram::new(&LATENCY_BOUNDS_US, 6),
        }
    }

    /// Records one response of `status` that took `micros`.
    pub fn record(&self, status: u16, micros: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.by_class.get(class) {
            c.inc();
        }
        self.latency.observe(micros);
    }

    /// Responses so far with a status of class `class` (1 to 5).
    pub fn responses(&self, class: u16) -> u64 {
        usize::from(class)
            .checked_sub(1)
            .and_then(|i| self.by_class.get(i))
            .map_or(0, Counter::get)
    }

    /// Writes www's families.
    pub fn collect(&self, clients: &Clients, out: &mut Exposition) {
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let mut f = out.family(
            "www_responses_total",
            "HTTP responses sent, by status class",
            Kind::Counter,
        );
        for (class, counter) in CLASSES.iter().zip(&self.by_class) {
            f.sample(&[("code", class)], counter.get());
        }
        out.family(
            "www_request_duration_seconds",
            "From a request's first byte to the end of writing its response",
            Kind::Histogram,
        )
        .histogram(&[], &self.latency);
        let c = clients.counters();
        out.family(
            "www_connections",
            "Connections open (bounded by --max-clients)",
            Kind::Gauge,
        )
        .sample(&[], c.open as u64);
        out.family(
            "www_connections_refused_total",
            "Connections refused at --max-clients, every connection busy answering",
            Kind::Counter,
        )
        .sample(&[], c.refused);
        out.family(
            "www_connections_evicted_total",
            "Waiting connections closed to make room for new ones at --max-clients",
            Kind::Counter,
        )
        .sample(&[], c.evicted);
    }

    /// Registers `metrics` and `clients` with the registry until the
    /// returned registration is dropped.
    pub fn register(metrics: &Rc<Metrics>, clients: &Clients) -> Registration {
        let (metrics, clients) = (metrics.clone(), clients.clone());
        kiln_metrics::register(move |out: &mut Exposition| metrics.collect(&clients, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_out_of_range_statuses() {
        let m = Metrics::new();
        for s in [200, 204, 304, 404, 431, 503, 99, 999] {
            m.record(s, 10);
        }
        assert_eq!(
            [1, 2, 3, 4, 5].map(|c| m.responses(c)),
            [1, 2, 1, 2, 2],
            "99 counts as 1xx and 999 as 5xx"
        );
        assert_eq!(m.responses(0), 0);
        assert_eq!(m.responses(6), 0);
    }
}
