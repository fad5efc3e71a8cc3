//! The clock devices: CLOCK_MONOTONIC and CLOCK_REALTIME.

use kiln_devices::{Instant, Timestamp};

use crate::sys;

/// The monotonic clock (CLOCK_MONOTONIC), the same clock the platform's
/// timers use.
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl MonotonicClock {
    /// The monotonic clock.
    pub fn new() -> MonotonicClock {
        MonotonicClock
    }
}

impl kiln_devices::MonotonicClock for MonotonicClock {
    fn now(&self) -> Instant {
        Instant::from_nanos(sys::monotonic_nanos())
    }
}

/// The wall clock (CLOCK_REALTIME).
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl WallClock {
    /// The wall clock.
    pub fn new() -> WallClock {
        WallClock
    }
}

impl kiln_devices::WallClock for WallClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_nanos(sys::realtime_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_devices::{MonotonicClock as _, WallClock as _};
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn monotonic_clock_advances() {
        let clock = MonotonicClock::new();
        let a = clock.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = clock.now();
        assert!(
            b - a >= std::time::Duration::from_millis(2),
            "{a:?} -> {b:?}"
        );
    }

    #[test]
    fn wall_clock_agrees_with_std() {
        let ours = WallClock::new().now().as_unix_nanos();
        let std = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(ours.abs_diff(std) < 1_000_000_000, "{ours} vs {std}");
    }
}
