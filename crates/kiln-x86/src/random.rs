//! The random device: a ChaCha20 generator (`kiln-csprng`) seeded and
//! reseeded from the CPU's RDSEED, falling back to RDRAND, each retried a
//! bounded number of times (Intel's DRNG guide recommends 10 for RDRAND).
//! A CPU with neither refuses to start the unikernel.

use kiln_csprng::{Csprng, EntropySource};
use kiln_devices::{ExitStatus, RandomError};

use crate::arch;

const RDRAND_RETRIES: usize = 10;
const RDSEED_RETRIES: usize = 100;
/// `EAGAIN`: the CPU had no random number ready after every retry.
const EAGAIN: i32 = 11;

/// Rejects all-ones, which some CPUs return with CF=1 when their generator
/// is broken (certain AMD parts after a resume); a retry follows.
fn plausible(v: &u64) -> bool {
    *v != u64::MAX
}

/// The CPU's random number generator: the entropy source. It asks CPUID
/// what the CPU has at every seed (once per megabyte of output).
#[derive(Debug, Clone, Copy)]
pub struct Cpu;

/// What CPUID says the CPU has.
struct Features {
    rdrand: bool,
    rdseed: bool,
}

impl Features {
    fn new() -> Features {
        let max_leaf = arch::cpuid(0, 0)[0];
        let rdrand = arch::cpuid(1, 0)[2] & (1 << 30) != 0;
        let rdseed = max_leaf >= 7 && arch::cpuid(7, 0)[1] & (1 << 18) != 0;
        Features { rdrand, rdseed }
    }

    fn next(&self) -> Result<u64, RandomError> {
        if self.rdseed
            && let Some(v) = (0..RDSEED_RETRIES).find_map(|_| {
                core::hint::spin_loop();
                arch::rdseed().filter(plausible)
            })
        {
            return Ok(v);
        }
        if self.rdrand
            && let Some(v) = (0..RDRAND_RETRIES).find_map(|_| arch::rdrand().filter(plausible))
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

impl EntropySource for Cpu {
    fn entropy(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        let features = Features::new();
        for chunk in buf.chunks_mut(8) {
            let bytes = features.next()?.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// The image's one generator.
static GENERATOR: Csprng<Cpu> = Csprng::new(Cpu);

/// The random device: a handle to the image's ChaCha20 generator.
#[derive(Debug, Clone, Copy)]
pub struct Random {
    generator: &'static Csprng<Cpu>,
}

impl Random {
    /// The device, seeded from the CPU. Without RDSEED or RDRAND, or if
    /// neither yields a seed, the unikernel stops here through `exit` with
    /// status 1 rather than run with a weak seed.
    pub fn new(exit: fn(ExitStatus) -> !) -> Random {
        let generator = &GENERATOR;
        if let Err(e) = generator.seed_now() {
            let why = match e {
                RandomError::Unavailable => "the CPU has neither RDSEED nor RDRAND",
                _ => "RDSEED and RDRAND gave no random number",
            };
            exit(ExitStatus {
                code: 1,
                message: Some(alloc::format!(
                    "no entropy for the random device: {why}; kiln does not start without a \
                 hardware entropy source\n  hint: run on a CPU (or a VM's CPU model) with RDRAND"
                )),
            });
        }
        Random { generator }
    }
}

impl kiln_devices::Random for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        self.generator.fill(buf)
    }
}
