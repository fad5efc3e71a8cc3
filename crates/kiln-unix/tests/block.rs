//! The file-backed block device on temporary files: round trips at 512- and
//! 4096-byte sectors, typed errors for bad requests and bad files, and
//! read-only files.

use std::fs;

use kiln_devices::{Block, BlockError};
use kiln_rt::block_on;
use kiln_testsupport::process::rerun_as_nobody;
use kiln_testsupport::skip::is_root;
use kiln_unix::{AttachError, FileBlock, platform};

/// A temporary file of `len` zero bytes, removed on drop.
struct TempFile(tempfile::TempPath);

impl TempFile {
    fn new(len: u64) -> TempFile {
        let file = tempfile::Builder::new()
            .prefix("kiln-unix-block-")
            .tempfile()
            .unwrap();
        file.as_file().set_len(len).unwrap();
        TempFile(file.into_temp_path())
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn round_trip(sector_size: u32) {
    let size = u64::from(sector_size);
    let file = TempFile::new(64 * size);
    let ss = sector_size as usize;
    block_on(platform(), async {
        let block = FileBlock::open(platform(), "disk", file.path(), sector_size).unwrap();
        let info = block.info();
        assert_eq!(
            (info.sector_size, info.sectors, info.read_only),
            (sector_size, 64, false)
        );

        let data = pattern(0x5a, 3 * ss);
        block.write(5, &data).await.unwrap();
        block.write(63, &pattern(0x11, ss)).await.unwrap();
        block.flush().await.unwrap();

        let mut back = vec![0u8; 3 * ss];
        block.read(5, &mut back).await.unwrap();
        assert_eq!(back, data);
        let mut zero = vec![1u8; ss];
        block.read(4, &mut zero).await.unwrap();
        assert!(zero.iter().all(|&b| b == 0), "sector 4 was never written");
    });
    // The data reached the file at the right offset.
    let bytes = fs::read(&file.0).unwrap();
    assert_eq!(bytes.len(), 64 * ss);
    assert_eq!(&bytes[5 * ss..8 * ss], &pattern(0x5a, 3 * ss)[..]);
    assert_eq!(&bytes[63 * ss..], &pattern(0x11, ss)[..]);
    // And persists across a reopen.
    block_on(platform(), async {
        let block = FileBlock::open(platform(), "disk", file.path(), sector_size).unwrap();
        let mut back = vec![0u8; 3 * ss];
        block.read(5, &mut back).await.unwrap();
        assert_eq!(back, pattern(0x5a, 3 * ss));
    });
}

#[test]
fn round_trip_with_512_byte_sectors() {
    round_trip(512);
}

#[test]
fn round_trip_with_4096_byte_sectors() {
    round_trip(4096);
}

#[test]
fn bad_requests_are_typed_errors() {
    let file = TempFile::new(8 * 4096);
    block_on(platform(), async {
        let block = FileBlock::open(platform(), "disk", file.path(), 4096).unwrap();
        let mut buf = vec![0u8; 2 * 4096];
        assert_eq!(
            block.read(7, &mut buf).await,
            Err(BlockError::OutOfRange {
                sector: 7,
                count: 2,
                sectors: 8
            })
        );
        assert!(matches!(
            block.write(u64::MAX, &buf[..4096]).await,
            Err(BlockError::OutOfRange { .. })
        ));
        assert_eq!(
            block.read(0, &mut buf[..512]).await,
            Err(BlockError::Misaligned { len: 512 })
        );
        assert_eq!(
            block.write(0, &buf[..4097]).await,
            Err(BlockError::Misaligned { len: 4097 })
        );
        assert_eq!(
            block.write(0, &[]).await,
            Err(BlockError::Misaligned { len: 0 })
        );
    });
    // Nothing was written.
    assert!(fs::read(&file.0).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn bad_sector_sizes_are_refused() {
    let file = TempFile::new(8192);
    for bad in [0, 256, 511, 1000, 3000] {
        let err = FileBlock::open(platform(), "disk", file.path(), bad).unwrap_err();
        assert!(matches!(err, AttachError::SectorSize { sector_size, .. } if sector_size == bad));
        let message = err.to_string();
        assert!(
            message.contains(&format!("sector size {bad} ")),
            "{message}"
        );
        assert!(
            message.contains("hint: pass --block-sector-size:disk="),
            "{message}"
        );
    }
}

#[test]
fn a_file_of_partial_sectors_is_refused() {
    let file = TempFile::new(4096 + 100);
    let err = FileBlock::open(platform(), "disk", file.path(), 512).unwrap_err();
    assert!(
        matches!(
            err,
            AttachError::FileSize {
                size: 4196,
                sector_size: 512,
                rounded: 4608,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot attach block device `disk` to file `{}`: its size of 4196 bytes",
            file.path()
        )),
        "{message}"
    );
    assert!(message.contains("truncate -s 4608"), "{message}");
    // 4096 is a multiple of 512 but not 4096 + 100 of anything.
    assert!(FileBlock::open(platform(), "disk", file.path(), 4096).is_err());
}

#[test]
fn missing_files_and_directories_are_refused() {
    let missing = std::env::temp_dir().join("kiln-unix-block-does-not-exist");
    let missing = missing.to_str().unwrap();
    let err = FileBlock::open(platform(), "disk", missing, 512).unwrap_err();
    match &err {
        AttachError::File { error, .. } => {
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "cannot attach block device `disk` to file `{missing}`: No such file or directory (os error 2)"
        )
    );
    let dir = std::env::temp_dir();
    let err = FileBlock::open(platform(), "disk", dir.to_str().unwrap(), 512).unwrap_err();
    assert!(matches!(err, AttachError::NotAFile { .. }), "{err:?}");
}

/// Checks that a file without write permission opens read-only.
fn check_read_only(path: &str) {
    block_on(platform(), async {
        let block = FileBlock::open(platform(), "disk", path, 512).unwrap();
        assert!(block.info().read_only);
        let mut buf = vec![0u8; 512];
        block.read(1, &mut buf).await.unwrap();
        assert_eq!(buf, pattern(3, 512));
        assert_eq!(block.write(0, &buf).await, Err(BlockError::ReadOnly));
        assert_eq!(block.flush().await, Ok(()));
    });
}

#[test]
fn a_file_without_write_permission_opens_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let file = TempFile::new(4 * 512);
    let mut bytes = vec![0u8; 4 * 512];
    bytes[512..1024].copy_from_slice(&pattern(3, 512));
    fs::write(&file.0, &bytes).unwrap();
    fs::set_permissions(&file.0, fs::Permissions::from_mode(0o444)).unwrap();
    if !is_root() {
        check_read_only(file.path());
        return;
    }
    // Root may write any file: check as `nobody` instead.
    let status = rerun_as_nobody(
        "read_only_as_another_user",
        &[("KILN_BLOCK_READ_ONLY_FILE", file.path().as_ref())],
    );
    assert!(
        status.success(),
        "the read-only check as nobody failed: {status}"
    );
}

#[test]
#[ignore = "run by a_file_without_write_permission_opens_read_only as another user"]
fn read_only_as_another_user() {
    let path = std::env::var("KILN_BLOCK_READ_ONLY_FILE").expect(
        "KILN_BLOCK_READ_ONLY_FILE is set by a_file_without_write_permission_opens_read_only",
    );
    check_read_only(&path);
}
