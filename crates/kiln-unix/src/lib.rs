//! The unix platform of kiln: runs a unikernel as an ordinary host process.
//!
//! The crate that `kiln configure -t unix` generates calls [`platform`] for
//! the process's reactor, builds each device from the host resource named
//! on the command line, drives the unikernel's entry function with
//! `kiln_rt::block_on`, and ends with [`exit`].
//!
//! Modules, from the bottom:
//!
//! - `sys`: every system call, wrapped as a safe function (mostly
//!   rustix's; the only `unsafe` code in the crate); taps are opened by
//!   `kiln-tap`;
//! - [`reactor`]: the [`Platform`], whose `wait` is one `ppoll(2)` over the
//!   descriptors that devices registered, and [`Registration`], a device's
//!   handle on it;
//! - the devices, each in its own module: [`console`] (stdout), [`clock`]
//!   (CLOCK_MONOTONIC, CLOCK_REALTIME), [`random`] (getrandom), [`stack`]
//!   (TCP/UDP over host sockets), [`tap`] (a tap interface) and [`block`]
//!   (a file), with [`attach`] for the errors of attaching them to host
//!   resources, and [`shutdown`] (SIGTERM through a signalfd);
//! - [`process`]: the command line and the exit status.
//!
//! The sleep device is `kiln_rt::Timer`, whose deadlines `wait` honours to
//! the nanosecond.

// Only `sys` may use `unsafe`.
#![deny(unsafe_code)]

pub mod attach;
pub mod block;
pub mod clock;
pub mod console;
pub mod process;
pub mod random;
pub mod reactor;
pub mod shutdown;
pub mod stack;
#[allow(unsafe_code)]
mod sys;
pub mod tap;

pub use attach::AttachError;
pub use block::FileBlock;
pub use clock::{MonotonicClock, WallClock};
pub use console::Console;
pub use process::{ArgsError, args, exit};
pub use random::Random;
pub use reactor::{Interest, Platform, Registration};
pub use shutdown::Shutdown;
pub use stack::{SocketStack, TcpListener, TcpStream, UdpSocket};
pub use tap::{Tap, TapOptions};

std::thread_local! {
    static PLATFORM: &'static Platform = {
        let platform: &'static Platform = Box::leak(Box::new(Platform::new()));
        // Both live as long as the thread (the registry is the thread's).
        std::mem::forget(kiln_metrics::register(move |out: &mut kiln_metrics::Exposition| {
            platform.write_metrics(out)
        }));
        platform
    };
}

/// The platform of the calling thread, created on first use and never
/// freed. A unikernel runs on the process's main thread, so in practice
/// there is one; each test thread gets its own.
pub fn platform() -> &'static Platform {
    PLATFORM.with(|p| *p)
}
