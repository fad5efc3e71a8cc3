//! The loader over the fuzz seeds (each must parse, or fail, as its name
//! says) and over many deterministic mutations of them (none may panic).
//! `KILN_WRITE_SEEDS=1 cargo test -p kiln-hvt --test loader_seeds` rewrites
//! the seeds from the test guests below.

mod support;

use std::path::PathBuf;

use kiln_abi::MftEntry;
use kiln_hvt::elf::Image;
use kiln_testsupport::fuzz::{self, Rng};
use support::{Guest, PF_R, load_phdr};

const MEM: u64 = 512 << 20;

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/loader")
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut hello = Guest::new();
    hello.puts(b"hello\n").halt(0);
    let mut devices = Guest::with_devices([MftEntry::net("service"), MftEntry::block("disk")]);
    devices.puts(b"hi").halt(3);
    let mut machine = hello.clone();
    machine.machine = 40;
    let mut no_notes = hello.clone();
    no_notes.with_notes = false;
    let mut overlap = hello.clone();
    overlap
        .extra_phdrs
        .push(load_phdr(PF_R, 0x1000, 0x10_0800, 0x10, 0x1000));
    let mut count = hello.clone();
    count.mft_note[28..32].copy_from_slice(&65u32.to_le_bytes());
    vec![
        ("ok-hello.elf", hello.build()),
        ("ok-devices.elf", devices.build()),
        ("bad-machine.elf", machine.build()),
        ("bad-no-notes.elf", no_notes.build()),
        ("bad-overlap.elf", overlap.build()),
        ("bad-mft-count.elf", count.build()),
    ]
}

#[test]
fn seeds_parse_as_named() {
    let seeds = seeds();
    fuzz::write_seeds_if_asked(&seed_dir(), &seeds);
    let mut n = 0;
    for entry in std::fs::read_dir(seed_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let result = Image::parse(&bytes, MEM);
        if name.starts_with("ok-") {
            assert!(result.is_ok(), "{name}: {result:?}");
        } else {
            assert!(result.is_err(), "{name} parsed");
        }
        n += 1;
    }
    assert!(n >= 6, "only {n} seeds in {}", seed_dir().display());
    // The committed seeds are the ones the builders make.
    fuzz::assert_seeds_current(&seed_dir(), &seeds);
}

#[test]
fn mutated_seeds_never_panic() {
    let mut rng = Rng(0x6b69_6c6e_6876_7431);
    let mut accepted = 0;
    for (_, seed) in seeds() {
        for _ in 0..10_000 {
            let mut b = seed.clone();
            for _ in 0..1 + rng.next_u64() % 4 {
                let i = (rng.next_u64() % b.len() as u64) as usize;
                match rng.next_u64() % 4 {
                    0 => b[i] = rng.next_u64() as u8,
                    1 => b[i] ^= 1 << (rng.next_u64() % 8),
                    2 => {
                        // An interesting 64-bit value at an 8-aligned spot.
                        let v = [0u64, 1, u64::MAX, 1 << 63, 0x10_0000, 0x2000_0000]
                            [(rng.next_u64() % 6) as usize];
                        let at = i & !7;
                        if at + 8 <= b.len() {
                            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
                        }
                    }
                    _ => b.truncate(i),
                }
                if b.is_empty() {
                    break;
                }
            }
            for mem in [2 << 20, MEM] {
                if let Ok(image) = Image::parse(&b, mem) {
                    assert!(image.kernel_end <= mem);
                    accepted += 1;
                }
            }
        }
    }
    // Some mutations (in padding, in code bytes) keep the image valid.
    assert!(accepted > 0);
}
