//! The host side of the block counters a supervisor reads
//! (`kiln_abi::block_stats`, `docs/supervisor.md`, "Statistics"): the
//! file the environment names in `KILN_BLOCK_STATS` (`kiln daemon` sets
//! it), opened, sized and mapped shared once per process, and the
//! [`Counters`] each block request is counted in. Used by kiln-unix's
//! file-backed block device and by kiln-tender's block module (kiln-hvt).
//!
//! The format and the [`Writer`] are kiln-abi's, which has no `unsafe`
//! code; the one `unsafe` part here, the shared mapping, is in `sys`.
//! A crate of its own because kiln-unix, linked into every unix
//! unikernel, does not depend on the tenders' crate.
#![deny(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

use kiln_abi::block_stats::FILE_LEN;
pub use kiln_abi::block_stats::{ENV, Op, Writer};

mod sys;

/// The per-device counters of this process: kept in the file named by
/// [`ENV`] when the environment names one, else nowhere.
#[derive(Debug, Default)]
pub struct Counters {
    writer: Option<Writer>,
    /// Whether the environment was looked at.
    opened: bool,
}

impl Counters {
    /// No counters yet: the environment is looked at by the first
    /// [`Counters::add`].
    pub const fn new() -> Counters {
        Counters {
            writer: None,
            opened: false,
        }
    }

    /// Opens the file the environment names (once); a file that cannot be
    /// used is reported on stderr, after `prefix`, and nothing is counted.
    fn open(&mut self, prefix: &str) {
        if std::mem::replace(&mut self.opened, true) {
            return;
        }
        let Some(path) = std::env::var_os(ENV) else {
            return;
        };
        match open(Path::new(&path)) {
            Ok(writer) => self.writer = Some(writer),
            Err(e) => eprintln!(
                "{prefix}warning: block counters not kept: {ENV}={}: {e}",
                Path::new(&path).display()
            ),
        }
    }

    /// Adds device `name`; its slot, if counters are kept. The first call
    /// opens the file; a file that cannot be used is reported once on
    /// stderr, the line led by `prefix` (`"kiln-hvt: "`, or nothing), and
    /// nothing is counted.
    pub fn add(&mut self, prefix: &str, name: &str) -> Option<usize> {
        self.open(prefix);
        self.writer.as_mut()?.add(name)
    }

    /// Counts a request of `len` bytes on the device in `slot`.
    pub fn count(&self, slot: Option<usize>, op: Op, len: u64, ok: bool) {
        if let (Some(w), Some(slot)) = (&self.writer, slot) {
            w.count(slot, op, len, ok);
        }
    }
}

/// Opens the existing regular file at `path`, sizes it and maps it shared
/// as a fresh counters file.
pub fn open(path: &Path) -> io::Result<Writer> {
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    f.set_len(FILE_LEN as u64)?;
    let words = sys::map_shared_words(&f, FILE_LEN)?;
    Writer::new(words).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reach_the_file() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut w = open(file.path()).unwrap();
        let disk = w.add("disk").unwrap();
        w.count(disk, Op::Write, 4096, true);
        w.count(disk, Op::Read, 512, false);
        let bytes = std::fs::read(file.path()).unwrap();
        assert_eq!(bytes.len(), FILE_LEN);
        let records: Vec<_> = kiln_abi::block_stats::parse(&bytes).unwrap().collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].name(), Some("disk"));
        assert_eq!((records[0].writes, records[0].written_bytes), (1, 4096));
        assert_eq!((records[0].reads, records[0].errors), (0, 1));
    }

    #[test]
    fn only_an_existing_regular_file_is_used() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            open(&dir.path().join("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(open(dir.path()).is_err(), "a directory was used");
        assert!(!dir.path().join("missing").exists());
    }
}
