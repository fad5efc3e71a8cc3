//! Time: monotonic instants, wall-clock timestamps, and the clock and sleep
//! devices.

use core::fmt;
use core::future::Future;
use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on the monotonic clock, in nanoseconds since an arbitrary origin
/// fixed at boot. Never goes backwards; unrelated to the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the monotonic clock.
    pub const ZERO: Instant = Instant(0);
    /// The latest representable instant; "never" as a deadline.
    pub const MAX: Instant = Instant(u64::MAX);

    /// The instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, or `None` if that is not representable.
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        u64::try_from(d.as_nanos())
            .ok()
            .and_then(|n| self.0.checked_add(n))
            .map(Instant)
    }
}

/// Saturates at [`Instant::MAX`]: a deadline too far away is "never".
impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d).unwrap_or(Instant::MAX)
    }
}

/// Saturates at zero.
impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// A wall-clock time: nanoseconds since the Unix epoch (UTC), as the host
/// reports it. May jump when the host's clock is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    /// The time `nanos` nanoseconds after the Unix epoch.
    pub const fn from_unix_nanos(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_unix_nanos(self) -> u64 {
        self.0
    }

    /// Whole seconds since the Unix epoch.
    pub const fn as_unix_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }
}

/// Formats as RFC 3339 in UTC with millisecond precision, for example
/// `2026-11-21T13:47:35.123Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.as_unix_secs();
        let millis = (self.0 / 1_000_000) % 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month,
/// day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A monotonic clock. Reading it is cheap (no VM exit on hvt).
pub trait MonotonicClock {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// A wall clock.
pub trait WallClock {
    /// The current time of day, as the host reports it.
    fn now(&self) -> Timestamp;
}

/// Timers: futures that complete once the monotonic clock reaches a
/// deadline. An idle unikernel waiting on a timer is blocked in its
/// platform, never spinning.
pub trait Sleep {
    /// The current instant of the clock that deadlines refer to.
    fn now(&self) -> Instant;

    /// Completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()>;

    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        self.sleep_until(self.now() + duration)
    }
}

impl<C: MonotonicClock + ?Sized> MonotonicClock for &C {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

impl<C: WallClock + ?Sized> WallClock for &C {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<S: Sleep + ?Sized> Sleep for &S {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> {
        (**self).sleep_until(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn instant_arithmetic_saturates() {
        let t = Instant::from_nanos(10);
        assert_eq!(t + Duration::from_nanos(5), Instant::from_nanos(15));
        assert_eq!(t + Duration::MAX, Instant::MAX);
        assert_eq!(Instant::from_nanos(3) - t, Duration::ZERO);
        assert_eq!(t - Instant::from_nanos(3), Duration::from_nanos(7));
    }

    #[test]
    fn timestamp_formats_as_rfc3339() {
        assert_eq!(
            Timestamp::UNIX_EPOCH.to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        // 2000-02-29T12:34:56.789Z, a leap day in a year divisible by 400.
        let t = Timestamp::from_unix_nanos(951_827_696_789_000_000);
        assert_eq!(t.to_string(), "2000-02-29T12:34:56.789Z");
        // 2026-11-21T00:00:00Z
        let t = Timestamp::from_unix_nanos(1_795_219_200 * 1_000_000_000);
        assert_eq!(t.to_string(), "2026-11-21T00:00:00.000Z");
    }
}
