//! The kiln runtime: one single-threaded `async` executor for every target.
//!
//! A unikernel's entry function is a future; [`block_on`] drives it, with
//! any tasks it [`spawn`]s, until it completes. Timers ([`Timer`],
//! [`sleep`], [`timeout`]) are kept by the executor in one ordered map.
//!
//! The executor never spins. When no task is ready it calls the platform's
//! one blocking point, [`Platform::wait`]: "block until some device is ready
//! or the earliest timer is due". Each platform implements it with what it
//! has: `poll(2)` on unix, the Solo5 `yield` hypercall on hvt, `epoll_pwait`
//! on spt. A platform's devices keep the wakers of the tasks waiting on
//! them and wake them from inside `wait`.
//!
//! Modules, from the bottom: [`platform`] (the blocking point), `executor`
//! (tasks, the ready queue and the run loop), [`time`] (timers), [`task`]
//! (spawn and join handles), [`future`] (select, timeout and yield); beside
//! them [`logger`], the `log` facade's logger the generated `main`
//! installs (`--log`), and [`host_flag`], the one task awaiting a request
//! the host raises in a flag (the freestanding platforms' stop request).
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

/// Runtime-argument parsing, re-exported for generated crates.
pub use kiln_args as args;
/// The `log` facade, re-exported for generated crates.
pub use log;
mod executor;
pub mod future;
pub mod host_flag;
pub mod logger;
pub mod platform;
pub mod task;
pub mod time;

pub use executor::block_on;
pub use future::{Either, Elapsed, join_all, select, timeout, yield_now};
pub use host_flag::HostFlag;
pub use platform::Platform;
pub use task::{JoinHandle, spawn};
pub use time::{Sleep, Timer, sleep, sleep_until};
