//! Time: converting TSC cycles to nanoseconds without overflow.

/// Fixed-point shift of [`TscScale`]'s multiplier.
const SHIFT: u32 = 32;

/// Why the TSC cannot be used as a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The tender reported a cycle frequency the clock cannot work with.
    #[error(
        "CPU cycle frequency of {hz} Hz reported by the tender is unusable; \
         hint: the tender must report the TSC frequency (KVM_GET_TSC_KHZ) in the boot info"
    )]
    BadFrequency {
        /// The frequency in the boot info.
        hz: u64,
    },
}

/// Converts TSC cycle counts to nanoseconds: `ns = cycles * mult >> 32`,
/// with `mult = 10^9 << 32 / hz` computed once at boot, so that reading the
/// clock is one multiplication and no division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscScale {
    mult: u64,
}

impl TscScale {
    /// The scale for a counter running at `hz` cycles per second. Refuses
    /// frequencies below 1 kHz (no real TSC is that slow, and a multiplier
    /// that large loses the overflow bound).
    pub fn new(hz: u64) -> Result<TscScale, TimeError> {
        if hz < 1000 {
            return Err(TimeError::BadFrequency { hz });
        }
        let mult = (1_000_000_000u128 << SHIFT) / u128::from(hz);
        let mult = u64::try_from(mult).map_err(|_| TimeError::BadFrequency { hz })?;
        Ok(TscScale { mult })
    }

    /// The fixed-point multiplier, to keep in an atomic.
    pub fn mult(self) -> u64 {
        self.mult
    }

    /// The scale with a multiplier [`mult`](Self::mult) returned.
    pub fn from_mult(mult: u64) -> TscScale {
        TscScale { mult }
    }

    /// Nanoseconds in `cycles`, saturating at `u64::MAX` (some 584 years).
    pub fn nanos(self, cycles: u64) -> u64 {
        let ns = (u128::from(cycles) * u128::from(self.mult)) >> SHIFT;
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_of_cycles_is_one_second() {
        for hz in [1_000_000u64, 2_400_000_000, 3_000_000_000, 1_999_999_999] {
            let scale = TscScale::new(hz).unwrap();
            let ns = scale.nanos(hz);
            // Truncation in the multiplier loses at most one part in 2^32
            // per cycle of scale; allow 1 ns per second.
            assert!((999_999_998..=1_000_000_000).contains(&ns), "{hz} Hz: {ns}");
            assert_eq!(scale.nanos(0), 0);
        }
    }

    #[test]
    fn a_year_of_cycles_does_not_overflow() {
        let hz = 3_000_000_000u64;
        let scale = TscScale::new(hz).unwrap();
        let year = 365 * 24 * 3600u64;
        let ns = scale.nanos(hz * year);
        let expected = year * 1_000_000_000;
        assert!(expected - ns < expected / 1_000_000, "{ns} vs {expected}");
    }

    #[test]
    fn huge_counts_saturate() {
        let scale = TscScale::new(1000).unwrap();
        assert_eq!(scale.nanos(u64::MAX), u64::MAX);
    }

    #[test]
    fn unusable_frequencies_are_refused() {
        assert_eq!(TscScale::new(0), Err(TimeError::BadFrequency { hz: 0 }));
        assert_eq!(TscScale::new(999), Err(TimeError::BadFrequency { hz: 999 }));
    }
}
