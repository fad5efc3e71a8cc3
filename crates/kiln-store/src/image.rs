//! Host side: makes the disk image a [`TarStore`](crate::TarStore) reads, a
//! deterministic tar archive of a directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::string::String;
use std::vec::Vec;

/// Images are padded to a multiple of this (the largest sector size kiln
/// attaches), so that they attach with 512- or 4096-byte sectors.
pub const IMAGE_ALIGN: usize = 4096;

/// How deep directories may nest.
pub const MAX_DEPTH: usize = 64;

/// Why an image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file or directory could not be read.
    #[error("cannot read `{path}`")]
    Read {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The image could not be written.
    #[error("cannot write the image `{path}`")]
    Write {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A name is not UTF-8: keys are strings.
    #[error("`{path}` has a name that is not UTF-8\nhint: rename it; store keys are UTF-8 paths")]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// An entry could not be added to the archive.
    #[error("cannot add `{name}` to the image")]
    Archive {
        /// The name in the archive.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Directories nest too deeply, or a symbolic link leads back to a
    /// directory that contains it.
    #[error(
        "`{path}` is nested more than 64 directories deep or leads back to a directory containing it\nhint: look for a symbolic link that points to one of its parent directories"
    )]
    TooDeep {
        /// The path.
        path: PathBuf,
    },
}

/// One entry of the archive, in order.
struct Item {
    /// The path inside the archive (`/`-separated; directories end in `/`).
    name: String,
    /// The file on the host, `None` for directories.
    source: Option<PathBuf>,
}

/// Collects the entries under `dir` (sorted by name, depth first).
/// `ancestors` holds the canonical paths of the directories being walked,
/// so that a symbolic link to one of them is refused instead of followed
/// forever.
fn walk(
    dir: &Path,
    prefix: &str,
    ancestors: &mut Vec<PathBuf>,
    out: &mut Vec<Item>,
) -> Result<(), ImageError> {
    let read = |source| ImageError::Read {
        path: dir.into(),
        source,
    };
    let canonical = fs::canonicalize(dir).map_err(read)?;
    if ancestors.len() >= MAX_DEPTH || ancestors.contains(&canonical) {
        return Err(ImageError::TooDeep { path: dir.into() });
    }
    ancestors.push(canonical);
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| ImageError::NotUtf8 { path: path.clone() })?;
        entries.push((name, path));
    }
    entries.sort();
    for (name, path) in entries {
        // Follows symbolic links, like the baked store does.
        let meta = fs::metadata(&path).map_err(|source| ImageError::Read {
            path: path.clone(),
            source,
        })?;
        let archived = std::format!("{prefix}{name}");
        if meta.is_dir() {
            out.push(Item {
                name: std::format!("{archived}/"),
                source: None,
            });
            walk(&path, &std::format!("{archived}/"), ancestors, out)?;
        } else if meta.is_file() {
            out.push(Item {
                name: archived,
                source: Some(path),
            });
        }
        // Sockets, FIFOs and devices have no content to serve.
    }
    ancestors.pop();
    Ok(())
}

/// A header with the deterministic defaults: zero owner, group and time.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// The image of `dir`: a tar archive (written by the `tar` crate: ustar
/// headers, GNU long-name entries for names that do not fit) of every
/// regular file and directory under it (symbolic links followed), names
/// sorted, owners and times zeroed, ended by two zero blocks and padded
/// with zeros to a multiple of [`IMAGE_ALIGN`] bytes. The same tree always
/// gives the same bytes.
pub fn make_image(dir: &Path) -> Result<Vec<u8>, ImageError> {
    let mut items = Vec::new();
    walk(dir, "", &mut Vec::new(), &mut items)?;
    let mut archive = tar::Builder::new(Vec::new());
    for item in items {
        let added = match &item.source {
            None => archive.append_data(
                &mut header(tar::EntryType::Directory, 0o755, 0),
                &item.name,
                io::empty(),
            ),
            Some(path) => {
                let data = fs::read(path).map_err(|source| ImageError::Read {
                    path: path.clone(),
                    source,
                })?;
                let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
                archive.append_data(&mut h, &item.name, &data[..])
            }
        };
        added.map_err(|source| ImageError::Archive {
            name: item.name.clone(),
            source,
        })?;
    }
    let mut out = archive.into_inner().map_err(|source| ImageError::Archive {
        name: String::new(),
        source,
    })?;
    out.resize(out.len().next_multiple_of(IMAGE_ALIGN), 0);
    Ok(out)
}

/// Writes the image of `dir` to the file `image`.
pub fn write_image(dir: &Path, image: &Path) -> Result<(), ImageError> {
    let bytes = make_image(dir)?;
    fs::write(image, bytes).map_err(|source| ImageError::Write {
        path: image.into(),
        source,
    })
}
