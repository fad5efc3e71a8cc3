//! The random device behind every handshake: installed once per image with
//! [`install`], used as rustls's `SecureRandom` and, on
//! `x86_64-unknown-none`, as getrandom's source for the provider's key
//! generation (on unix getrandom asks the kernel).

use alloc::boxed::Box;

use kiln_devices::Random;
use rustls::crypto::{GetRandomFailed, SecureRandom};

type Device = Box<dyn Random + Send + Sync>;

static DEVICE: spin::Mutex<Option<Device>> = spin::Mutex::new(None);

/// Makes `random` the source of every TLS random number from now on (the
/// last one installed wins; a kiln image has one random device).
pub fn install<R: Random + Send + Sync + 'static>(random: R) {
    *DEVICE.lock() = Some(Box::new(random));
}

/// Fills `buf` from the installed device.
pub fn fill(buf: &mut [u8]) -> Result<(), kiln_devices::RandomError> {
    match DEVICE.lock().as_ref() {
        Some(device) => device.fill(buf),
        None => Err(kiln_devices::RandomError::Unavailable),
    }
}

/// The installed device as a random device, for the rest of a unikernel
/// that handed its own to a TLS configuration.
#[derive(Debug, Clone, Copy)]
pub struct Installed;

impl Random for Installed {
    fn fill(&self, buf: &mut [u8]) -> Result<(), kiln_devices::RandomError> {
        fill(buf)
    }
}

/// rustls's random source: the installed device.
#[derive(Debug)]
pub struct DeviceRandom;

impl SecureRandom for DeviceRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        fill(buf).map_err(|_| GetRandomFailed)
    }
}

/// getrandom's custom source (used only where getrandom knows no OS
/// source: `x86_64-unknown-none`).
fn getrandom_source(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    fill(buf).map_err(|_| {
        core::num::NonZeroU32::new(getrandom::Error::CUSTOM_START)
            .map_or(getrandom::Error::UNSUPPORTED, getrandom::Error::from)
    })
}

getrandom::register_custom_getrandom!(getrandom_source);
