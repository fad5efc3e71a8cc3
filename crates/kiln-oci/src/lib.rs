//! Reproducible OCI images of kiln unikernels, made without a container engine.
//!
//! An image is described by an [`ImageSpec`]: the files of its one layer and
//! the container configuration (entrypoint, arguments, labels, annotations).
//! [`write`] turns it into an OCI image layout (image-spec v1.1): a directory
//! (`oci-dir`) or a tar of one (`oci-archive`, what `podman load` and
//! `skopeo copy oci-archive:` read).
//!
//! - [`layer`]: the layer, a gzipped tar with fixed owners and times and
//!   sorted entries;
//! - [`layout`]: config, manifest and index as canonical JSON (sorted keys),
//!   and the layout written beside the output and renamed into place;
//! - [`urunc`]: the annotations and the `/urunc.json` file that urunc reads.
//!
//! Same inputs give the same bytes, so the same manifest digest: nothing
//! comes from the clock, the host's users or the order of a directory.
#![deny(unsafe_code)]

pub mod layer;
pub mod layout;
pub mod urunc;

pub use layout::{Format, ImageSpec, Written, write};

/// Why an image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A path inside the image is not usable.
    #[error("bad path in the image: {0:?} (relative, no `..`, at most 100 bytes)")]
    BadPath(String),
    /// The OCI structures could not be built.
    #[error("cannot build the OCI {what}: {message}")]
    Spec {
        /// Which structure.
        what: &'static str,
        /// The builder's message.
        message: String,
    },
}
