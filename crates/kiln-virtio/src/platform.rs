//! The runtime's blocking point. `wait` first spins for [`SPIN_NANOS`]
//! with `pause` on the monotonic clock, checking the network devices' queues
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

use kiln_devices::Instant;

use crate::sys;

/// How long a wait spins before it halts, in nanoseconds: a frame that
/// comes within it is answered without the exits of an interrupt. A halt
/// costs several exits (the timer's MSR, the `hlt` through the #UD gate,
/// the interrupt and its end at the LAPIC, the device's acknowledgement),
/// so a spin about as long as those pays for itself; a longer one (this
/// was 1 ms after a wait that ended with network work) spends the CPU
/// that QEMU's I/O thread and the peer need to answer: a quarter more
/// CPU per 1 MiB response, the same per small one (docs/bulk.md, "Where
/// virtio's time goes").
pub const SPIN_NANOS: u64 = 100_000;

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
        let spin_until = self.now().as_nanos().saturating_add(SPIN_NANOS);
        loop {
            if sys::virtio::poll_all() {
                return;
            }
            let now = self.now();
            if deadline.is_some_and(|d| now >= d) {
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
