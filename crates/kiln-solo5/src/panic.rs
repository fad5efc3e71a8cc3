//! The panic handler: the message and location to the console, then the
//! abort status.

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::console::BufferedWriter;
use crate::sys;

/// Set by the first panic, so that a panic while reporting one aborts at
/// once.
static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::AcqRel) {
        sys::host::abort(format_args!("panicked while reporting a panic"))
    }
    {
        let mut out = BufferedWriter::<_, 256>::new(sys::host::puts);
        let _ = match info.location() {
            Some(l) => writeln!(
                out,
                "kiln: panicked at {}:{}:{}: {}",
                l.file(),
                l.line(),
                l.column(),
                info.message()
            ),
            None => writeln!(out, "kiln: panicked: {}", info.message()),
        };
    }
    match info.location() {
        Some(l) => sys::host::abort(format_args!(
            "panicked at {}:{}:{}: {}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        )),
        None => sys::host::abort(format_args!("panicked: {}", info.message())),
    }
}
