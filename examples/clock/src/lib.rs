//! clock: a kiln unikernel that prints the monotonic and wall clocks and
//! rolls `--rolls` six-sided dice with the random device.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use core::fmt::Write as _;

use kiln_devices::{Console, ExitStatus, MonotonicClock, Random, WallClock};

/// Prints the clocks and the dice, one per line; exits 1 if the random
/// device or the console fails.
pub async fn start(
    console: impl Console,
    clock: impl MonotonicClock,
    wall: impl WallClock,
    random: impl Random,
    rolls: u8,
) -> ExitStatus {
    let mut out = String::new();
    let _ = writeln!(out, "monotonic: {} ns", clock.now().as_nanos());
    let _ = writeln!(out, "wall: {}", wall.now());
    for i in 1..=rolls {
        match roll(&random) {
            Ok(n) => {
                let _ = writeln!(out, "roll {i}: {n}");
            }
            Err(e) => {
                return ExitStatus {
                    code: 1,
                    message: Some(alloc::format!("roll {i}: {e}")),
                };
            }
        }
    }
    match console.write(out.as_bytes()) {
        Ok(()) => ExitStatus::SUCCESS,
        Err(e) => ExitStatus {
            code: 1,
            message: Some(alloc::format!("console: {e}")),
        },
    }
}

/// A fair roll of a six-sided die: rejects the bytes that would bias it.
fn roll(random: &impl Random) -> Result<u8, kiln_devices::RandomError> {
    loop {
        let mut byte = [0];
        random.fill(&mut byte)?;
        if byte[0] < 252 {
            return Ok(byte[0] % 6 + 1);
        }
    }
}
