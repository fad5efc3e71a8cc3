//! The runtime's blocking point. The virtio target polls: `wait` spins
//! (with `pause`) on the monotonic clock until the deadline or until a
//! device's queue has work, checking the devices between spins.
//!
//! Why not `hlt`: the unikernel runs at CPL 3 (see `sys::cpu`), where
//! `hlt` faults, and waking from it needs interrupts (the LAPIC timer and
//! the virtio devices' lines through the IOAPIC), each costing a VM exit
//! and, on hypervisors that emulate CPL 0 (KVM's PVM), a few microseconds
//! of emulated handler per interrupt. Polling answers a packet without any
//! exit, at the price of one busy host CPU while the unikernel idles: the
//! right trade for a server VM with a dedicated vCPU, the wrong one for a
//! host packed with idle guests. Interrupt-driven waiting is future work
//! (docs/targets.md).

use kiln_devices::Instant;

use crate::sys;

/// The platform: implements [`kiln_rt::Platform`] with the monotonic clock
/// and a polling wait.
pub struct Platform {
    _private: (),
}

static PLATFORM: Platform = Platform { _private: () };

/// The platform.
pub fn platform() -> &'static Platform {
    &PLATFORM
}

impl kiln_rt::Platform for Platform {
    fn now(&self) -> Instant {
        sys::clock::now()
    }

    fn wait(&self, deadline: Option<Instant>) {
        loop {
            if crate::sys::virtio::poll_all() {
                return;
            }
            if deadline.is_some_and(|d| self.now() >= d) {
                return;
            }
            core::hint::spin_loop();
        }
    }
}
