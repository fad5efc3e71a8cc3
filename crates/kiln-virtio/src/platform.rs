//! The runtime's blocking point. `wait` first spins for [`SPIN_NANOS`]
//! ([`SPIN_BUSY_NANOS`] when the last wait ended with network work) with
//! `pause` on the monotonic clock, checking the network devices' queues
//! between spins: a frame that comes soon is answered without any exit.
//! Then, where every network device can interrupt (virtio-mmio lines from
//! the command line or the ACPI tables, virtio-pci MSI-X; or no network
//! device at all), it asks
//! the devices to interrupt (they do not while the unikernel runs or
//! spins: `sys::ring`), acknowledges the interrupts delivered since the
//! last halt, checks the queues once more and
//! halts until the deadline (the LAPIC's TSC-deadline timer) or a device's
//! interrupt (`sys::idle`, `sys::cpu::halt_until`): an idle unikernel uses
//! no CPU. The unikernel runs at CPL 3, where `hlt` faults, so the halt
//! goes through kiln's #UD gate like the page-table switch.
//!
//! A network device that cannot interrupt (a virtio-pci function without
//! MSI-X, or whose structures lie outside kiln's device window) keeps the
//! wait spinning: the vCPU is busy while the unikernel idles.

use core::sync::atomic::{AtomicBool, Ordering};

use kiln_devices::Instant;

use crate::sys;

/// How long a wait spins before it halts, in nanoseconds: a frame that
/// comes within it is answered without the exits of an interrupt.
pub const SPIN_NANOS: u64 = 100_000;
/// How long a wait spins when the last one ended with network work (a
/// server under load): halting costs several exits (the timer's MSR, the
/// interrupt, its end at the LAPIC, the device's acknowledgement), and a
/// loaded server's next frame usually comes within this.
pub const SPIN_BUSY_NANOS: u64 = 1_000_000;

/// Whether the last wait ended with network work.
static BUSY: AtomicBool = AtomicBool::new(false);

/// The platform: implements [`kiln_rt::Platform`] with the monotonic clock
/// and its wait.
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
        self.wait_for_work(deadline);
        // A stop request that came with the interrupt wakes its waiter.
        crate::shutdown::after_wait();
    }
}

impl Platform {
    fn wait_for_work(&self, deadline: Option<Instant>) {
        use kiln_rt::Platform as _;
        // The frames and buffers queued since the last wait, in one
        // notification per device.
        sys::virtio::flush_all();
        let spin = if BUSY.load(Ordering::Relaxed) {
            SPIN_BUSY_NANOS
        } else {
            SPIN_NANOS
        };
        let spin_until = self.now().as_nanos().saturating_add(spin);
        loop {
            if sys::virtio::poll_all() {
                BUSY.store(true, Ordering::Relaxed);
                return;
            }
            let now = self.now();
            if deadline.is_some_and(|d| now >= d) {
                BUSY.store(false, Ordering::Relaxed);
                return;
            }
            if now.as_nanos() < spin_until || !sys::virtio::can_halt() {
                core::hint::spin_loop();
                continue;
            }
            // Nothing came while spinning: halt until the deadline or a
            // device's interrupt. The devices are asked to interrupt and
            // their lines acknowledged first, and the queues checked
            // again, so that nothing that arrived before is slept through.
            sys::virtio::arm_all();
            BUSY.store(false, Ordering::Relaxed);
            if sys::virtio::poll_all() {
                return;
            }
            let tsc = deadline.map_or(0, sys::clock::tsc_at);
            if deadline.is_some() && tsc == 0 {
                core::hint::spin_loop();
                continue;
            }
            kiln_x86::exits::count(sys::host::EXIT_HALT);
            sys::cpu::halt_until(tsc);
        }
    }
}
