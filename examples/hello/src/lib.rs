//! hello: a kiln unikernel that prints `hello` `--times` times, a second
//! apart, then exits 0.
#![no_std]
#![deny(unsafe_code)]

use core::time::Duration;

use kiln_devices::{Console, ConsoleError, Sleep};

/// Prints `hello` `times` times, one second apart.
pub async fn start(
    console: impl Console,
    sleep: impl Sleep,
    times: u32,
) -> Result<(), ConsoleError> {
    for i in 0..times {
        if i > 0 {
            sleep.sleep(Duration::from_secs(1)).await;
        }
        console.log("hello")?;
    }
    Ok(())
}
