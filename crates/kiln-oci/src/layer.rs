//! The image's one layer: a tar archive with sorted entries, owner 0:0,
//! modification time 0, every parent directory listed, gzip-compressed with
//! no timestamp in its header.

use std::collections::BTreeMap;
use std::io::Write as _;

use sha2::{Digest as _, Sha256};

use crate::OciError;

/// One regular file of the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// The path inside the image, without a leading `/` (`kiln/www.spt`).
    pub path: String,
    /// Its permission bits (`0o755` for programs).
    pub mode: u32,
    /// Its contents.
    pub data: Vec<u8>,
}

/// A layer, compressed and not, with the digests the manifest and config
/// name it by.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The gzipped tar (the blob).
    pub blob: Vec<u8>,
    /// `sha256:` of `blob`.
    pub digest: String,
    /// `sha256:` of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
}

/// `sha256:HEX` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Checks an image path: relative, no empty, `.` or `..` component, short
/// enough for a ustar name.
fn check_path(path: &str) -> Result<(), OciError> {
    let ok = !path.is_empty()
        && path.len() <= 100
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(OciError::BadPath(path.to_string()))
    }
}

/// The entries of a tar of `files`: each parent directory once, then
/// everything sorted by path.
enum Entry<'f> {
    Dir,
    File(&'f File),
}

/// A deterministic tar of `files` (the layer's, or an `oci-archive`'s).
pub fn tar(files: &[File]) -> Result<Vec<u8>, OciError> {
    let mut entries: BTreeMap<String, Entry<'_>> = BTreeMap::new();
    for file in files {
        check_path(&file.path)?;
        let mut parent = String::new();
        let components: Vec<&str> = file.path.split('/').collect();
        for dir in &components[..components.len() - 1] {
            parent.push_str(dir);
            parent.push('/');
            entries.entry(parent.clone()).or_insert(Entry::Dir);
        }
        if entries
            .insert(file.path.clone(), Entry::File(file))
            .is_some()
        {
            return Err(OciError::BadPath(format!("{} (twice)", file.path)));
        }
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in &entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let data: &[u8] = match entry {
            Entry::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                &[]
            }
            Entry::File(file) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(file.mode);
                &file.data
            }
        };
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, path, data)
            .map_err(|source| OciError::Io {
                action: "add to the tar",
                path: path.into(),
                source,
            })?;
    }
    builder.into_inner().map_err(|source| OciError::Io {
        action: "finish the tar",
        path: "layer".into(),
        source,
    })
}

/// Builds the layer of `files`.
pub fn build(files: &[File]) -> Result<Layer, OciError> {
    let tar = tar(files)?;
    let diff_id = sha256(&tar);
    // No file name and mtime 0 in the gzip header: GzBuilder's defaults.
    let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    let io = |source| OciError::Io {
        action: "compress",
        path: "layer".into(),
        source,
    };
    gz.write_all(&tar).map_err(io)?;
    let blob = gz.finish().map_err(io)?;
    let digest = sha256(&blob);
    Ok(Layer {
        blob,
        digest,
        diff_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> File {
        File {
            path: path.into(),
            mode: 0o644,
            data: data.to_vec(),
        }
    }

    #[test]
    fn same_files_in_any_order_give_the_same_layer() {
        let a = build(&[file("kiln/b", b"2"), file("kiln/a", b"1"), file("x", b"")]).unwrap();
        let b = build(&[file("x", b""), file("kiln/a", b"1"), file("kiln/b", b"2")]).unwrap();
        assert_eq!(a.blob, b.blob);
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, a.diff_id);
    }

    #[test]
    fn parents_are_listed_once_before_their_files_with_fixed_owner_and_time() {
        let tar = tar(&[file("a/b/c", b"hi"), file("a/d", b"")]).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entries: Vec<(String, u64, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["a/", "a/b/", "a/b/c", "a/d"]);
        assert!(entries.iter().all(|e| e.1 == 0 && e.2 == 0 && e.3 == 0));
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["", "/abs", "a/../b", "a//b", "./a", &"x".repeat(101)] {
            assert!(
                matches!(tar(&[file(bad, b"")]), Err(OciError::BadPath(_))),
                "{bad:?} was accepted"
            );
        }
        assert!(matches!(
            tar(&[file("a", b""), file("a", b"")]),
            Err(OciError::BadPath(_))
        ));
    }
}
