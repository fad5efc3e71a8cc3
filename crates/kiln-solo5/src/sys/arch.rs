//! Single x86_64 instructions the runtime needs, each behind a safe
//! function where the instruction cannot break memory safety.

use core::arch::asm;

/// Reads the time-stamp counter. `rdtsc` runs in the guest without a VM
/// exit.
#[cfg_attr(feature = "spt", allow(dead_code))]
#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the TSC into edx:eax; the tender does not
    // set CR4.TSD, so it cannot fault, at CPL 0 or 3.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The four registers `cpuid` returns for `leaf`, `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: cpuid has no memory effects. rbx is reserved by LLVM, so it
    // is saved and restored around the instruction by hand.
    unsafe {
        asm!(
            "mov {b:r}, rbx",
            "cpuid",
            "xchg {b:r}, rbx",
            b = out(reg) b,
            inout("eax") leaf => a,
            inout("ecx") subleaf => c,
            out("edx") d,
            options(nomem, nostack, preserves_flags),
        )
    };
    [a, b, c, d]
}

/// One `rdrand`, or `None` if the CPU had no random number ready (CF=0).
pub fn rdrand() -> Option<u64> {
    let value: u64;
    let ok: u8;
    // SAFETY: rdrand writes only its register and CF. Callers check CPUID
    // first, so the instruction exists.
    unsafe {
        asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok,
             options(nomem, nostack))
    };
    (ok != 0).then_some(value)
}

/// One `rdseed`, or `None` if the CPU had no seed ready (CF=0).
pub fn rdseed() -> Option<u64> {
    let value: u64;
    let ok: u8;
    // SAFETY: as for rdrand.
    unsafe {
        asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok,
             options(nomem, nostack))
    };
    (ok != 0).then_some(value)
}

/// Reads CR2 (the address of the last page fault).
#[cfg_attr(feature = "spt", allow(dead_code))]
pub fn cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Stops for good. The unikernel runs at CPL 3, where `hlt` faults, so
/// this spins; it is reached only if a tender returns from HALT.
#[cfg_attr(feature = "spt", allow(dead_code))]
pub fn halt_forever() -> ! {
    loop {
        core::hint::spin_loop();
    }
}
