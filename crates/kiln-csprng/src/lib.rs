//! The generator behind every target's random device: ChaCha20
//! (`rand_chacha`) seeded from the platform's entropy source and reseeded
//! from it every [`RESEED_BYTES`] of output.
//!
//! A platform supplies an [`EntropySource`] (RDSEED/RDRAND on hvt and spt,
//! getrandom(2) on unix); [`Csprng`] turns it into a
//! [`kiln_devices::Random`]. The entropy source is slow (a VM exit or a
//! system call, or a few hundred cycles per 8 bytes for RDSEED), the
//! generator fast: ChaCha20 with a 256-bit key from the source, the
//! standard construction of Linux's and OpenBSD's kernel generators and of
//! MirageOS's `mirage-crypto-rng` (Fortuna there).
//!
//! - **Seeding**: lazily, on the first [`fill`](kiln_devices::Random::fill),
//!   with 32 bytes from the source; [`Csprng::seed_now`] does it eagerly so
//!   that a platform can refuse to start without entropy.
//! - **Reseeding**: after [`RESEED_BYTES`] of output, the new key is 32
//!   bytes of the generator's own output XORed with 32 fresh bytes from the
//!   source: the state never becomes weaker than either input. If the
//!   source fails at reseed time, the fill fails with its typed error rather
//!   than running on without fresh entropy.
//! - **Backtracking resistance**: the key is replaced at every reseed; the
//!   ChaCha20 block buffer of at most 64 bytes is the only output kept.
//! - **Sharing**: one generator behind a spin lock, `Sync`, so that a
//!   platform keeps one per image (a `static`) and hands out copies of a
//!   reference as the device.
#![no_std]
#![deny(unsafe_code)]

use kiln_devices::RandomError;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Output between two reseeds from the entropy source.
pub const RESEED_BYTES: u64 = 1 << 20;

/// Where a [`Csprng`] takes its seeds from: a source of true (or
/// kernel-conditioned) entropy, possibly slow.
pub trait EntropySource {
    /// Fills `buf` with bytes from the source.
    fn entropy(&self, buf: &mut [u8]) -> Result<(), RandomError>;
}

struct State {
    rng: ChaCha20Rng,
    /// Bytes produced since the last (re)seed.
    produced: u64,
}

/// A ChaCha20 generator seeded and reseeded from `S`.
pub struct Csprng<S> {
    source: S,
    state: spin::Mutex<Option<State>>,
}

impl<S: core::fmt::Debug> core::fmt::Debug for Csprng<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Csprng")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<S: EntropySource> Csprng<S> {
    /// A generator over `source`, seeded on first use.
    pub const fn new(source: S) -> Self {
        Csprng {
            source,
            state: spin::Mutex::new(None),
        }
    }

    /// The entropy source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Seeds the generator now if it is not yet seeded; fails if the source
    /// cannot give a seed.
    pub fn seed_now(&self) -> Result<(), RandomError> {
        let mut state = self.state.lock();
        if state.is_none() {
            *state = Some(self.fresh(None)?);
        }
        Ok(())
    }

    /// A new state keyed by 32 bytes from the source, XORed with `mix`.
    fn fresh(&self, mix: Option<[u8; 32]>) -> Result<State, RandomError> {
        let mut seed = [0u8; 32];
        self.source.entropy(&mut seed)?;
        if let Some(mix) = mix {
            seed.iter_mut().zip(mix).for_each(|(s, m)| *s ^= m);
        }
        let rng = ChaCha20Rng::from_seed(seed);
        seed.fill(0);
        Ok(State { rng, produced: 0 })
    }
}

impl<S: EntropySource> kiln_devices::Random for Csprng<S> {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        let mut guard = self.state.lock();
        let state = match guard.as_mut() {
            Some(state) => state,
            None => guard.insert(self.fresh(None)?),
        };
        if state.produced >= RESEED_BYTES {
            let mut own = [0u8; 32];
            state.rng.fill_bytes(&mut own);
            *state = self.fresh(Some(own))?;
            own.fill(0);
        }
        state.rng.fill_bytes(buf);
        state.produced = state.produced.saturating_add(buf.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::cell::Cell;
    use kiln_devices::Random as _;
    use std::vec;

    /// A counter as entropy: deterministic, so tests can see reseeds.
    #[derive(Debug, Default)]
    struct Counter {
        calls: Cell<u32>,
        fail_after: Option<u32>,
    }

    impl EntropySource for Counter {
        fn entropy(&self, buf: &mut [u8]) -> Result<(), RandomError> {
            let n = self.calls.get() + 1;
            if self.fail_after.is_some_and(|f| n > f) {
                return Err(RandomError::Unavailable);
            }
            self.calls.set(n);
            buf.fill(n as u8);
            Ok(())
        }
    }

    #[test]
    fn seeds_lazily_and_reseeds_after_the_budget() {
        let g = Csprng::new(Counter::default());
        assert_eq!(g.source().calls.get(), 0);
        let mut buf = vec![0u8; RESEED_BYTES as usize];
        g.fill(&mut buf).unwrap();
        assert_eq!(g.source().calls.get(), 1);
        g.fill(&mut buf[..1]).unwrap();
        assert_eq!(g.source().calls.get(), 2);
    }

    #[test]
    fn a_failing_source_is_a_typed_error() {
        let g = Csprng::new(Counter {
            fail_after: Some(0),
            ..Counter::default()
        });
        assert_eq!(g.seed_now(), Err(RandomError::Unavailable));
        assert_eq!(g.fill(&mut [0; 4]), Err(RandomError::Unavailable));
        // At reseed time too: no output without fresh entropy.
        let g = Csprng::new(Counter {
            fail_after: Some(1),
            ..Counter::default()
        });
        let mut buf = vec![0u8; RESEED_BYTES as usize];
        g.fill(&mut buf).unwrap();
        assert_eq!(g.fill(&mut buf[..1]), Err(RandomError::Unavailable));
    }

    #[test]
    fn output_depends_on_the_seed_and_passes_a_chi_squared_test() {
        let a = Csprng::new(Counter::default());
        let b = Csprng::new(Counter {
            calls: Cell::new(7),
            ..Counter::default()
        });
        let mut x = vec![0u8; 1 << 20];
        let mut y = vec![0u8; 1 << 20];
        a.fill(&mut x).unwrap();
        b.fill(&mut y).unwrap();
        assert_ne!(x[..32], y[..32]);
        assert!(chi_squared(&x) < CHI2_LIMIT, "{}", chi_squared(&x));
    }

    /// The chi-squared statistic of byte frequencies against uniform.
    pub fn chi_squared(data: &[u8]) -> f64 {
        let mut counts = [0u64; 256];
        data.iter().for_each(|&b| counts[usize::from(b)] += 1);
        let expected = data.len() as f64 / 256.0;
        counts
            .iter()
            .map(|&c| (c as f64 - expected) * (c as f64 - expected) / expected)
            .sum()
    }

    /// 255 degrees of freedom: p = 0.0001 is at about 347; a real generator
    /// fails this once in ten thousand runs.
    const CHI2_LIMIT: f64 = 347.0;
}
