//! The panic report: the message and location to the console, then the
//! abort status. Each platform's `#[panic_handler]` calls [`report`].

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::console::BufferedWriter;
use crate::{Abort, Puts};

/// Set by the first panic, so that a panic while reporting one aborts at
/// once.
static PANICKING: AtomicBool = AtomicBool::new(false);

/// Prints `kiln: panicked at FILE:LINE:COL: MESSAGE` with `puts`, then
/// ends the guest through `abort`.
pub fn report(info: &PanicInfo<'_>, puts: Puts, abort: Abort) -> ! {
    if PANICKING.swap(true, Ordering::AcqRel) {
        abort(format_args!("panicked while reporting a panic"))
    }
    {
        let mut out = BufferedWriter::<_, 256>::new(puts);
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
        Some(l) => abort(format_args!(
            "panicked at {}:{}:{}: {}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        )),
        None => abort(format_args!("panicked: {}", info.message())),
    }
}
