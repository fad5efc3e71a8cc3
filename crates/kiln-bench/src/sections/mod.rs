//! The benchmark sections and what they share: the prepared images
//! and baselines, and how many runs a figure takes.

pub mod boot;
pub mod build;
pub mod bulk;
pub mod hvt;
pub mod memory;
pub mod network;
pub mod observe;
pub mod size;
pub mod soak;
pub mod storage;
pub mod supervisor;
pub mod tls;
pub mod virtio;

use std::path::PathBuf;

use crate::report::{Row, Status};
use crate::setup::{Availability, Built, Env, Variant};

/// How much each section measures.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Whether this is a `--quick` run.
    pub quick: bool,
    /// Boot runs per case.
    pub boot_runs: usize,
    /// Ping flood packets, and the bound on the ping in seconds.
    pub ping_count: u32,
    /// See `ping_count`.
    pub ping_secs: u32,
    /// wrk duration in seconds.
    pub wrk_secs: u32,
}

impl Counts {
    /// The counts of a full or a `--quick` run.
    pub fn new(quick: bool) -> Self {
        if quick {
            Counts {
                quick,
                boot_runs: 5,
                ping_count: 2000,
                ping_secs: 5,
                wrk_secs: 5,
            }
        } else {
            Counts {
                quick,
                boot_runs: 30,
                ping_count: 100_000,
                ping_secs: 30,
                wrk_secs: 10,
            }
        }
    }
}

/// Everything the sections run, built once.
pub struct Prepared {
    /// Paths.
    pub env: Env,
    /// How much to measure.
    pub counts: Counts,
    /// The static C baseline, or why there is none.
    pub static_hello: Result<PathBuf, String>,
    /// The bare KVM baseline, or why there is none.
    pub bare_kvm: Result<PathBuf, String>,
    /// How to run kiln-hvt's harness (the hvt section), or why it cannot
    /// be built.
    pub hvt_harness: Result<hvt::Harness, String>,
    /// hello per target.
    pub hello: Vec<(Variant, Availability)>,
    /// www per target.
    pub www: Vec<(Variant, Availability)>,
    /// www with a 1 MiB file added to its htdocs, on every target of
    /// [`WWW_VARIANTS`] (for the soak section, and the network section's
    /// full runs; virtio's copy is built by the network section).
    pub www_big: Vec<(Variant, Availability)>,
    /// blockbench per target (the storage section).
    pub blockbench: Vec<(Variant, Availability)>,
    /// notes per target (the storage section).
    pub notes: Vec<(Variant, Availability)>,
    /// bulk per target (the bulk section).
    pub bulk: Vec<(Variant, Availability)>,
    /// wwws per target (the tls section).
    pub wwws: Vec<(Variant, Availability)>,
}

impl Prepared {
    /// The bare KVM baseline's name, which says when it is a dev build.
    pub fn bare_kvm_name(&self) -> String {
        format!("bare KVM VM (2 instructions{})", self.env.profile.note())
    }
}

/// The file added to www's htdocs for the bulk case, and its size.
pub const BIG_FILE: &str = "big.bin";
/// See [`BIG_FILE`].
pub const BIG_LEN: usize = 1 << 20;

/// [`BIG_LEN`] bytes of deterministic noise (xorshift64).
pub fn big_file() -> Vec<u8> {
    let mut x: u64 = 0x6b69_6c6e_6265_6e63;
    (0..BIG_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// The targets hello is built for.
pub const HELLO_VARIANTS: [Variant; 3] = [Variant::Unix, Variant::Hvt, Variant::Spt];
/// The targets www is built for.
pub const WWW_VARIANTS: [Variant; 4] = [
    Variant::Unix,
    Variant::UnixDirect,
    Variant::Hvt,
    Variant::Spt,
];

/// The built image of `a`, or the row saying why there is none.
pub fn ready<'a>(
    a: &'a Availability,
    section: &'static str,
    name: &str,
    variant: Variant,
    unit: &'static str,
) -> Result<&'a Built, Box<Row>> {
    let missing = |status| Box::new(Row::missing(section, name, variant.name(), unit, status));
    match a {
        Availability::Ready(b) => Ok(b),
        Availability::Broken(why) => Err(missing(Status::Failed(format!("build: {why}")))),
    }
}

/// Like [`ready`], and the image must be able to run here.
pub fn runnable<'a>(
    a: &'a Availability,
    section: &'static str,
    name: &str,
    variant: Variant,
    unit: &'static str,
) -> Result<&'a Built, Box<Row>> {
    let b = ready(a, section, name, variant, unit)?;
    match &b.unrunnable {
        Some(why) => Err(Box::new(Row::missing(
            section,
            name,
            variant.name(),
            unit,
            Status::NotAvailable(why.clone()),
        ))),
        None => Ok(b),
    }
}

/// Progress on stderr, with the seconds since the first message.
pub fn progress(msg: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    eprintln!(
        "kiln-bench: [{:6.1} s] {msg}",
        start.elapsed().as_secs_f64()
    );
}
