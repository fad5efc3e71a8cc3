//! Single x86_64 instructions the runtime needs, each behind a safe
//! function where the instruction cannot break memory safety.
#![allow(unsafe_code)]

use core::arch::asm;

/// Reads the time-stamp counter. `rdtsc` runs in the guest without a VM
/// exit.
#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the TSC into edx:eax; neither kiln's
    // tenders nor the VMMs of a PVH guest set CR4.TSD, and kiln does not,
    // so it cannot fault, at CPL 0 or 3.
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
pub fn cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Stops for good. The unikernel runs at CPL 3, where `hlt` faults, so
/// this spins; it is reached only if the host did not end the guest (a
/// tender returned from HALT, no exit device ended the VM).
pub fn halt_forever() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Reads a byte from I/O port `port`.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: port input touches no memory; a port the platform did not
    // open to CPL 3 faults (#GP), which breaks no memory. The ports kiln
    // reads are devices' (RTC, PIT, serial), none of which reaches guest
    // memory.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a byte to I/O port `port`.
pub fn outb(port: u16, value: u8) {
    // SAFETY: as for `inb`: the ports kiln writes are devices' (serial,
    // RTC index, PIT, exit), none of which reaches guest memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a doubleword from I/O port `port`.
pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as for `inb`: the doubleword ports kiln reads are PCI
    // configuration data.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a doubleword to I/O port `port`.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes `bytes` to I/O port `port` with one `rep outsb`: a VMM that
/// emulates string I/O (KVM) takes the whole buffer in one exit.
pub fn outsb(port: u16, bytes: &[u8]) {
    // SAFETY: `rep outsb` reads `bytes.len()` bytes from `bytes` (borrowed
    // for the call) and writes them to the port; the direction flag is
    // clear (the SysV ABI's rule, kept by kiln's entry code).
    unsafe {
        asm!("rep outsb", in("dx") port, inout("rsi") bytes.as_ptr() => _,
             inout("rcx") bytes.len() => _, options(nostack, preserves_flags, readonly))
    };
}

/// Writes `value` to model-specific register `msr`.
///
/// # Safety
///
/// At CPL 0, with an MSR that exists and a value whose effects the caller
/// accounts for (for the KVM clock MSRs: the addresses stay reserved for
/// the hypervisor's writes).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller's.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}
