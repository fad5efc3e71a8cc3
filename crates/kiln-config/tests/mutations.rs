//! `kiln configure` never panics and locates every mistake: 2,000 seeded
//! mutations of examples/hello/unikernel.toml (byte flips, insertions and
//! deletions, CRLF line endings, a byte order mark, lines of up to 200 kB,
//! duplicated lines) go through the same check and rendering as the CLI.
//! Every one is accepted or refused with exit code 2 and a
//! `unikernel.toml:LINE:COL` location.
//!
//! Regression: lines longer than 65,535 columns made miette's graphical
//! handler panic ("Formatting argument out of range", exit 101), and a file
//! that was not UTF-8 was reported as unreadable with no location.

use std::path::{Path, PathBuf};

use kiln_config::{Choices, ConfigError, Project, Target};

mod common;
use common::copy_hello;

const MUTATIONS: usize = 2000;
const SEED: u64 = 0x6b69_6c6e;

fn mutate(rng: &mut fastrand::Rng, original: &[u8]) -> Vec<u8> {
    const INSERTS: &[u8] = b"[]=\"'.,{}\n\r\\#-_ az0\xff\xc3";
    let mut b = original.to_vec();
    for _ in 0..rng.usize(1..=4) {
        match rng.u8(0..8) {
            0 if !b.is_empty() => {
                let i = rng.usize(..b.len());
                b[i] = rng.u8(..);
            }
            1 => b.insert(rng.usize(..=b.len()), INSERTS[rng.usize(..INSERTS.len())]),
            2 if !b.is_empty() => {
                b.remove(rng.usize(..b.len()));
            }
            3 => {
                b = String::from_utf8_lossy(&b)
                    .replace('\n', "\r\n")
                    .into_bytes();
            }
            4 => b.splice(0..0, [0xef, 0xbb, 0xbf]).for_each(drop),
            5 => {
                let n = [10, 1000, 70_000, 200_000][rng.usize(..4)];
                let i = rng.usize(..=b.len());
                b.splice(i..i, std::iter::repeat_n(b'x', n)).for_each(drop);
            }
            6 => {
                let lines: Vec<&[u8]> = b.split(|&c| c == b'\n').collect();
                let copy = lines[rng.usize(..lines.len())].to_vec();
                let at = rng.usize(..=lines.len());
                let mut out: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
                out.insert(at, copy);
                b = out.join(&b'\n');
            }
            7 if !b.is_empty() => {
                let i = rng.usize(..b.len());
                let j = (i + rng.usize(..20)).min(b.len());
                b.drain(i..j);
            }
            _ => {}
        }
    }
    b
}

/// Writes `text` as the unikernel's `unikernel.toml` and checks it as the
/// CLI does: `Ok(true)` if accepted, `Ok(false)` if refused with exit code 2
/// and a location, `Err` with what went wrong otherwise (a panic, another
/// exit code, no location).
fn accepted_or_located(dir: &Path, text: &[u8]) -> Result<bool, String> {
    std::fs::write(dir.join("unikernel.toml"), text).unwrap();
    let outcome = std::panic::catch_unwind(|| {
        let project = Project::open(dir).map_err(|e| (e.exit_code(), e.to_string()))?;
        project
            .check(Target::Unix, Choices::default())
            .map(drop)
            .map_err(|e| {
                let shown = match &e {
                    ConfigError::Invalid(located) => {
                        kiln_config::diagnostic::render(located, false)
                    }
                    other => other.to_string(),
                };
                (e.exit_code(), shown)
            })
    });
    match outcome {
        Err(_) => Err("panicked".to_string()),
        Ok(Ok(())) => Ok(true),
        Ok(Err((code, shown))) if code != 2 => Err(format!("exit code {code}: {shown}")),
        // A mutated name may be reported where it is used instead.
        Ok(Err((_, shown)))
            if shown.contains("unikernel.toml:") || shown.contains("src/lib.rs:") =>
        {
            Ok(false)
        }
        Ok(Err((_, shown))) => Err(format!("no location:\n{shown}")),
    }
}

#[test]
fn mutated_manifests_are_accepted_or_located() {
    let dir = copy_hello("mutations");
    let original = std::fs::read(dir.join("unikernel.toml")).unwrap();
    let mut rng = fastrand::Rng::with_seed(SEED);
    let (mut accepted, mut refused) = (0, 0);
    for n in 0..MUTATIONS {
        let text = mutate(&mut rng, &original);
        match accepted_or_located(&dir, &text) {
            Ok(true) => accepted += 1,
            Ok(false) => refused += 1,
            Err(why) => {
                let kept =
                    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("mutation-{n}.toml"));
                std::fs::write(&kept, &text).unwrap();
                panic!("mutation {n} (kept as {}): {why}", kept.display());
            }
        }
    }
    // The mutations must exercise both outcomes, or the test proves little.
    assert!(
        accepted > 50 && refused > 1000,
        "accepted {accepted}, refused {refused}"
    );
}

/// The seeds of the `manifest` fuzz target (crates/kiln-config/fuzz), and
/// any crash inputs added there, go through the same check.
#[test]
fn fuzz_seeds_are_accepted_or_located() {
    let dir = copy_hello("fuzz-seeds");
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/manifest");
    let mut n = 0;
    for entry in std::fs::read_dir(&seeds).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read(&path).unwrap();
        if let Err(why) = accepted_or_located(&dir, &text) {
            panic!("{}: {why}", path.display());
        }
        n += 1;
    }
    assert!(n >= 6, "only {n} seeds in {}", seeds.display());
}

/// A Cargo.toml with a syntax error is reported at the error, not as a
/// missing package name.
#[test]
fn cargo_toml_syntax_error_is_located() {
    let dir = copy_hello("cargo-toml-syntax");
    std::fs::write(dir.join("Cargo.toml"), "[package\nname = \"hello\"\n").unwrap();
    let err = Project::open(&dir)
        .unwrap()
        .check(Target::Unix, Choices::default())
        .unwrap_err();
    let ConfigError::Invalid(located) = &err else {
        panic!("expected a located error, got {err}");
    };
    let shown = kiln_config::diagnostic::render(located, false);
    assert!(shown.contains("invalid TOML in Cargo.toml"), "{shown}");
    assert!(shown.contains("Cargo.toml:1:"), "{shown}");
}
