//! Waiting without spinning: the LAPIC timer in TSC-deadline mode and the
//! virtio-mmio devices' interrupt lines (routed through the IOAPIC that
//! serves their GSI; virtio-pci functions send MSI-X messages, set up by
//! `sys::virtio`), both onto vectors whose handler only ends the
//! interrupt, and `hlt` through the #UD gate (`cpu::halt_until`), since
//! the unikernel runs at CPL 3.
//!
//! Set up lazily, at CPL 3, by the first wait that has nothing to do: the
//! LAPIC's and IOAPIC's registers are memory in kiln's device window
//! (xAPIC mode, as the VMMs start a PVH guest). Used only where every
//! network device can interrupt; others keep the polling wait.
//! Intel SDM vol. 3, chapter 11 (APIC) and the 82093AA IOAPIC datasheet.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use super::arch;
use crate::acpi::{self, IoApic};

/// The xAPIC's registers.
const LAPIC: u64 = 0xfee0_0000;
const LAPIC_TPR: u64 = 0x80;
const LAPIC_SVR: u64 = 0xf0;
const LAPIC_LVT_TIMER: u64 = 0x320;
const LAPIC_LVT_LINT0: u64 = 0x350;
/// LVT timer mode bits 17-18: TSC deadline.
const LVT_TSC_DEADLINE: u32 = 0b10 << 17;
const LVT_MASKED: u32 = 1 << 16;
/// The IOAPIC's window register (after the index register).
const IOAPIC_WINDOW: u64 = 0x10;
/// Inputs of each IOAPIC (QEMU's have 24).
const IOAPIC_PINS: u32 = 24;
/// The first IOAPIC's registers, where QEMU and the other VMMs put them.
const FIRST_IOAPIC: u64 = 0xfec0_0000;
/// The IOAPICs: the one at 0xfec0_0000 for GSIs 0 to 23, unless the ACPI
/// tables listed others (QEMU's microvm with ACPI has a second one, for
/// its virtio-mmio lines from GSI 24); set at boot.
static IOAPICS: spin::Mutex<[Option<IoApic>; acpi::Found::IOAPICS_MAX]> = spin::Mutex::new([
    Some(IoApic {
        address: FIRST_IOAPIC,
        gsi_base: 0,
    }),
    None,
    None,
    None,
]);

/// Routes through `ioapics` (the MADT's) from now on, if there are any.
pub fn set_ioapics(ioapics: [Option<IoApic>; acpi::Found::IOAPICS_MAX]) {
    if ioapics.iter().any(Option::is_some) {
        *IOAPICS.lock() = ioapics;
    }
}

/// The register address and input of GSI `irq`.
fn ioapic_input(irq: u32) -> Option<(u64, u32)> {
    IOAPICS.lock().iter().flatten().find_map(|io| {
        let pin = irq.checked_sub(io.gsi_base)?;
        (pin < IOAPIC_PINS && io.address >= super::paging::device_window_start())
            .then_some((io.address, pin))
    })
}

/// Whether the CPU has a LAPIC with the TSC-deadline timer, as the VMM's
/// CPUID says (read at CPL 0: on KVM's PVM `cpuid` at CPL 3 is the host's).
static CAPABLE: AtomicBool = AtomicBool::new(false);
/// 0: not set up yet; 1: set up; 2: not usable (polling).
static STATE: AtomicU8 = AtomicU8::new(0);
/// The GED's IOAPIC input, once a shutdown device asked for it
/// ([`NO_PIN`] before).
static POWER_PIN: AtomicU32 = AtomicU32::new(NO_PIN);
const NO_PIN: u32 = u32::MAX;

/// Reads the CPU's features at CPL 0.
pub fn init_cpl0() {
    let [_, _, ecx, edx] = arch::cpuid(1, 0);
    let apic = edx & (1 << 9) != 0;
    let tsc_deadline = ecx & (1 << 24) != 0;
    CAPABLE.store(apic && tsc_deadline, Ordering::Relaxed);
}

fn write32(addr: u64, value: u32) {
    // SAFETY: `addr` is a LAPIC or IOAPIC register, in the device window
    // kiln's page tables map uncached for the whole run; nothing else in
    // kiln touches these registers.
    unsafe { (addr as *mut u32).write_volatile(value) };
}

/// Sets up the LAPIC timer and routes `irqs` (IOAPIC inputs) to the
/// device vector, once; whether halting can be used.
pub fn ready(irqs: impl Iterator<Item = u32> + Clone) -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let usable = CAPABLE.load(Ordering::Relaxed)
        && super::paging::device_window_start() <= LAPIC
        && irqs.clone().all(|irq| ioapic_input(irq).is_some());
    if !usable {
        STATE.store(2, Ordering::Relaxed);
        return false;
    }
    write32(LAPIC + LAPIC_TPR, 0);
    write32(
        LAPIC + LAPIC_SVR,
        0x100 | u32::from(super::cpu::SPURIOUS_VECTOR),
    );
    write32(LAPIC + LAPIC_LVT_LINT0, LVT_MASKED);
    write32(
        LAPIC + LAPIC_LVT_TIMER,
        LVT_TSC_DEADLINE | u32::from(super::cpu::TIMER_VECTOR),
    );
    for irq in irqs {
        route(irq, super::cpu::DEVICE_VECTOR);
    }
    let pin = POWER_PIN.load(Ordering::Relaxed);
    if pin != NO_PIN {
        route(pin, super::cpu::POWER_VECTOR);
    }
    STATE.store(1, Ordering::Relaxed);
    true
}

/// Routes GSI `irq` to `vector` through the IOAPIC that serves it: fixed
/// delivery to APIC 0, physical destination, edge-triggered, active high,
/// unmasked. A GSI no IOAPIC serves is left alone.
fn route(irq: u32, vector: u8) {
    if let Some((ioapic, pin)) = ioapic_input(irq) {
        write32(ioapic, 0x10 + 2 * pin);
        write32(ioapic + IOAPIC_WINDOW, u32::from(vector));
        write32(ioapic, 0x11 + 2 * pin);
        write32(ioapic + IOAPIC_WINDOW, 0);
    }
}

/// Routes the GED's input `irq` to the power vector: now if the LAPIC is
/// set up, else when [`ready`] sets it up (an interrupt the LAPIC could
/// not take yet would be lost; the routing is also what tells a
/// supervisor that the guest handles the button). An input a virtio
/// device uses, or one past the IOAPIC's, is left alone.
pub fn route_power(irq: u32, device_irqs: impl Iterator<Item = u32>) -> bool {
    if ioapic_input(irq).is_none() || device_irqs.into_iter().any(|d| d == irq) {
        return false;
    }
    POWER_PIN.store(irq, Ordering::Relaxed);
    if STATE.load(Ordering::Relaxed) == 1 {
        route(irq, super::cpu::POWER_VECTOR);
    }
    true
}

/// Reads (and so clears) the GED's event selector at `base`.
pub fn ged_events(base: u64) -> u32 {
    if base < super::paging::device_window_start()
        || base >= FIRST_IOAPIC
        || !base.is_multiple_of(4)
    {
        return 0;
    }
    // SAFETY: `base` is 4-byte aligned in the device window (mapped
    // uncached for the whole run), below the IOAPIC: the GED's register
    // the host named on the command line; reading it has no effect but
    // clearing the GED's pending events.
    unsafe { (base as *const u32).read_volatile() }
}
