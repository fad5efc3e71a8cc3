//! The clocks' state: the TSC at boot, its scale, and the wall-clock time
//! at boot.

use core::sync::atomic::{AtomicU64, Ordering};

use kiln_devices::{Instant, Timestamp};

use crate::time::{TimeError, TscScale};

static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);
static MULT: AtomicU64 = AtomicU64::new(0);
static WALL_AT_BOOT: AtomicU64 = AtomicU64::new(0);
/// The latest instant handed out, so that time never goes backwards even
/// if the TSC does.
static LAST: AtomicU64 = AtomicU64::new(0);

/// Starts the clocks with the boot info's cycle frequency.
pub fn init(cpu_cycle_freq: u64) -> Result<(), TimeError> {
    let scale = TscScale::new(cpu_cycle_freq)?;
    MULT.store(scale.mult(), Ordering::Relaxed);
    TSC_AT_BOOT.store(super::arch::rdtsc(), Ordering::Relaxed);
    WALL_AT_BOOT.store(super::hvt::walltime(), Ordering::Relaxed);
    Ok(())
}

/// Nanoseconds since boot, never decreasing.
fn since_boot() -> u64 {
    let cycles = super::arch::rdtsc().saturating_sub(TSC_AT_BOOT.load(Ordering::Relaxed));
    let ns = TscScale::from_mult(MULT.load(Ordering::Relaxed)).nanos(cycles);
    let last = LAST.fetch_max(ns, Ordering::Relaxed);
    ns.max(last)
}

/// The monotonic clock.
pub fn now() -> Instant {
    Instant::from_nanos(since_boot())
}

/// The wall clock.
pub fn wall_now() -> Timestamp {
    Timestamp::from_unix_nanos(
        WALL_AT_BOOT
            .load(Ordering::Relaxed)
            .saturating_add(since_boot()),
    )
}
