//! The arithmetic of the virtio target's clocks, unit-tested on the host:
//! KVM's paravirtual clock (`pvclock`, Linux's
//! `Documentation/virt/kvm/x86/msr.rst`, MSR_KVM_SYSTEM_TIME_NEW and
//! MSR_KVM_WALL_CLOCK_NEW), the PIT used to calibrate the TSC where there
//! is no pvclock, and the CMOS real-time clock's calendar date.

/// The PIT's input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// Nanoseconds for `delta` TSC cycles with a pvclock's multiplier and
/// shift: `((delta << shift) * mul) >> 32`, a negative shift dividing.
pub fn pvclock_scale(delta: u64, mul: u32, shift: i8) -> u64 {
    let delta = if shift >= 0 {
        let shift = u32::from(shift.unsigned_abs()).min(63);
        if delta > u64::MAX >> shift {
            u64::MAX
        } else {
            delta << shift
        }
    } else {
        delta >> shift.unsigned_abs().min(63)
    };
    ((u128::from(delta) * u128::from(mul)) >> 32) as u64
}

/// The TSC frequency a pvclock's multiplier and shift stand for, in Hz
/// (0 for a zero multiplier).
pub fn pvclock_tsc_hz(mul: u32, shift: i8) -> u64 {
    if mul == 0 {
        return 0;
    }
    let hz = (1_000_000_000u128 << 32) / u128::from(mul);
    let hz = if shift >= 0 {
        hz >> shift.unsigned_abs().min(63)
    } else {
        hz << shift.unsigned_abs().min(63)
    };
    u64::try_from(hz).unwrap_or(u64::MAX)
}

/// The TSC frequency from a PIT calibration: `cycles` elapsed while the
/// PIT counted `pit_ticks`.
pub fn calibrated_hz(cycles: u64, pit_ticks: u64) -> u64 {
    if pit_ticks == 0 {
        return 0;
    }
    u64::try_from(u128::from(cycles) * u128::from(PIT_HZ) / u128::from(pit_ticks))
        .unwrap_or(u64::MAX)
}

/// A BCD byte as a number.
pub fn from_bcd(b: u8) -> u8 {
    (b >> 4) * 10 + (b & 0x0f)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard
/// Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What the CMOS real-time clock shows, already decoded from BCD and the
/// 12-hour format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcTime {
    /// Full year (century register, or 2000 + the two digits).
    pub year: u32,
    /// 1-12.
    pub month: u32,
    /// 1-31.
    pub day: u32,
    /// 0-23.
    pub hour: u32,
    /// 0-59.
    pub minute: u32,
    /// 0-59.
    pub second: u32,
}

impl RtcTime {
    /// Seconds since the Unix epoch, or `None` for an impossible date.
    pub fn unix_seconds(&self) -> Option<u64> {
        if !(1..=12).contains(&self.month)
            || !(1..=31).contains(&self.day)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
        {
            return None;
        }
        let days = days_from_civil(i64::from(self.year), self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        u64::try_from(secs).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvclock_of_a_2_ghz_tsc() {
        // Half a nanosecond per cycle: mul 2^31 at shift 0, or mul 2^32 - 1
        // at shift -1 (KVM's choice, which keeps mul high).
        assert_eq!(pvclock_scale(2_000_000_000, 1 << 31, 0), 1_000_000_000);
        assert_eq!(pvclock_tsc_hz(1 << 31, 0), 2_000_000_000);
        let hz = pvclock_tsc_hz(u32::MAX, -1);
        assert!((2_000_000_000..=2_000_000_001).contains(&hz), "{hz}");
        assert_eq!(pvclock_tsc_hz(0, 0), 0);
    }

    #[test]
    fn pvclock_scale_shifts_both_ways() {
        assert_eq!(pvclock_scale(1000, 1 << 31, 1), 1000);
        assert_eq!(pvclock_scale(1000, 1 << 31, -1), 250);
        // Saturates instead of wrapping.
        assert_eq!(pvclock_scale(u64::MAX, 1 << 31, 7), u64::MAX / 2);
    }

    #[test]
    fn pit_calibration() {
        // 10 ms of PIT ticks and 30 million cycles: a 3 GHz TSC.
        assert_eq!(calibrated_hz(30_000_000, 11_932), 2_999_954_743);
        assert_eq!(calibrated_hz(1, 0), 0);
    }

    #[test]
    fn rtc_dates() {
        assert_eq!(from_bcd(0x59), 59);
        let t = RtcTime {
            year: 2026,
            month: 12,
            day: 7,
            hour: 2,
            minute: 30,
            second: 5,
        };
        assert_eq!(t.unix_seconds(), Some(1_796_610_605));
        let epoch = RtcTime {
            year: 1970,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
        };
        assert_eq!(epoch.unix_seconds(), Some(0));
        let leap = RtcTime {
            year: 2024,
            month: 2,
            day: 29,
            hour: 0,
            minute: 0,
            second: 0,
        };
        assert_eq!(leap.unix_seconds(), Some(1_709_164_800));
        assert_eq!(RtcTime { month: 13, ..t }.unix_seconds(), None);
        assert_eq!(
            RtcTime {
                year: 1969,
                ..epoch
            }
            .unix_seconds(),
            None
        );
    }
}
