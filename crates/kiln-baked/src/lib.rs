//! Read-only key-value stores for kiln unikernels.
//!
//! [`Baked`] serves files that the code generator compiled into the image
//! with `include_bytes!`: a `&'static [Entry]` table of paths, contents and
//! SHA-256 digests. It implements [`kiln_devices::KvRo`] without copying:
//! `get` returns `Cow::Borrowed` slices of the image. Dictionaries
//! (directories) are derived from the paths.
//!
//! Modules: [`baked`] (the table and the store); [`digest_of`] computes the
//! digest the table carries, for the code generator and for
//! [`Baked::verify`].
//!
//! # What generated code emits
//!
//! For a `kv_ro` device `htdocs` with `source = "htdocs"`, one entry per
//! regular file under the directory (recursively, sorted by path; symlinks
//! followed, other file types skipped), `path` relative to the directory
//! with `/` separators and in the normal form of
//! [`kiln_devices::kv::normalize`] (no leading slash, no `.`/`..`):
//!
//! ```ignore
//! static HTDOCS: &[kiln_baked::Entry] = &[
//!     kiln_baked::Entry {
//!         path: "css/site.css",
//!         data: include_bytes!("/abs/path/to/htdocs/css/site.css"),
//!         digest: [0x3a, 0x7b, /* ... 32 bytes: SHA-256 of the file, kiln_baked::digest_of */],
//!     },
//!     // ...
//! ];
//! let htdocs = kiln_baked::Baked::new(HTDOCS)?; // BakedError: one line naming the path
//! ```
#![no_std]
#![deny(unsafe_code)]
#![allow(async_fn_in_trait)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod baked;

pub use baked::{Baked, BakedError, Entry};

/// The SHA-256 digest of `data`, as [`Entry::digest`] carries it.
pub fn digest_of(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256() {
        // FIPS 180-4 test vector "abc".
        let d = kiln_devices::Digest(digest_of(b"abc"));
        assert_eq!(
            alloc::string::ToString::to_string(&d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
