//! The random device: the kernel's generator through getrandom(2).

use kiln_devices::RandomError;

use crate::sys;

/// Random bytes from `getrandom(2)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Random {
    /// The kernel's random generator.
    pub fn new() -> Random {
        Random
    }
}

impl kiln_devices::Random for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        sys::getrandom(buf).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSYS) | None => RandomError::Unavailable,
            Some(code) => RandomError::Io(code),
        })
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
