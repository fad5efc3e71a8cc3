//! The gdb stub's fuzz target (`fuzz/fuzz_targets/gdb.rs`) over its seed
//! corpus (`fuzz/seeds/gdb`, gdb sessions and malformed ones against a
//! guest without a VM, `kiln_hvt::gdb_harness`) and over deterministic
//! mutations of it: none may panic or hang. `KILN_WRITE_SEEDS=1 cargo test
//! -p kiln-hvt --features gdb --test gdb_seeds` rewrites the seeds from
//! the harness's list.
//!
//! `mutations_by_the_million` (ignored: minutes) is the fuzz run for hosts
//! without cargo-fuzz: `KILN_GDB_FUZZ_INPUTS=1000000 cargo test --release
//! -p kiln-hvt --features gdb --test gdb_seeds -- --ignored --nocapture`.

#![cfg(feature = "gdb")]

use std::path::PathBuf;
use std::time::Instant;

use kiln_hvt::gdb_harness::{run, seeds};
use kiln_testsupport::fuzz::{self, Rng};

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/gdb")
}

#[test]
fn seeds_replay_without_a_panic() {
    let seeds = seeds();
    fuzz::write_seeds_if_asked(&seed_dir(), &seeds);
    fuzz::replay_seeds(&seed_dir(), 14, |bytes| {
        assert!(run(bytes).is_some(), "guest memory could not be mapped");
    });
    // The committed seeds are the ones the harness makes.
    fuzz::assert_seeds_current(&seed_dir(), &seeds);
}

/// Bytes gdb's packets are made of, and hostile numbers in hex.
const TOKENS: &[&[u8]] = &[
    b"$",
    b"#",
    b"+",
    b"-",
    b"\x03",
    b"}",
    b"*",
    b",",
    b":",
    b";",
    b"ffffffffffffffff",
    b"8000000000000000",
    b"100000",
    b"3ffffc",
    b"0",
    b"m",
    b"M",
    b"X",
    b"Z0,",
    b"Z1,",
    b"z0,",
    b"g",
    b"G",
    b"p",
    b"P",
    b"c",
    b"s",
    b"vCont;s",
    b"vCont;c",
    b"qXfer:features:read:target.xml:",
    b"D",
    b"k",
];

/// One mutation of `seed`, as a fuzzer would: bytes changed or flipped,
/// gdb's tokens inserted, hostile quadwords in the header or memory
/// bytes, cuts.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.next_u64() % 6 {
        if b.is_empty() {
            break;
        }
        let i = (rng.next_u64() % b.len() as u64) as usize;
        match rng.next_u64() % 6 {
            0 => b[i] = rng.next_u64() as u8,
            1 => b[i] ^= 1 << (rng.next_u64() % 8),
            2 => {
                let v = [
                    0u64,
                    1,
                    u64::MAX,
                    1 << 63,
                    0x10_0000,
                    0x3f_fff8,
                    0x1000 | 0x83,
                ][(rng.next_u64() % 7) as usize];
                let at = i & !7;
                if at + 8 <= b.len() {
                    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            3 => {
                let t = TOKENS[(rng.next_u64() % TOKENS.len() as u64) as usize];
                b.splice(i..i, t.iter().copied());
            }
            4 => {
                // A valid packet of random tokens, checksum right.
                let mut body = Vec::new();
                for _ in 0..1 + rng.next_u64() % 4 {
                    body.extend_from_slice(TOKENS[(rng.next_u64() % TOKENS.len() as u64) as usize]);
                }
                let body = String::from_utf8_lossy(&body).into_owned();
                let p = kiln_hvt::gdb_harness::packet(&body);
                b.splice(i..i, p);
            }
            _ => b.truncate(i.max(1)),
        }
    }
    b
}

/// Runs `count` mutated inputs; returns how many ended in each way. The
/// seeds that read all of guest memory (a second each in a debug build)
/// are mutated only in release runs.
fn mutations(count: u64, seed: u64) -> (u64, u64) {
    let seeds: Vec<_> = seeds()
        .into_iter()
        .filter(|(name, _)| !cfg!(debug_assertions) || !name.starts_with("huge-read"))
        .collect();
    let mut rng = Rng(seed);
    let (mut ok, mut err) = (0, 0);
    for n in 0..count {
        let s = &seeds[(n % seeds.len() as u64) as usize].1;
        let input = mutate(&mut rng, s);
        match run(&input) {
            Some(Ok(_)) => ok += 1,
            Some(Err(_)) => err += 1,
            None => panic!("guest memory could not be mapped"),
        }
    }
    (ok, err)
}

#[test]
fn mutated_seeds_never_panic() {
    let (ok, err) = mutations(5_000, 0x6764_6273_7475_6231);
    // Both ends happen: sessions that end (kill, detach, exit) and ones
    // whose bytes run out.
    assert!(ok > 0 && err > 0, "{ok} ended, {err} ran out");
}

#[test]
#[ignore = "a fuzz run: minutes; KILN_GDB_FUZZ_INPUTS sets the count"]
fn mutations_by_the_million() {
    let count = std::env::var("KILN_GDB_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000u64);
    let start = Instant::now();
    let (ok, err) = mutations(count, 0x6b69_6c6e_6764_6232);
    eprintln!(
        "{count} inputs in {:.1} s: {ok} sessions ended, {err} ran out of bytes",
        start.elapsed().as_secs_f64()
    );
}
