//! What the VMM's emulated legacy devices offer: the console on the first
//! 16550 UART, when there is no virtio console (port 0x3f8, transmit only: the VMMs kiln targets accept
//! every write at once, so kiln neither programs the line nor polls its
//! status, each of which would be an exit) and the ways to end the VM with
//! the unikernel's status.
//!
//! Ending the VM, tried in this order (each VMM ignores the others):
//!
//! - QEMU's `isa-debug-exit` device at port 0xf4 (`kiln run` adds
//!   `-device isa-debug-exit,iobase=0xf4,iosize=4`): QEMU exits with
//!   `(status << 1) | 1`, which `kiln run` turns back into the status;
//! - cloud-hypervisor's ACPI shutdown port 0x600 (S5): the VMM exits 0,
//!   the status is lost;
//! - the i8042 controller's CPU reset (port 0x64, 0xfe): Firecracker stops
//!   the VM and exits 0, QEMU with `-no-reboot` exits 0;
//! - otherwise kiln spins.

use core::ffi::CStr;

use super::arch;

/// The first serial port's transmit register.
const COM1: u16 = 0x3f8;
/// QEMU's `isa-debug-exit` port, as `kiln run` configures it.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// cloud-hypervisor's ACPI shutdown device and its S5 value (SLP_TYP 5,
/// SLP_EN).
const ACPI_SHUTDOWN_PORT: u16 = 0x600;
const ACPI_S5: u8 = (5 << 2) | (1 << 5);
/// The i8042's command port and its pulse-reset command.
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;

/// The status of a guest that aborted (Solo5's `SOLO5_EXIT_ABORT`).
pub const EXIT_ABORT: i32 = 255;

/// The names of the exits counted in `kiln_x86::exits`, by slot: queue
/// notifications (`sys::ring`), halts (the platform's wait) and console
/// writes (one `rep outsb` each).
pub const EXIT_NAMES: &[&str] = &["notify", "halt", "console"];
/// The slots of [`EXIT_NAMES`].
pub const EXIT_NOTIFY: usize = 0;
pub const EXIT_HALT: usize = 1;
const EXIT_CONSOLE: usize = 2;

/// Writes `bytes` to the console: the virtio console when the VM has one
/// (`sys::virtio_console`), else the serial port.
pub fn puts(bytes: &[u8]) {
    if !bytes.is_empty() && !super::virtio_console::write(bytes) {
        kiln_x86::exits::count(EXIT_CONSOLE);
        arch::outsb(COM1, bytes);
    }
}

/// Ends the VM with `status` (see the module's documentation for what each
/// VMM gives back). `message` was printed by the caller already.
pub fn halt(status: i32, _message: Option<&CStr>) -> ! {
    arch::outl(DEBUG_EXIT_PORT, status as u32 & 0xff);
    arch::outb(ACPI_SHUTDOWN_PORT, ACPI_S5);
    arch::outb(I8042_COMMAND, I8042_RESET);
    arch::halt_forever()
}

/// Ends the VM with the abort status (255) after printing `kiln: abort:
/// WHY` (callers print the full story first). Does not allocate.
pub fn abort(why: core::fmt::Arguments<'_>) -> ! {
    use core::fmt::Write;
    {
        let mut out = crate::console::BufferedWriter::<_, 256>::new(puts);
        let _ = writeln!(out, "kiln: abort: {why}");
    }
    halt(EXIT_ABORT, None)
}
