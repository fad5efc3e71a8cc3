//! The `kiln-spt` command: runs [`kiln_spt::run`] and turns its result into
//! output and an exit status.
//!
//! The entry is C's `main`, not std's: std's runtime set-up (a guard page
//! and handler for the main thread's stack overflow, found by parsing
//! `/proc/self/maps`, SIGPIPE ignored) costs a noticeable share of a run of
//! a short-lived guest, and the tender does not need it. What of it matters
//! is done here: descriptors 0 to 2 are opened on `/dev/null` when closed (so
//! that a disk or tap never lands on the guest's console) and SIGPIPE is
//! ignored (a closed stdout or stderr is an error to ignore, not a death;
//! the guest gets the default action back). The exit skips the C library's
//! exit handlers once the output is flushed.
#![no_main]

use std::ffi::{CStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt as _;

/// The arguments after the program name, from C's `argv` (without std's
/// entry, std has them only on glibc).
fn args(argc: libc::c_int, argv: *const *const libc::c_char) -> Vec<OsString> {
    let argc = usize::try_from(argc).unwrap_or(0);
    (1..argc)
        .map(|i| {
            // SAFETY: the C runtime passes `argc` valid pointers in `argv`,
            // each to a NUL-terminated string that lives as long as the
            // process.
            let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
            std::ffi::OsStr::from_bytes(arg.to_bytes()).to_os_string()
        })
        .collect()
}

#[unsafe(no_mangle)]
extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    kiln_spt::sys::open_standard_fds();
    kiln_spt::sys::ignore_sigpipe();
    let code = match kiln_spt::run(args(argc, argv)) {
        Ok(kiln_spt::Exit::Text(text)) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            0
        }
        Ok(kiln_spt::Exit::Status(status)) => kiln_spt::exit_code(status),
        Ok(kiln_spt::Exit::Killed(signal)) => {
            let _ = std::io::stdout().flush();
            kiln_spt::sys::die_by_signal(signal)
        }
        Err(err) => {
            eprintln!("{}", kiln_spt::report(&err));
            1
        }
    };
    let _ = std::io::stdout().flush();
    kiln_spt::sys::exit_now(i32::from(code))
}
