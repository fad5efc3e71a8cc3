//! kiln-virtio: the freestanding kiln platform for the `virtio` target. A
//! kiln unikernel built for it is one static x86_64 ELF for
//! `x86_64-unknown-none` that boots through the PVH entry (the ELF note
//! `XEN_ELFNOTE_PHYS32_ENTRY`) with no bootloader or firmware, on QEMU
//! (`-M microvm` or q35/pc, `-kernel IMAGE`), Firecracker and
//! cloud-hypervisor.
//!
//! This crate boots the guest, provides the heap, implements the
//! `kiln_devices` traits over what those VMMs emulate, and implements
//! [`kiln_rt::Platform`] with one blocking point (a short spin, then `hlt`
//! until the LAPIC timer or a device's interrupt; see [`platform`]).
//!
//! # Layers, from the bottom
//!
//! - `sys` (only for `target_os = "none"`, the only module with `unsafe`):
//!   the PVH entry (32-bit to long mode), single instructions and port
//!   I/O, the GDT/TSS/IDT and exception stubs, kiln's page tables (null
//!   page and stack guard unmapped, W^X, the device window uncached), the
//!   `talc` heap, the clocks (KVM's pvclock, else the TSC calibrated
//!   against the PIT and the CMOS RTC), the 16550 console and the exit
//!   devices, the virtio devices through `virtio-drivers` (`sys::virtio`,
//!   with `sys::dma` as its `Hal`), and the boot sequence;
//! - [`pvh`], [`cmdline`], [`acpi`], [`clocksource`], [`layout`], [`time`],
//!   [`trap`], [`console`], [`notify`], [`offload`]: logic,
//!   target-independent and unit-tested on the host: the start info and
//!   memory map, the command line's arguments and virtio-mmio devices, the
//!   ACPI tables' virtio-mmio devices and I/O APICs, clock arithmetic, the
//!   virtqueues' notification suppression, virtio-net's offload features
//!   and header, the memory map
//!   and page protections, TSC scaling, exception reports, buffered
//!   console output;
//! - the devices (built for `x86_64-unknown-none` only): `Console`,
//!   `MonotonicClock`, `WallClock`, `Random`, `Net`, `Block`, and the
//!   `Platform`;
//! - [`mod@env`]: the [`Env`] a unikernel starts with, [`main!`] and
//!   [`exit`], the panic handler.
//!
//! `layout`, `trap`, the buffered console writers, TSC scaling, the
//! `random` device, the heap and the panic report come from `kiln-x86`,
//! shared with kiln-solo5: both platforms boot the same way once in long
//! mode (see `sys::cpu`); this crate passes its console (`sys::host::puts`)
//! and abort routine in.
//!
//! # The exit status
//!
//! [`exit`] writes the status to QEMU's `isa-debug-exit` port (0xf4), then
//! tries cloud-hypervisor's ACPI shutdown port and an i8042 reset
//! (Firecracker). QEMU then exits with `(status << 1) | 1`, which
//! `kiln run` turns back into the status; the other VMMs exit 0.
//!
//! # What a generated crate contains
//!
//! As for hvt (see kiln-solo5's crate documentation), with `kiln-virtio`
//! instead of `kiln-solo5`, the linker script published as
//! `DEP_KILN_VIRTIO_LDSCRIPT`, no Solo5 ABI note (the PVH note comes from
//! this crate), the Solo5 manifest note listing the net and block devices,
//! and `kiln_virtio::main!(run)`.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod acpi;
pub mod clocksource;
pub mod cmdline;
pub mod console;
pub mod env;
#[cfg(feature = "host")]
pub mod host;
pub mod notify;
pub mod offload;
pub mod power;
pub use kiln_x86::layout;
pub mod pvh;
pub mod time;
pub use kiln_x86::trap;

#[cfg(target_os = "none")]
pub mod platform;
#[cfg(target_os = "none")]
mod sys;

#[cfg(target_os = "none")]
pub use console::Console;
pub use env::{DeviceError, Env};
pub use kiln_devices::ExitStatus;
#[cfg(target_os = "none")]
pub use kiln_x86::random::Random;
#[cfg(target_os = "none")]
pub use platform::{Platform, platform};
#[cfg(target_os = "none")]
mod shutdown;
#[cfg(target_os = "none")]
pub use shutdown::Shutdown;
#[cfg(target_os = "none")]
pub use sys::virtio::{Block, Net};
#[cfg(target_os = "none")]
pub use time::{MonotonicClock, WallClock};

/// The panic handler: `kiln: panicked at FILE:LINE:COL: MESSAGE` on the
/// console, then the abort status (kiln-x86's report).
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    kiln_x86::panic::report(info, sys::host::puts, sys::host::abort)
}

/// The heap's size and the bytes allocated now and at most (boot
/// information, and the `kiln_heap_*` metrics registered at boot).
#[cfg(target_os = "none")]
pub fn heap_stats() -> kiln_x86::heap::HeapStats {
    sys::heap::stats()
}

/// Prints `error: MESSAGE` if `status` has a message, then ends the VM
/// with its code (see the crate documentation for what each VMM gives
/// back).
#[cfg(target_os = "none")]
pub fn exit(status: ExitStatus) -> ! {
    sys::virtio::flush_all();
    if let Some(message) = &status.message {
        use kiln_devices::Console as _;
        let _ = Console::new().logf(format_args!("error: {message}"));
    }
    sys::host::halt(i32::from(status.code), None)
}

/// The TSC frequency the clocks found at boot, in Hz, and whether it came
/// from KVM's pvclock (else from the PIT).
#[cfg(target_os = "none")]
pub fn tsc_hz() -> (u64, bool) {
    sys::clock::tsc_hz()
}

/// Declares the unikernel's entry: `kiln_virtio::main!(run)` with
/// `fn run(env: &'static kiln_virtio::Env) -> kiln_virtio::ExitStatus`.
/// kiln-virtio's boot code calls it once the platform is up and ends the
/// VM with the status it returns.
#[macro_export]
macro_rules! main {
    ($run:path) => {
        #[unsafe(export_name = "kiln_virtio_main")]
        fn __kiln_virtio_main(env: &'static $crate::Env) -> $crate::ExitStatus {
            $run(env)
        }
    };
}
