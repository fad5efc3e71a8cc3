//! The random device: RDRAND, falling back to RDSEED, each retried a
//! bounded number of times (Intel's DRNG guide recommends 10 for RDRAND).

use kiln_devices::RandomError;

use crate::sys::arch;

const RDRAND_RETRIES: usize = 10;
const RDSEED_RETRIES: usize = 100;
/// `EAGAIN`: the CPU had no random number ready after every retry.
const EAGAIN: i32 = 11;

/// Rejects all-ones, which some CPUs return with CF=1 when their generator
/// is broken (certain AMD parts after a resume); a retry follows.
fn plausible(v: &u64) -> bool {
    *v != u64::MAX
}

/// The CPU's random number generator.
#[derive(Debug, Clone, Copy)]
pub struct Random {
    rdrand: bool,
    rdseed: bool,
}

impl Default for Random {
    fn default() -> Self {
        Self::new()
    }
}

impl Random {
    /// The generator, with what CPUID says the CPU has.
    pub fn new() -> Random {
        let max_leaf = arch::cpuid(0, 0)[0];
        let rdrand = arch::cpuid(1, 0)[2] & (1 << 30) != 0;
        let rdseed = max_leaf >= 7 && arch::cpuid(7, 0)[1] & (1 << 18) != 0;
        Random { rdrand, rdseed }
    }

    fn next(&self) -> Result<u64, RandomError> {
        if self.rdrand
            && let Some(v) = (0..RDRAND_RETRIES).find_map(|_| arch::rdrand().filter(plausible))
        {
            return Ok(v);
        }
        if self.rdseed
            && let Some(v) = (0..RDSEED_RETRIES).find_map(|_| {
                core::hint::spin_loop();
                arch::rdseed().filter(plausible)
            })
        {
            return Ok(v);
        }
        if self.rdrand || self.rdseed {
            Err(RandomError::Io(EAGAIN))
        } else {
            Err(RandomError::Unavailable)
        }
    }
}

impl kiln_devices::Random for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next()?.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}
