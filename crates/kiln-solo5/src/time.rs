//! The monotonic and wall clock devices, built on the TSC scaling of
//! `kiln_x86::time`.

pub use kiln_x86::time::{TimeError, TscScale};

#[cfg(target_os = "none")]
pub use devices::{MonotonicClock, WallClock};

#[cfg(target_os = "none")]
mod devices {
    use kiln_devices::{Instant, Timestamp};

    use crate::sys;

    /// The monotonic clock: the TSC scaled by the boot info's cycle
    /// frequency. Reading it causes no VM exit.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct MonotonicClock;

    impl MonotonicClock {
        /// The monotonic clock.
        pub fn new() -> MonotonicClock {
            MonotonicClock
        }
    }

    impl kiln_devices::MonotonicClock for MonotonicClock {
        fn now(&self) -> Instant {
            sys::clock::now()
        }
    }

    /// The wall clock: the tender's time of day read once at boot, advanced
    /// by the monotonic clock.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct WallClock;

    impl WallClock {
        /// The wall clock.
        pub fn new() -> WallClock {
            WallClock
        }
    }

    impl kiln_devices::WallClock for WallClock {
        fn now(&self) -> Timestamp {
            sys::clock::wall_now()
        }
    }
}
