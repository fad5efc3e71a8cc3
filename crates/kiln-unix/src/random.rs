//! The random device: a ChaCha20 generator (`kiln-csprng`) seeded and
//! reseeded from the kernel's generator through getrandom(2), as on hvt
//! and spt from the CPU's.

use kiln_csprng::{Csprng, EntropySource};
use kiln_devices::RandomError;

use crate::sys;

/// The kernel's generator: the entropy source.
#[derive(Debug, Clone, Copy)]
pub struct Getrandom;

impl EntropySource for Getrandom {
    fn entropy(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        sys::getrandom(buf).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSYS) | None => RandomError::Unavailable,
            Some(code) => RandomError::Io(code),
        })
    }
}

/// The process's one generator.
static GENERATOR: Csprng<Getrandom> = Csprng::new(Getrandom);

/// The random device: a handle to the process's ChaCha20 generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Random {
    /// The device; the generator is seeded on first use.
    pub fn new() -> Random {
        Random
    }
}

impl kiln_devices::Random for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        GENERATOR.fill(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_devices::Random as _;

    #[test]
    fn fills_large_buffers_with_varied_bytes() {
        let mut a = vec![0u8; 1 << 20];
        let mut b = vec![0u8; 1 << 20];
        Random::new().fill(&mut a).unwrap();
        Random::new().fill(&mut b).unwrap();
        assert_ne!(a, b);
        // Every byte value shows up in a megabyte of random data.
        let mut seen = [false; 256];
        a.iter().for_each(|&x| seen[usize::from(x)] = true);
        assert!(seen.iter().all(|&s| s));
        // The tail was filled too.
        assert!(a[a.len() - 64..].iter().any(|&x| x != 0));
    }
}
