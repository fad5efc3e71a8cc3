//! The shutdown device on virtio: the ACPI power button of QEMU's microvm
//! (`crate::power`). Creating the device routes the GED's interrupt to the
//! power vector (when the host named a GED with `kiln.ged=`); each GED
//! interrupt makes the next check read the GED's selector, and the
//! power-down event there is the stop request. The platform's wait wakes
//! the task awaiting [`kiln_devices::Shutdown::requested`] after the
//! interrupt that brought it. Without a GED the device never completes and
//! a stop is the VMM's (a power-off).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kiln_rt::HostFlag;

use crate::power::{GED_PWR_DOWN_EVT, Ged};
use crate::sys;

/// The request and the task waiting for it.
static STOP: HostFlag = HostFlag::new(requested);
/// The GED's selector address, once a device routed it (0: none).
static GED_BASE: AtomicU64 = AtomicU64::new(0);
/// GED interrupts already looked at.
static SEEN: AtomicU64 = AtomicU64::new(0);
/// Whether the power-down event has come.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The host's request to stop.
#[derive(Debug)]
pub struct Shutdown {
    offered: bool,
}

impl Shutdown {
    /// The device for the GED the command line named, if any (its line
    /// must not be a virtio device's).
    pub(crate) fn new(ged: Option<Ged>, device_irqs: impl Iterator<Item = u32>) -> Shutdown {
        let offered = ged.is_some_and(|g| {
            let routed = sys::idle::route_power(g.irq, device_irqs);
            if routed {
                GED_BASE.store(g.base, Ordering::Relaxed);
            }
            routed
        });
        Shutdown { offered }
    }

    /// Whether the VMM delivers stop requests (QEMU's microvm with ACPI);
    /// if not, [`kiln_devices::Shutdown::requested`] never completes.
    pub fn offered(&self) -> bool {
        self.offered
    }
}

/// Whether the request has come: the selector is read (which clears it)
/// only after a GED interrupt not yet looked at; never without a routed
/// GED.
fn requested() -> bool {
    if REQUESTED.load(Ordering::Relaxed) {
        return true;
    }
    let base = GED_BASE.load(Ordering::Relaxed);
    if base == 0 {
        return false;
    }
    let irqs = sys::cpu::power_interrupts();
    if irqs != SEEN.load(Ordering::Relaxed) {
        SEEN.store(irqs, Ordering::Relaxed);
        if sys::idle::ged_events(base) & GED_PWR_DOWN_EVT != 0 {
            REQUESTED.store(true, Ordering::Relaxed);
        }
    }
    REQUESTED.load(Ordering::Relaxed)
}

impl kiln_devices::Shutdown for Shutdown {
    fn requested(&self) -> impl Future<Output = ()> {
        STOP.wait(self.offered)
    }
}

/// After each wait: wakes the waiting task once the request has come.
pub(crate) fn after_wait() {
    STOP.after_wait();
}
