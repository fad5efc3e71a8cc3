//! Key-value stores: read-only ones (files baked into the image, an archive
//! on a block device) and read-write ones (a crash-safe store on a block
//! device).
//!
//! Keys are `/`-separated paths such as `css/site.css`. Leading, trailing
//! and repeated slashes are ignored, so `/css//site.css` names the same
//! entry; `.` and `..` segments are refused with [`KvError::InvalidKey`].
//! The empty key (or `/`) names the root dictionary.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;

/// What a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A value (a file).
    Value,
    /// A dictionary of further keys (a directory).
    Dictionary,
}

/// A content digest of a value (SHA-256 for the stores kiln ships), usable
/// as an HTTP entity tag.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    /// Lower-case hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Why a key-value operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// No entry has this key.
    #[error("key not found")]
    NotFound,
    /// The key has a `.` or `..` segment, or is too long for the store.
    #[error("invalid key")]
    InvalidKey,
    /// A value was expected and the key names a dictionary.
    #[error("key names a dictionary")]
    IsDictionary,
    /// A dictionary was expected and the key names a value.
    #[error("key names a value")]
    IsValue,
    /// The store has no room for the value.
    #[error("store is full")]
    Full,
    /// The requested range lies outside the value.
    #[error("range outside the value")]
    OutOfRange,
    /// Stored data failed its checksum.
    #[error("stored data is corrupt")]
    Corrupt,
    /// The underlying block device failed.
    #[error("block device error")]
    Block(#[from] crate::block::BlockError),
}

/// Splits `key` into its segments, or fails with [`KvError::InvalidKey`].
pub fn segments(key: &str) -> Result<impl Iterator<Item = &str> + Clone, KvError> {
    let parts = key.split('/').filter(|s| !s.is_empty());
    if parts.clone().any(|s| s == "." || s == "..") {
        return Err(KvError::InvalidKey);
    }
    Ok(parts)
}

/// The canonical form of `key`: its segments joined by single slashes, with
/// no leading or trailing slash.
pub fn normalize(key: &str) -> Result<String, KvError> {
    let mut out = String::with_capacity(key.len());
    for (i, part) in segments(key)?.enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(part);
    }
    Ok(out)
}

/// A read-only key-value store.
pub trait KvRo {
    /// What `key` names, or `None` if nothing.
    fn exists(&self, key: &str) -> impl Future<Output = Result<Option<EntryKind>, KvError>>;

    /// The whole value of `key`. Stores baked into the image return borrowed
    /// data without copying.
    fn get(&self, key: &str) -> impl Future<Output = Result<Cow<'static, [u8]>, KvError>>;

    /// Up to `len` bytes of the value of `key` from `offset` (fewer at the
    /// end of the value; [`KvError::OutOfRange`] if `offset` is past it).
    fn get_partial(
        &self,
        key: &str,
        offset: u64,
        len: usize,
    ) -> impl Future<Output = Result<Cow<'static, [u8]>, KvError>>;

    /// The entries of the dictionary `key`, names only (not full keys),
    /// sorted by name.
    fn list(&self, key: &str) -> impl Future<Output = Result<Vec<(String, EntryKind)>, KvError>>;

    /// The length in bytes of the value of `key`.
    fn size(&self, key: &str) -> impl Future<Output = Result<u64, KvError>>;

    /// A digest of the value of `key` that changes whenever the value does.
    fn digest(&self, key: &str) -> impl Future<Output = Result<Digest, KvError>>;
}

/// A read-write key-value store. Each [`set`](Self::set) and
/// [`remove`](Self::remove) is atomic and durable once it returns.
pub trait KvRw: KvRo {
    /// Sets the value of `key`, replacing any previous value.
    fn set(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<(), KvError>>;

    /// Removes `key` and, for a dictionary, everything under it.
    fn remove(&self, key: &str) -> impl Future<Output = Result<(), KvError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn normalize_folds_slashes() {
        assert_eq!(normalize("/css//site.css/").unwrap(), "css/site.css");
        assert_eq!(normalize("").unwrap(), "");
        assert_eq!(normalize("/").unwrap(), "");
        assert_eq!(normalize("a.b/..c").unwrap(), "a.b/..c");
    }

    #[test]
    fn dot_segments_are_refused() {
        assert_eq!(normalize("../etc/passwd"), Err(KvError::InvalidKey));
        assert_eq!(normalize("a/./b"), Err(KvError::InvalidKey));
        assert_eq!(normalize("a/.."), Err(KvError::InvalidKey));
    }

    #[test]
    fn digest_prints_hex() {
        let mut d = [0u8; 32];
        d[0] = 0xab;
        d[31] = 0x01;
        let s = Digest(d).to_string();
        assert_eq!(s.len(), 64);
        assert!(s.starts_with("ab00"));
        assert!(s.ends_with("0001"));
    }
}
