//! Reading and checking the image KERNEL against the guest memory the
//! command line gives: `--mem` in range, the file readable, the ELF valid for
//! the target, and room for the guest above the image.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::elf::{ElfError, Image};
use crate::target::Target;

/// Guest memory must leave this much above the image: one page, for the
/// stack the entry point starts on. Solo5's tenders require only that the
/// image fits, so a small guest runs in `--mem=2` as with them; what a
/// guest needs beyond that (kiln-solo5 wants a heap and a 1 MiB stack) it
/// checks itself at boot.
pub const MIN_FREE_MEM: u64 = 0x1000;

/// Why tender `T` cannot run the image in the memory given.
#[derive(Debug, Error)]
pub enum ImageError<T: Target> {
    /// `--mem` out of range.
    #[error("--mem={mem_mb}: guest memory must be 2 to {max} MiB", max = T::MAX_MEM_MB)]
    MemRange {
        /// The value given.
        mem_mb: u64,
    },
    /// The image cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The image path.
        path: PathBuf,
        /// What the host said.
        #[source]
        source: std::io::Error,
    },
    /// The image is invalid.
    #[error("{path}: invalid {} image", T::NAME)]
    Image {
        /// The image path.
        path: PathBuf,
        /// The problem.
        #[source]
        source: ElfError<T>,
    },
    /// Not enough memory for the image.
    #[error(
        "--mem={mem_mb} is too small for {path}: the image ends at {kernel_end:#x} and the guest needs a page above it for its stack; hint: --mem={needed_mb}"
    )]
    MemTooSmall {
        /// The image path.
        path: PathBuf,
        /// Memory given.
        mem_mb: u64,
        /// End of the image.
        kernel_end: u64,
        /// Memory needed.
        needed_mb: u64,
    },
    /// Never constructed: carries the target type.
    #[doc(hidden)]
    #[error("unreachable")]
    _Target(std::convert::Infallible, PhantomData<T>),
}

/// Checks `--mem=MB` against the target's range.
pub fn check_mem<T: Target>(mem_mb: u64) -> Result<(), ImageError<T>> {
    if (2..=T::MAX_MEM_MB).contains(&mem_mb) {
        Ok(())
    } else {
        Err(ImageError::MemRange { mem_mb })
    }
}

/// Reads the image at `path`.
pub fn read<T: Target>(path: &Path) -> Result<Vec<u8>, ImageError<T>> {
    std::fs::read(path).map_err(|source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Validates `data`, read from `path`, as an image of target `T` for a guest
/// of `mem_size` bytes (`--mem={mem_mb}`, maybe rounded down), with
/// [`MIN_FREE_MEM`] left above it.
pub fn parse<'a, T: Target>(
    path: &Path,
    data: &'a [u8],
    mem_mb: u64,
    mem_size: u64,
) -> Result<Image<'a, T>, ImageError<T>> {
    let image = Image::parse(data, mem_size).map_err(|source| ImageError::Image {
        path: path.to_path_buf(),
        source,
    })?;
    let needed = image.kernel_end.saturating_add(MIN_FREE_MEM);
    if needed > mem_size {
        let granule = T::MEM_GRANULE;
        return Err(ImageError::MemTooSmall {
            path: path.to_path_buf(),
            mem_mb,
            kernel_end: image.kernel_end,
            needed_mb: needed.div_ceil(granule) * (granule >> 20),
        });
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{Hvt, Spt};

    #[test]
    fn memory_is_checked_per_target() {
        assert!(check_mem::<Hvt>(1024).is_ok());
        assert!(check_mem::<Hvt>(4096).is_ok());
        assert!(check_mem::<Hvt>(8192).is_ok());
        let err = check_mem::<Hvt>(1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--mem=1048576: guest memory must be 2 to 65536 MiB"
        );
        assert!(check_mem::<Spt>(4096).is_ok());
        assert!(check_mem::<Spt>(1).is_err());
    }

    #[test]
    fn errors_name_the_target_and_path() {
        let err = read::<Spt>(Path::new("/nonexistent/k.spt")).unwrap_err();
        assert_eq!(err.to_string(), "cannot read /nonexistent/k.spt");
        let err = parse::<Hvt>(Path::new("k.hvt"), b"not an elf", 64, 64 << 20).unwrap_err();
        assert_eq!(err.to_string(), "k.hvt: invalid hvt image");
    }
}
