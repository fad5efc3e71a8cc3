//! The random device: a source of cryptographically secure random bytes.

/// Why random bytes could not be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RandomError {
    /// The entropy source is not available on this platform or machine.
    #[error("no entropy source available")]
    Unavailable,
    /// The host reported an error with this OS error code.
    #[error("entropy source failed (os error {0})")]
    Io(i32),
}

/// A source of random bytes suitable for keys, nonces and TCP sequence
/// numbers (the OS generator on unix, RDRAND/RDSEED on hvt and spt).
pub trait Random {
    /// Fills `buf` entirely with random bytes.
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError>;

    /// Returns a random `u64`.
    fn next_u64(&self) -> Result<u64, RandomError> {
        let mut bytes = [0; 8];
        self.fill(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }
}

impl<R: Random + ?Sized> Random for &R {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        (**self).fill(buf)
    }
}
