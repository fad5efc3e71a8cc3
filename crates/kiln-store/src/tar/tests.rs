//! Malformed and hostile archives are refused with typed errors.

use alloc::vec::Vec;

use kiln_devices::{EntryKind, KvError, KvRo};

use super::{TarError, TarStore};
use crate::mem::{MemBlock, run};
use crate::ustar::{self, BLOCK};

/// A sealed POSIX header for `name` of type `kind` with `size` bytes.
fn header(name: &[u8], kind: u8, size: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    ustar::put_octal(&mut h, ustar::MODE, 0o644);
    ustar::put_octal(&mut h, ustar::SIZE, size);
    h[ustar::TYPEFLAG] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    ustar::seal(&mut h);
    h
}

/// An archive of `entries` (header, data), ended and padded to 4 KiB.
fn archive(entries: &[([u8; BLOCK], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, data) in entries {
        out.extend_from_slice(h);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out.resize(out.len().next_multiple_of(4096), 0);
    out
}

fn open(image: Vec<u8>) -> Result<TarStore<MemBlock>, TarError> {
    run(TarStore::open("disk", MemBlock::from_image(512, image)))
}

#[test]
fn a_valid_archive_opens() {
    let store = open(archive(&[
        (header(b"./", b'5', 0), b""),
        (header(b"./dir/", b'5', 0), b""),
        (header(b"./dir/f", b'0', 5), b"hello"),
        (header(b"./link", b'2', 0), b""),
    ]))
    .unwrap();
    run(async {
        assert_eq!(store.get("dir/f").await.unwrap().as_ref(), b"hello");
        assert_eq!(store.exists("link").await, Ok(None));
        assert_eq!(
            store.list("").await.unwrap(),
            [("dir".into(), EntryKind::Dictionary)]
        );
    });
}

#[test]
fn bad_checksum_is_refused() {
    let mut image = archive(&[(header(b"f", b'0', 1), b"x")]);
    image[0] = b'g';
    assert!(matches!(
        open(image),
        Err(TarError::Checksum { offset: 0, .. })
    ));
}

#[test]
fn missing_magic_is_refused() {
    let mut h = header(b"f", b'0', 1);
    h[257..265].fill(0);
    ustar::seal(&mut h);
    assert!(matches!(
        open(archive(&[(h, b"x")])),
        Err(TarError::Magic { .. })
    ));
}

#[test]
fn malformed_size_is_refused() {
    let mut h = header(b"f", b'0', 1);
    h[124..136].copy_from_slice(b"00000000009\0");
    ustar::seal(&mut h);
    assert!(matches!(
        open(archive(&[(h, b"x")])),
        Err(TarError::Field { field: "size", .. })
    ));
}

#[test]
fn truncated_archives_are_refused() {
    // Data running past the end of the device.
    let mut image = Vec::new();
    image.extend_from_slice(&header(b"f", b'0', 10_000));
    image.resize(4096, 7);
    assert!(matches!(open(image), Err(TarError::Truncated { .. })));
    // No end-of-archive block: the device ends right after an entry.
    let mut image = Vec::new();
    image.extend_from_slice(&header(b"f", b'0', 3584));
    image.resize(4096, 7);
    assert!(matches!(
        open(image),
        Err(TarError::Truncated { offset: 4096, .. })
    ));
}

#[test]
fn hostile_names_are_refused() {
    for name in [
        &b"../evil"[..],
        b"/etc/passwd",
        b"a/../../b",
        b"ok/..",
        b"\xff\xfe",
    ] {
        match open(archive(&[(header(name, b'0', 1), b"x")])) {
            Err(TarError::Name { .. }) => {}
            other => panic!(
                "{name:?}: expected a name error, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    // Through a pax path record and a GNU long name as well.
    let pax = b"19 path=../../evil\n";
    let image = archive(&[
        (header(b"PaxHeaders/x", b'x', pax.len() as u64), pax),
        (header(b"innocent", b'0', 1), b"x"),
    ]);
    assert!(matches!(open(image), Err(TarError::Name { .. })));
    let image = archive(&[
        (header(b"././@LongLink", b'L', 8), b"/abs/x\0\0"),
        (header(b"innocent", b'0', 1), b"x"),
    ]);
    assert!(matches!(open(image), Err(TarError::Name { .. })));
}

#[test]
fn pax_paths_and_sizes_apply_to_the_next_entry() {
    let long = "p".repeat(300);
    let record = std::format!("310 path={long}\n");
    assert_eq!(record.len(), 310);
    let size = b"11 size=11\n";
    let mut pax = Vec::from(record.as_bytes());
    pax.extend_from_slice(size);
    let image = archive(&[
        (header(b"PaxHeaders/x", b'x', pax.len() as u64), &pax),
        (header(b"short", b'0', 0), b"eleven byte"),
        (header(b"next", b'0', 2), b"ok"),
    ]);
    let store = open(image).unwrap();
    run(async {
        assert_eq!(store.get(&long).await.unwrap().as_ref(), b"eleven byte");
        assert_eq!(store.get("next").await.unwrap().as_ref(), b"ok");
        assert_eq!(store.get("short").await, Err(KvError::NotFound));
    });
}

#[test]
fn malformed_pax_records_are_refused() {
    for pax in [
        &b"99 path=x\n"[..],
        b"5 path=x\n",
        b"x path=x\n",
        b"9 pathx\n\n",
    ] {
        let image = archive(&[
            (header(b"PaxHeaders/x", b'x', pax.len() as u64), pax),
            (header(b"f", b'0', 1), b"x"),
        ]);
        assert!(
            matches!(open(image), Err(TarError::Pax { .. })),
            "{:?}",
            core::str::from_utf8(pax)
        );
    }
}

#[test]
fn oversized_metadata_is_refused() {
    let h = header(b"PaxHeaders/x", b'x', 70_000);
    let mut image = Vec::from(&h[..]);
    image.resize(80 * 1024, b'1');
    assert!(matches!(open(image), Err(TarError::MetaTooLarge { .. })));
}

#[test]
fn file_and_directory_conflicts_are_refused() {
    let image = archive(&[
        (header(b"a", b'0', 1), b"x"),
        (header(b"a/b", b'0', 1), b"y"),
    ]);
    assert!(matches!(open(image), Err(TarError::Conflict { .. })));
}

#[test]
fn unsupported_types_are_refused() {
    let image = archive(&[(header(b"sparse", b'S', 0), b"")]);
    assert!(matches!(open(image), Err(TarError::Type { kind: 'S', .. })));
}

#[test]
fn later_entries_replace_earlier_ones() {
    let image = archive(&[
        (header(b"f", b'0', 3), b"old"),
        (header(b"f", b'0', 3), b"new"),
    ]);
    let store = open(image).unwrap();
    assert_eq!(run(store.get("f")).unwrap().as_ref(), b"new");
}

#[test]
fn random_damage_never_panics() {
    let mut pax = Vec::from(&b"16 path=abcdefg\n"[..]);
    pax.extend_from_slice(b"11 size=11\n");
    let image = archive(&[
        (header(b"dir/", b'5', 0), b""),
        (header(b"dir/a", b'0', 5), b"hello"),
        (header(b"PaxHeaders/x", b'x', pax.len() as u64), &pax),
        (header(b"x", b'0', 0), b"eleven byte"),
        (header(b"././@LongLink", b'L', 6), b"b/c/d\0"),
        (header(b"b", b'0', 600), &[7u8; 600]),
    ]);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let (mut opened, mut refused) = (0, 0);
    for _ in 0..2000 {
        let mut damaged = image.clone();
        for _ in 0..=next(3) {
            // Mostly in the headers, where the parser looks.
            let at = next(3 * 1024) as usize;
            damaged[at] = next(256) as u8;
        }
        match open(damaged) {
            Ok(store) => {
                opened += 1;
                run(async {
                    for key in ["dir/a", "abcdefg", "b/c/d", "x", "dir", "b"] {
                        let _ = store.get(key).await;
                        let _ = store.list(key).await;
                        let _ = store.get_partial(key, 3, 1000).await;
                        let _ = store.digest(key).await;
                    }
                });
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        opened > 0 && refused > 0,
        "{opened} opened, {refused} refused"
    );
}
