//! The clocks' state. On hvt: the TSC at boot, its scale, and the
//! wall-clock time at boot. On spt: the host's monotonic clock at boot
//! (`clock_gettime`, which the tender's filter allows; there is no vDSO).

use core::sync::atomic::{AtomicU64, Ordering};

use kiln_devices::{Instant, Timestamp};

#[cfg(not(feature = "spt"))]
use crate::time::{TimeError, TscScale};

#[cfg(not(feature = "spt"))]
static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);
#[cfg(not(feature = "spt"))]
static MULT: AtomicU64 = AtomicU64::new(0);
#[cfg(not(feature = "spt"))]
static WALL_AT_BOOT: AtomicU64 = AtomicU64::new(0);
/// The latest instant handed out, so that time never goes backwards even
/// if the TSC does.
static LAST: AtomicU64 = AtomicU64::new(0);

#[cfg(not(feature = "spt"))]
/// Starts the clocks with the boot info's cycle frequency.
pub fn init(cpu_cycle_freq: u64) -> Result<(), TimeError> {
    let scale = TscScale::new(cpu_cycle_freq)?;
    MULT.store(scale.mult(), Ordering::Relaxed);
    TSC_AT_BOOT.store(super::arch::rdtsc(), Ordering::Relaxed);
    WALL_AT_BOOT.store(super::hvt::walltime(), Ordering::Relaxed);
    Ok(())
}

#[cfg(not(feature = "spt"))]
/// Nanoseconds since boot, never decreasing.
fn since_boot() -> u64 {
    let cycles = super::arch::rdtsc().saturating_sub(TSC_AT_BOOT.load(Ordering::Relaxed));
    let ns = TscScale::from_mult(MULT.load(Ordering::Relaxed)).nanos(cycles);
    let last = LAST.fetch_max(ns, Ordering::Relaxed);
    ns.max(last)
}

/// The latest instant [`now`] handed out, without reading the clock: the
/// clock is at or past it.
pub fn last() -> Instant {
    Instant::from_nanos(LAST.load(Ordering::Relaxed))
}

/// The monotonic clock.
pub fn now() -> Instant {
    Instant::from_nanos(since_boot())
}

#[cfg(not(feature = "spt"))]
/// The wall clock.
pub fn wall_now() -> Timestamp {
    Timestamp::from_unix_nanos(
        WALL_AT_BOOT
            .load(Ordering::Relaxed)
            .saturating_add(since_boot()),
    )
}

#[cfg(feature = "spt")]
static MONO_AT_BOOT: AtomicU64 = AtomicU64::new(0);

/// Starts the monotonic clock at zero.
#[cfg(feature = "spt")]
pub fn init() {
    MONO_AT_BOOT.store(super::spt::monotonic_nanos(), Ordering::Relaxed);
}

/// Nanoseconds since boot, never decreasing.
#[cfg(feature = "spt")]
fn since_boot() -> u64 {
    let ns = super::spt::monotonic_nanos().saturating_sub(MONO_AT_BOOT.load(Ordering::Relaxed));
    let last = LAST.fetch_max(ns, Ordering::Relaxed);
    ns.max(last)
}

/// The wall clock: the host's real-time clock.
#[cfg(feature = "spt")]
pub fn wall_now() -> Timestamp {
    Timestamp::from_unix_nanos(super::spt::realtime_nanos())
}
