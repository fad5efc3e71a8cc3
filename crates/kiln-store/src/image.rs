//! Host side: makes the disk image a [`TarStore`](crate::TarStore) reads, a
//! deterministic pax archive of a directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::string::String;
use std::vec::Vec;

use crate::ustar::{self, BLOCK};

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

/// A header block with every field but name, size and type set to the
/// deterministic defaults: zero owner, group and time.
fn header(kind: u8, mode: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    ustar::put_octal(&mut h, ustar::MODE, mode);
    ustar::put_octal(&mut h, ustar::UID, 0);
    ustar::put_octal(&mut h, ustar::GID, 0);
    ustar::put_octal(&mut h, ustar::MTIME, 0);
    h[ustar::TYPEFLAG] = kind;
    h[ustar::MAGIC.0..ustar::MAGIC.0 + 6].copy_from_slice(b"ustar\0");
    h[ustar::VERSION.0..ustar::VERSION.0 + 2].copy_from_slice(b"00");
    h
}

/// Splits `name` into ustar `prefix` and `name` fields, if it fits.
fn split_name(name: &str) -> Option<(&str, &str)> {
    if name.len() <= ustar::NAME.1 {
        return Some(("", name));
    }
    // The prefix ends at a slash; the name after it must fit in 100 bytes.
    name.match_indices('/')
        .map(|(i, _)| i)
        .filter(|&i| i <= ustar::PREFIX.1 && name.len() - i - 1 <= ustar::NAME.1 && i > 0)
        .find(|&i| name.len() - i - 1 > 0)
        .map(|i| (&name[..i], &name[i + 1..]))
}

/// One pax record `LEN key=value\n`, whose length counts its own digits.
fn pax_record(key: &str, value: &str) -> String {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    std::format!("{len} {key}={value}\n")
}

use std::string::ToString;

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(BLOCK), 0);
}

/// Appends the headers for an entry: a pax header first if the name or
/// the size does not fit the ustar fields.
fn push_header(out: &mut Vec<u8>, name: &str, kind: u8, mode: u64, size: u64) {
    let mut h = header(kind, mode);
    let mut pax = String::new();
    match split_name(name) {
        Some((prefix, rest)) => {
            h[ustar::NAME.0..ustar::NAME.0 + rest.len()].copy_from_slice(rest.as_bytes());
            h[ustar::PREFIX.0..ustar::PREFIX.0 + prefix.len()].copy_from_slice(prefix.as_bytes());
        }
        None => {
            pax.push_str(&pax_record("path", name));
            // A truncated stand-in name for readers that ignore pax.
            let mut cut = ustar::NAME.1.min(name.len());
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            h[ustar::NAME.0..ustar::NAME.0 + cut].copy_from_slice(&name.as_bytes()[..cut]);
        }
    }
    if !ustar::put_octal(&mut h, ustar::SIZE, size) {
        pax.push_str(&pax_record("size", &size.to_string()));
        ustar::put_octal(&mut h, ustar::SIZE, 0);
    }
    if !pax.is_empty() {
        let mut x = header(ustar::kind::PAX, 0o644);
        let xname = b"PaxHeaders/entry";
        x[..xname.len()].copy_from_slice(xname);
        ustar::put_octal(&mut x, ustar::SIZE, pax.len() as u64);
        ustar::seal(&mut x);
        out.extend_from_slice(&x);
        out.extend_from_slice(pax.as_bytes());
        pad(out);
    }
    ustar::seal(&mut h);
    out.extend_from_slice(&h);
}

/// The image of `dir`: a pax archive of every regular file and directory
/// under it (symbolic links followed), names sorted, owners and times
/// zeroed, ended by two zero blocks and padded with zeros to a multiple of
/// [`IMAGE_ALIGN`] bytes. The same tree always gives the same bytes.
pub fn make_image(dir: &Path) -> Result<Vec<u8>, ImageError> {
    let mut items = Vec::new();
    walk(dir, "", &mut Vec::new(), &mut items)?;
    let mut out = Vec::new();
    for item in items {
        match item.source {
            None => push_header(&mut out, &item.name, ustar::kind::DIRECTORY, 0o755, 0),
            Some(path) => {
                let data = fs::read(&path).map_err(|source| ImageError::Read { path, source })?;
                push_header(
                    &mut out,
                    &item.name,
                    ustar::kind::FILE,
                    0o644,
                    data.len() as u64,
                );
                out.extend_from_slice(&data);
                pad(&mut out);
            }
        }
    }
    out.resize(out.len() + 2 * BLOCK, 0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_record("path", "a");
        assert_eq!(r, "9 path=a\n");
        assert_eq!(pax_record("path", "abcdefg"), "16 path=abcdefg\n");
        let long = "x".repeat(95);
        let r = pax_record("path", &long);
        assert_eq!(
            r.len(),
            r.split(' ').next().unwrap().parse::<usize>().unwrap()
        );
    }

    #[test]
    fn long_names_split_at_a_slash() {
        let name = std::format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let (prefix, rest) = split_name(&name).unwrap();
        assert_eq!(prefix.len(), 120);
        assert_eq!(rest.len(), 90);
        assert!(split_name(&"f".repeat(101)).is_none());
    }
}
