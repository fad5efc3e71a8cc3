//! The tar store end to end on unix: images made from a directory (by
//! kiln and by GNU tar) read back byte-identical through `KvRo` over a
//! file-backed block device, with 512- and 4096-byte sectors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use kiln_devices::{EntryKind, KvError, KvRo};
use kiln_store::TarStore;
use kiln_store::image::{IMAGE_ALIGN, make_image};
use kiln_unix::FileBlock;
use sha2::Digest as _;

/// A directory `kiln-store-TAG-` and a random suffix, removed when dropped.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("kiln-store-{tag}-"))
        .tempdir()
        .unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A tree with nested directories, an empty file, an empty directory,
/// files of 4 KiB and more, a name longer than 100 bytes and a path longer
/// than 255.
fn sample_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let long_dir = "d".repeat(60);
    let entries: Vec<(String, Vec<u8>)> = vec![
        ("index.html".into(), b"<h1>hello</h1>\n".to_vec()),
        ("empty".into(), Vec::new()),
        ("css/site.css".into(), b"body { margin: 0 }\n".to_vec()),
        ("a/b/c/deep.txt".into(), b"deep".to_vec()),
        ("blobs/four-k".into(), pattern(4096, 1)),
        ("blobs/odd".into(), pattern(4097, 2)),
        ("blobs/big".into(), pattern(200_000, 3)),
        (format!("long/{}", "n".repeat(120)), b"long name".to_vec()),
        (
            format!(
                "{long_dir}/{long_dir}/{long_dir}/{long_dir}/{}",
                "f".repeat(40)
            ),
            b"long path".to_vec(),
        ),
        ("unicode/été.txt".into(), "ça marche".as_bytes().to_vec()),
    ];
    for (path, data) in entries {
        let full = root.join(&path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, &data).unwrap();
        files.insert(path, data);
    }
    std::fs::create_dir_all(root.join("emptydir")).unwrap();
    files
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    kiln_rt::block_on(kiln_unix::platform(), f)
}

fn open(image: &Path, sector_size: u32) -> TarStore<FileBlock> {
    let block = FileBlock::open(
        kiln_unix::platform(),
        "disk",
        image.to_str().unwrap(),
        sector_size,
    )
    .unwrap();
    run(TarStore::open("disk", block)).unwrap()
}

/// Checks every file of `files` reads back through `store`, whole, in
/// pieces and by digest, and that the dictionaries match.
fn check(store: &TarStore<FileBlock>, files: &BTreeMap<String, Vec<u8>>) {
    run(async {
        assert_eq!(store.len(), files.len());
        for (path, data) in files {
            let got = store.get(path).await.unwrap();
            assert!(got.as_ref() == data.as_slice(), "{path} differs");
            assert_eq!(store.size(path).await, Ok(data.len() as u64));
            assert_eq!(store.exists(path).await, Ok(Some(EntryKind::Value)));
            let want: [u8; 32] = sha2::Sha256::digest(data).into();
            assert_eq!(store.digest(path).await.unwrap().0, want, "{path} digest");
            // Pieces that start and end inside sectors and cross them.
            for (offset, len) in [(0, 1), (1, 510), (511, 2), (4000, 200), (4095, 4098)] {
                if offset > data.len() {
                    assert_eq!(
                        store.get_partial(path, offset as u64, len).await,
                        Err(KvError::OutOfRange)
                    );
                    continue;
                }
                let end = (offset + len).min(data.len());
                let got = store.get_partial(path, offset as u64, len).await.unwrap();
                assert!(
                    got.as_ref() == &data[offset..end],
                    "{path} at {offset}+{len}"
                );
            }
        }
        assert_eq!(
            store
                .list("")
                .await
                .unwrap()
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            [
                "a",
                "blobs",
                "css",
                &"d".repeat(60),
                "empty",
                "emptydir",
                "index.html",
                "long",
                "unicode"
            ]
        );
        assert_eq!(
            store.list("blobs").await.unwrap(),
            vec![
                ("big".to_string(), EntryKind::Value),
                ("four-k".to_string(), EntryKind::Value),
                ("odd".to_string(), EntryKind::Value),
            ]
        );
        assert_eq!(store.list("emptydir").await, Ok(vec![]));
        assert_eq!(store.exists("a/b").await, Ok(Some(EntryKind::Dictionary)));
        assert_eq!(store.get("a/b").await, Err(KvError::IsDictionary));
        assert_eq!(store.get("missing").await, Err(KvError::NotFound));
        assert_eq!(store.list("index.html").await, Err(KvError::IsValue));
        assert_eq!(store.get("../index.html").await, Err(KvError::InvalidKey));
    });
}

#[test]
fn kiln_images_read_back_with_both_sector_sizes() {
    let dir = temp_dir("tree");
    let files = sample_tree(dir.path());
    let image = make_image(dir.path()).unwrap();
    assert_eq!(image.len() % IMAGE_ALIGN, 0);
    // Deterministic: the same tree gives the same bytes, whatever the
    // files' times.
    std::fs::write(dir.path().join("index.html"), b"<h1>hello</h1>\n").unwrap();
    assert!(make_image(dir.path()).unwrap() == image);
    let out = temp_dir("image");
    let path = out.path().join("disk.img");
    std::fs::write(&path, &image).unwrap();
    for sector_size in [512, 4096] {
        check(&open(&path, sector_size), &files);
    }
}

/// Whether `tar` runs here; if not, skips `test` loudly (and fails under
/// `CI=true`).
fn have_tar(test: &str) -> bool {
    let found = Command::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        kiln_testsupport::skip::skip(test, "no `tar` on PATH; hint: apt-get install tar");
    }
    found
}

#[test]
fn gnu_tar_reads_kiln_images() {
    if !have_tar("gnu_tar_reads_kiln_images") {
        return;
    }
    let dir = temp_dir("tree-x");
    let files = sample_tree(dir.path());
    let out = temp_dir("extract");
    let path = out.path().join("disk.img");
    std::fs::write(&path, make_image(dir.path()).unwrap()).unwrap();
    let into = out.path().join("x");
    std::fs::create_dir(&into).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&path)
        .arg("-C")
        .arg(&into)
        .status()
        .unwrap();
    assert!(status.success());
    for (p, data) in &files {
        assert!(&std::fs::read(into.join(p)).unwrap() == data, "{p}");
    }
    assert!(into.join("emptydir").is_dir());
}

#[test]
fn stores_read_gnu_tar_archives() {
    if !have_tar("stores_read_gnu_tar_archives") {
        return;
    }
    let dir = temp_dir("tree-g");
    let files = sample_tree(dir.path());
    let out = temp_dir("gnu");
    for format in ["gnu", "pax", "ustar"] {
        let path = out.path().join(format!("{format}.img"));
        let output = Command::new("tar")
            .arg(format!("--format={format}"))
            .arg("-cf")
            .arg(&path)
            .arg("-C")
            .arg(dir.path())
            .arg(".")
            .output()
            .unwrap();
        if format == "ustar" {
            // ustar cannot hold the 120-byte file name nor the 300-byte
            // path: GNU tar says so and leaves them out.
            let mut image = std::fs::read(&path).unwrap();
            image.resize(image.len().next_multiple_of(4096), 0);
            std::fs::write(&path, image).unwrap();
            let store = open(&path, 512);
            let mut found = 0;
            run(async {
                for (p, data) in &files {
                    if store.exists(p).await == Ok(Some(EntryKind::Value)) {
                        assert!(store.get(p).await.unwrap().as_ref() == data.as_slice());
                        found += 1;
                    }
                }
            });
            assert_eq!((found, store.len()), (files.len() - 2, files.len() - 2));
            continue;
        }
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut image = std::fs::read(&path).unwrap();
        image.resize(image.len().next_multiple_of(4096), 0);
        std::fs::write(&path, image).unwrap();
        check(&open(&path, 4096), &files);
    }
}

#[test]
fn symbolic_link_loops_are_refused() {
    let dir = temp_dir("loop");
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(dir.path().join("a/b/f"), b"x").unwrap();
    std::os::unix::fs::symlink("../..", dir.path().join("a/b/up")).unwrap();
    match make_image(dir.path()) {
        Err(kiln_store::image::ImageError::TooDeep { path }) => {
            assert!(path.ends_with("a/b/up"), "{}", path.display());
        }
        other => panic!("expected a loop error, got {:?}", other.map(|i| i.len())),
    }
    // A link to a sibling is followed: its files appear under both names.
    std::fs::remove_file(dir.path().join("a/b/up")).unwrap();
    std::os::unix::fs::symlink("a/b", dir.path().join("c")).unwrap();
    let out = temp_dir("loop-image");
    let path = out.path().join("disk.img");
    kiln_store::image::write_image(dir.path(), &path).unwrap();
    let store = open(&path, 512);
    assert_eq!(run(store.get("c/f")).unwrap().as_ref(), b"x");
    assert_eq!(run(store.get("a/b/f")).unwrap().as_ref(), b"x");
}
