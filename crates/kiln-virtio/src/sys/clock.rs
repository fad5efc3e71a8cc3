//! The clocks. Under KVM (QEMU+KVM, Firecracker, cloud-hypervisor) the
//! monotonic clock is KVM's paravirtual clock: boot registers a
//! `pvclock_vcpu_time_info` and a `pvclock_wall_clock` with two MSR writes
//! at CPL 0 (the CPUID leaves that announce them are only visible there on
//! KVM's PVM), and every reading is `rdtsc` plus the multiplier and shift
//! the host keeps in that page: no exit. The wall clock is the host's
//! wall-clock time at its boot plus the pvclock's system time.
//!
//! Without pvclock (QEMU's TCG), the TSC is calibrated against the PIT
//! (channel 0 read back until 10 ms have passed) and scaled with
//! kiln-x86's `TscScale`; the wall clock is the CMOS real-time clock,
//! read once at boot (whole seconds) and advanced by the monotonic clock.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use kiln_devices::{Instant, Timestamp};

use super::arch;
use crate::clocksource::{self, PIT_HZ, RtcTime};
use crate::time::{TimeError, TscScale};

/// KVM's CPUID signature leaf and feature leaf.
const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
/// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// KVM_FEATURE_CLOCKSOURCE2: the MSRs below.
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

/// `struct pvclock_vcpu_time_info`, written by the host.
#[repr(C, align(64))]
struct PvclockTime {
    version: u32,
    pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    pad: [u8; 2],
}

/// `struct pvclock_wall_clock`, written by the host.
#[repr(C, align(16))]
struct PvclockWall {
    version: u32,
    sec: u32,
    nsec: u32,
}

static mut PVCLOCK: PvclockTime = PvclockTime {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad: [0; 2],
};
static mut PVCLOCK_WALL: PvclockWall = PvclockWall {
    version: 0,
    sec: 0,
    nsec: 0,
};

static KVMCLOCK: AtomicBool = AtomicBool::new(false);
/// The monotonic source's reading at boot (pvclock nanoseconds or TSC).
static AT_BOOT: AtomicU64 = AtomicU64::new(0);
/// The TSC scale, without pvclock.
static MULT: AtomicU64 = AtomicU64::new(0);
static WALL_AT_BOOT: AtomicU64 = AtomicU64::new(0);
/// The TSC frequency found at boot, in Hz.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// The latest instant handed out, so that time never goes backwards.
static LAST: AtomicU64 = AtomicU64::new(0);

/// PIT ticks the calibration waits for: 10 ms.
const CALIBRATION_TICKS: u16 = (PIT_HZ / 100) as u16;
/// Counter reads before the calibration gives up (no PIT).
const CALIBRATION_POLLS: u32 = 10_000_000;

/// Registers KVM's clock pages if the hypervisor offers them. At CPL 0,
/// once, at boot: two `cpuid` and two `wrmsr`.
pub fn init_cpl0() {
    let sig = arch::cpuid(KVM_CPUID_SIGNATURE, 0);
    if sig[1..] != KVM_SIGNATURE || sig[0] < KVM_CPUID_FEATURES {
        return;
    }
    if arch::cpuid(KVM_CPUID_FEATURES, 0)[0] & KVM_FEATURE_CLOCKSOURCE2 == 0 {
        return;
    }
    // SAFETY: at CPL 0, KVM announced the MSRs; the two statics are
    // aligned as the ABI asks, inside the image (identity-mapped, below
    // 4 GiB) and written by nothing but the host.
    unsafe {
        arch::wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (&raw const PVCLOCK as u64) | 1);
        arch::wrmsr(MSR_KVM_WALL_CLOCK_NEW, &raw const PVCLOCK_WALL as u64);
    }
    KVMCLOCK.store(true, Ordering::Relaxed);
}

/// One consistent reading of the pvclock: nanoseconds of host system time,
/// and the multiplier and shift.
fn pvclock() -> (u64, u32, i8) {
    let p = &raw const PVCLOCK;
    loop {
        // SAFETY: the host writes the page between version bumps (odd
        // while it writes); fields are read volatile and the version
        // checked around them, as the pvclock ABI prescribes.
        unsafe {
            let v1 = (&raw const (*p).version).read_volatile();
            fence(Ordering::Acquire);
            let tsc0 = (&raw const (*p).tsc_timestamp).read_volatile();
            let sys = (&raw const (*p).system_time).read_volatile();
            let mul = (&raw const (*p).tsc_to_system_mul).read_volatile();
            let shift = (&raw const (*p).tsc_shift).read_volatile();
            let tsc = arch::rdtsc();
            fence(Ordering::Acquire);
            let v2 = (&raw const (*p).version).read_volatile();
            if v1 == v2 && v1 & 1 == 0 {
                let ns = sys.wrapping_add(clocksource::pvclock_scale(
                    tsc.saturating_sub(tsc0),
                    mul,
                    shift,
                ));
                return (ns, mul, shift);
            }
        }
        core::hint::spin_loop();
    }
}

/// Reads the PIT's channel 0 counter (latched).
fn pit_count() -> u16 {
    arch::outb(0x43, 0x00);
    let lo = arch::inb(0x40);
    let hi = arch::inb(0x40);
    u16::from_le_bytes([lo, hi])
}

/// The TSC frequency measured against the PIT's channel 0, free-running
/// from 0xffff in mode 2 and read back with latch commands (channel 2 and
/// its gate at port 0x61 are missing on QEMU's microvm), or 0 without a
/// counting PIT.
fn calibrate_tsc() -> u64 {
    // Channel 0, low then high byte, mode 2 (rate generator), binary.
    arch::outb(0x43, 0x34);
    arch::outb(0x40, 0xff);
    arch::outb(0x40, 0xff);
    let mut last = pit_count();
    let start = arch::rdtsc();
    let mut ticks = 0u64;
    let mut polls = 0;
    while ticks < u64::from(CALIBRATION_TICKS) {
        let count = pit_count();
        ticks += u64::from(last.wrapping_sub(count));
        last = count;
        polls += 1;
        if polls == CALIBRATION_POLLS {
            return 0;
        }
    }
    let cycles = arch::rdtsc().saturating_sub(start);
    clocksource::calibrated_hz(cycles, ticks)
}

/// The CMOS real-time clock's time, or `None` without a usable RTC.
fn read_rtc() -> Option<u64> {
    let reg = |r: u8| {
        arch::outb(0x70, r);
        arch::inb(0x71)
    };
    // Wait (boundedly) until no update is in progress.
    (0..100_000).find(|_| reg(0x0a) & 0x80 == 0)?;
    let status_b = reg(0x0b);
    let binary = status_b & 0x04 != 0;
    let decode = |b: u8| if binary { b } else { clocksource::from_bcd(b) };
    let hour_raw = reg(0x04);
    let pm = hour_raw & 0x80 != 0;
    let mut hour = u32::from(decode(hour_raw & 0x7f));
    if status_b & 0x02 == 0 {
        hour = hour % 12 + if pm { 12 } else { 0 };
    }
    let century = u32::from(decode(reg(0x32)));
    let year = u32::from(decode(reg(0x09)));
    let year = if (19..=30).contains(&century) {
        century * 100 + year
    } else {
        2000 + year
    };
    RtcTime {
        year,
        month: u32::from(decode(reg(0x08))),
        day: u32::from(decode(reg(0x07))),
        hour,
        minute: u32::from(decode(reg(0x02))),
        second: u32::from(decode(reg(0x00))),
    }
    .unix_seconds()
}

/// Starts the clocks, at CPL 3, after [`init_cpl0`].
pub fn init() -> Result<(), TimeError> {
    if KVMCLOCK.load(Ordering::Relaxed) {
        let (ns, mul, shift) = pvclock();
        AT_BOOT.store(ns, Ordering::Relaxed);
        TSC_HZ.store(clocksource::pvclock_tsc_hz(mul, shift), Ordering::Relaxed);
        let w = &raw const PVCLOCK_WALL;
        // SAFETY: the host wrote the wall clock during the MSR write, which
        // returned before boot went on.
        let (sec, nsec) = unsafe {
            (
                (&raw const (*w).sec).read_volatile(),
                (&raw const (*w).nsec).read_volatile(),
            )
        };
        let host_boot = u64::from(sec) * 1_000_000_000 + u64::from(nsec);
        WALL_AT_BOOT.store(host_boot.saturating_add(ns), Ordering::Relaxed);
        return Ok(());
    }
    let hz = calibrate_tsc();
    let scale = TscScale::new(hz)?;
    TSC_HZ.store(hz, Ordering::Relaxed);
    MULT.store(scale.mult(), Ordering::Relaxed);
    AT_BOOT.store(arch::rdtsc(), Ordering::Relaxed);
    let wall = read_rtc().unwrap_or(0).saturating_mul(1_000_000_000);
    WALL_AT_BOOT.store(wall, Ordering::Relaxed);
    Ok(())
}

/// The TSC frequency found at boot, in Hz, and whether it came from KVM's
/// pvclock (else from the PIT).
pub fn tsc_hz() -> (u64, bool) {
    (
        TSC_HZ.load(Ordering::Relaxed),
        KVMCLOCK.load(Ordering::Relaxed),
    )
}

/// Nanoseconds since boot, never decreasing.
fn since_boot() -> u64 {
    let ns = if KVMCLOCK.load(Ordering::Relaxed) {
        pvclock().0.saturating_sub(AT_BOOT.load(Ordering::Relaxed))
    } else {
        let cycles = arch::rdtsc().saturating_sub(AT_BOOT.load(Ordering::Relaxed));
        TscScale::from_mult(MULT.load(Ordering::Relaxed)).nanos(cycles)
    };
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

/// The TSC value at monotonic instant `at` (for the LAPIC's TSC-deadline
/// timer), at least 1 (0 disarms the timer); 0 if the TSC frequency is
/// unknown.
pub fn tsc_at(at: Instant) -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return 0;
    }
    let ahead = at.as_nanos().saturating_sub(since_boot());
    let cycles = u128::from(ahead) * u128::from(hz) / 1_000_000_000;
    arch::rdtsc()
        .saturating_add(u64::try_from(cycles).unwrap_or(u64::MAX))
        .max(1)
}
