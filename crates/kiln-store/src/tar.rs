//! [`TarStore`]: a read-only store over a tar archive (ustar or pax, with
//! GNU long names) on a block device, indexed once at open.

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;

use kiln_devices::{Block, BlockError, Digest, EntryKind, KvError, KvRo};
use sha2::Digest as _;

use crate::ustar::{self, BLOCK, kind};

/// The largest pax extended header or GNU long name accepted.
pub const MAX_META: u64 = 64 * 1024;

/// Bytes per device request when reading a value.
const CHUNK: usize = 64 * 1024;

/// Why a tar archive was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// A device request failed.
    #[error("block device `{device}`: cannot read sector {sector}")]
    Block {
        /// The block device's name.
        device: String,
        /// The first sector of the request.
        sector: u64,
        /// The device's error.
        #[source]
        source: BlockError,
    },
    /// A header's checksum does not match its contents.
    #[error(
        "block device `{device}`: the tar header at byte {offset} has a bad checksum\nhint: the image is damaged or not a tar archive; make it again with `kiln` or `tar --format=pax`"
    )]
    Checksum {
        /// The block device's name.
        device: String,
        /// The header's byte offset.
        offset: u64,
    },
    /// A header lacks the ustar magic (a pre-POSIX archive, or no archive).
    #[error(
        "block device `{device}`: the block at byte {offset} is not a ustar header\nhint: make the image with `kiln` or `tar --format=pax` (old v7 archives are not read)"
    )]
    Magic {
        /// The block device's name.
        device: String,
        /// The header's byte offset.
        offset: u64,
    },
    /// A numeric field is not an octal or base-256 number.
    #[error(
        "block device `{device}`: the tar header at byte {offset} has a malformed {field} field"
    )]
    Field {
        /// The block device's name.
        device: String,
        /// The header's byte offset.
        offset: u64,
        /// The field's name.
        field: &'static str,
    },
    /// A pax extended header is malformed.
    #[error(
        "block device `{device}`: the pax extended header at byte {offset} is malformed ({why})"
    )]
    Pax {
        /// The block device's name.
        device: String,
        /// The header's byte offset.
        offset: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A pax header or long name is larger than [`MAX_META`].
    #[error(
        "block device `{device}`: the tar metadata entry at byte {offset} has {size} bytes, more than 64 KiB"
    )]
    MetaTooLarge {
        /// The block device's name.
        device: String,
        /// The header's byte offset.
        offset: u64,
        /// Its size.
        size: u64,
    },
    /// The archive ends (the device ends) inside an entry or before the
    /// end-of-archive block.
    #[error(
        "block device `{device}`: the tar archive is truncated at byte {offset}\nhint: the device must hold the whole archive, up to its end-of-archive block"
    )]
    Truncated {
        /// The block device's name.
        device: String,
        /// Where the missing data starts.
        offset: u64,
    },
    /// An entry's name is absolute, climbs out with `..`, or is not UTF-8.
    #[error(
        "block device `{device}`: the tar entry at byte {offset} has a refused name `{name}` ({why})"
    )]
    Name {
        /// The block device's name.
        device: String,
        /// The header's byte offset.
        offset: u64,
        /// The name, lossily decoded.
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// An entry type the store does not serve (sparse files, volume labels).
    #[error(
        "block device `{device}`: the tar entry at byte {offset} has unsupported type `{kind}`"
    )]
    Type {
        /// The block device's name.
        device: String,
        /// The header's byte offset.
        offset: u64,
        /// The type flag, as a character.
        kind: char,
    },
    /// A path is both a file and a directory.
    #[error(
        "block device `{device}`: the tar entry `{path}` is a file and also a directory of other entries"
    )]
    Conflict {
        /// The block device's name.
        device: String,
        /// The path.
        path: String,
    },
}

#[derive(Debug)]
struct File {
    /// Byte offset of the data on the device.
    offset: u64,
    size: u64,
    digest: Cell<Option<[u8; 32]>>,
}

/// A read-only key-value store over a tar archive on a block device.
///
/// Opening reads every header once (the data is skipped) and keeps an
/// index of paths in memory; `get` and `get_partial` then read only the
/// sectors holding the requested bytes. Digests (SHA-256) are computed on
/// first request and cached, so that opening stays proportional to the
/// number of entries rather than the archive's size.
#[derive(Debug)]
pub struct TarStore<B> {
    block: B,
    sector_size: u64,
    files: BTreeMap<String, File>,
    dictionaries: BTreeMap<String, BTreeMap<String, EntryKind>>,
}

/// Reads 512-byte tar blocks from a device of any sector size, through a
/// read-ahead window.
struct Reader<'a, B> {
    block: &'a B,
    device: &'a str,
    sector_size: u64,
    capacity: u64,
    start: u64,
    buf: Vec<u8>,
    len: usize,
}

impl<B: Block> Reader<'_, B> {
    /// The tar block at byte `offset` (a multiple of 512).
    async fn block_at(&mut self, offset: u64) -> Result<[u8; BLOCK], TarError> {
        if offset + BLOCK as u64 > self.capacity {
            return Err(TarError::Truncated {
                device: self.device.into(),
                offset,
            });
        }
        if offset < self.start || offset + BLOCK as u64 > self.start + self.len as u64 {
            let sector = offset / self.sector_size;
            let start = sector * self.sector_size;
            let len = (self.buf.len() as u64).min(self.capacity - start) as usize;
            self.len = 0;
            let buf = self.buf.get_mut(..len).unwrap_or_default();
            self.block
                .read(sector, buf)
                .await
                .map_err(|source| TarError::Block {
                    device: self.device.into(),
                    sector,
                    source,
                })?;
            self.start = start;
            self.len = len;
        }
        let at = (offset - self.start) as usize;
        let mut out = [0u8; BLOCK];
        if let Some(b) = self.buf.get(at..at + BLOCK) {
            out.copy_from_slice(b);
        }
        Ok(out)
    }

    /// The data of a metadata entry (pax header, long name) whose header
    /// is at `offset`, at most [`MAX_META`] bytes.
    async fn meta(&mut self, offset: u64, size: u64) -> Result<Vec<u8>, TarError> {
        if size > MAX_META {
            return Err(TarError::MetaTooLarge {
                device: self.device.into(),
                offset,
                size,
            });
        }
        self.data(offset, size).await
    }

    /// The `size` bytes of data following the header at `offset`.
    async fn data(&mut self, offset: u64, size: u64) -> Result<Vec<u8>, TarError> {
        let mut out = Vec::with_capacity(size as usize);
        let mut at = offset + BLOCK as u64;
        while (out.len() as u64) < size {
            let b = self.block_at(at).await?;
            let n = (size - out.len() as u64).min(BLOCK as u64) as usize;
            out.extend_from_slice(b.get(..n).unwrap_or_default());
            at += BLOCK as u64;
        }
        Ok(out)
    }
}

/// The bytes of `size` rounded up to whole tar blocks.
fn padded(size: u64) -> Option<u64> {
    size.checked_next_multiple_of(BLOCK as u64)
}

/// Metadata carried to the next entry by pax headers and GNU long names.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    size: Option<u64>,
}

/// Parses pax extended header records (`LEN KEY=VALUE\n`) into `pending`.
fn parse_pax(data: &[u8], pending: &mut Pending) -> Result<(), &'static str> {
    let mut rest = data;
    while !rest.is_empty() {
        // Archivers pad with NULs after the last record.
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("record without a length")?;
        let len: usize = core::str::from_utf8(rest.get(..space).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("record length is not a decimal number")?;
        let record = rest.get(..len).ok_or("record longer than the header")?;
        if len <= space + 1 || record.last() != Some(&b'\n') {
            return Err("record does not end with a newline");
        }
        let body = record.get(space + 1..len - 1).unwrap_or_default();
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record without `=`")?;
        let (key, value) = (
            body.get(..eq).unwrap_or_default(),
            body.get(eq + 1..).unwrap_or_default(),
        );
        match key {
            b"path" => pending.path = Some(value.to_vec()),
            b"size" => {
                let size = core::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or("size is not a decimal number")?;
                pending.size = Some(size);
            }
            _ => {}
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    Ok(())
}

/// Turns an archive path into a key: `.` and empty segments dropped;
/// absolute paths, `..` and non-UTF-8 refused.
fn key_of(raw: &[u8]) -> Result<String, &'static str> {
    let path = core::str::from_utf8(raw).map_err(|_| "not UTF-8")?;
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.contains('\0') {
        return Err("NUL byte");
    }
    let mut key = String::with_capacity(path.len());
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err("`..` segment"),
            s => {
                if !key.is_empty() {
                    key.push('/');
                }
                key.push_str(s);
            }
        }
    }
    Ok(key)
}

impl<B: Block> TarStore<B> {
    /// Opens the tar archive on `block` (named `device` in messages):
    /// reads and checks every header, refusing the archive as a whole on
    /// the first problem.
    pub async fn open(device: &str, block: B) -> Result<TarStore<B>, TarError> {
        let info = block.info();
        let sector_size = u64::from(info.sector_size);
        let mut reader = Reader {
            block: &block,
            device,
            sector_size,
            capacity: info.capacity(),
            start: 0,
            buf: vec![0; CHUNK.max(info.sector_size as usize)],
            len: 0,
        };
        let mut files: BTreeMap<String, File> = BTreeMap::new();
        let mut directories: Vec<String> = Vec::new();
        let mut pending = Pending::default();
        let mut offset = 0u64;
        loop {
            let header = reader.block_at(offset).await?;
            if header.iter().all(|&b| b == 0) {
                break;
            }
            if !ustar::checksum_ok(&header) {
                return Err(TarError::Checksum {
                    device: device.into(),
                    offset,
                });
            }
            if !ustar::magic_ok(&header) {
                return Err(TarError::Magic {
                    device: device.into(),
                    offset,
                });
            }
            let bad_field = |field| TarError::Field {
                device: device.into(),
                offset,
                field,
            };
            let header_size = ustar::number(ustar::field(&header, ustar::SIZE))
                .ok_or_else(|| bad_field("size"))?;
            let typeflag = header[ustar::TYPEFLAG];
            let size = match typeflag {
                kind::PAX | kind::PAX_GLOBAL | kind::GNU_LONG_NAME | kind::GNU_LONG_LINK => {
                    header_size
                }
                _ => pending.size.unwrap_or(header_size),
            };
            let next = padded(size)
                .and_then(|p| (offset + BLOCK as u64).checked_add(p))
                .ok_or_else(|| bad_field("size"))?;
            if next > reader.capacity {
                return Err(TarError::Truncated {
                    device: device.into(),
                    offset: reader.capacity,
                });
            }
            match typeflag {
                kind::PAX => {
                    let data = reader.meta(offset, size).await?;
                    parse_pax(&data, &mut pending).map_err(|why| TarError::Pax {
                        device: device.into(),
                        offset,
                        why,
                    })?;
                }
                kind::PAX_GLOBAL | kind::GNU_LONG_LINK => {
                    // Global defaults (times, owners) and link targets do
                    // not matter to a store.
                }
                kind::GNU_LONG_NAME => {
                    let mut data = reader.meta(offset, size).await?;
                    if let Some(nul) = data.iter().position(|&b| b == 0) {
                        data.truncate(nul);
                    }
                    pending.path = Some(data);
                }
                kind::FILE | kind::FILE_OLD | kind::CONTIGUOUS | kind::DIRECTORY => {
                    let raw = match pending.path.take() {
                        Some(path) => path,
                        None => {
                            let name = ustar::text(&header, ustar::NAME);
                            let prefix = ustar::text(&header, ustar::PREFIX);
                            let mut raw = Vec::with_capacity(prefix.len() + 1 + name.len());
                            if !prefix.is_empty()
                                && ustar::field(&header, ustar::MAGIC) == b"ustar\0"
                            {
                                raw.extend_from_slice(prefix);
                                raw.push(b'/');
                            }
                            raw.extend_from_slice(name);
                            raw
                        }
                    };
                    pending = Pending::default();
                    let key = key_of(&raw).map_err(|why| TarError::Name {
                        device: device.into(),
                        offset,
                        name: String::from_utf8_lossy(&raw).into_owned(),
                        why,
                    })?;
                    if typeflag == kind::DIRECTORY {
                        if !key.is_empty() {
                            directories.push(key);
                        }
                    } else {
                        if key.is_empty() {
                            return Err(TarError::Name {
                                device: device.into(),
                                offset,
                                name: String::from_utf8_lossy(&raw).into_owned(),
                                why: "a file named like the root directory",
                            });
                        }
                        // A later entry for the same path replaces an
                        // earlier one, as when extracting.
                        files.insert(
                            key,
                            File {
                                offset: offset + BLOCK as u64,
                                size,
                                digest: Cell::new(None),
                            },
                        );
                    }
                }
                k if kind::SKIPPED.contains(&k) => pending = Pending::default(),
                k => {
                    return Err(TarError::Type {
                        device: device.into(),
                        offset,
                        kind: char::from(k),
                    });
                }
            }
            offset = next;
        }
        let dictionaries = tree(device, &files, &directories)?;
        drop(reader);
        Ok(TarStore {
            block,
            sector_size,
            files,
            dictionaries,
        })
    }

    /// The number of files (values) in the archive.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the archive holds no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn file(&self, key: &str) -> Result<&File, KvError> {
        let key = kiln_devices::kv::normalize(key)?;
        match self.files.get(&key) {
            Some(f) => Ok(f),
            None if self.dictionaries.contains_key(&key) => Err(KvError::IsDictionary),
            None => Err(KvError::NotFound),
        }
    }

    /// Streams bytes `from..from + len` of `file` to `sink`, reading only
    /// the sectors that hold them.
    async fn read(
        &self,
        file: &File,
        from: u64,
        len: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), KvError> {
        let size = self.sector_size;
        let mut at = file.offset + from;
        let end = at + len;
        // No bigger than the sectors spanned: most files are small.
        let spanned = (end - (at / size) * size).next_multiple_of(size);
        let mut buf = vec![0u8; spanned.min(CHUNK.max(size as usize) as u64) as usize];
        while at < end {
            let sector = at / size;
            let base = sector * size;
            let span = (end - base).next_multiple_of(size).min(buf.len() as u64);
            let chunk = buf.get_mut(..span as usize).unwrap_or_default();
            self.block.read(sector, chunk).await?;
            let lo = (at - base) as usize;
            let hi = (end - base).min(span) as usize;
            sink(chunk.get(lo..hi).unwrap_or_default());
            at = base + hi as u64;
        }
        Ok(())
    }
}

/// The dictionaries implied by the files' paths and the archive's
/// directory entries.
fn tree(
    device: &str,
    files: &BTreeMap<String, File>,
    directories: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, EntryKind>>, TarError> {
    let mut dictionaries: BTreeMap<String, BTreeMap<String, EntryKind>> = BTreeMap::new();
    dictionaries.insert(String::new(), BTreeMap::new());
    let paths = files
        .keys()
        .map(|k| (k, EntryKind::Value))
        .chain(directories.iter().map(|d| (d, EntryKind::Dictionary)));
    for (path, last) in paths {
        let mut parent = String::new();
        let mut segments = path.split('/').peekable();
        while let Some(name) = segments.next() {
            let kind = if segments.peek().is_some() {
                EntryKind::Dictionary
            } else {
                last
            };
            let dict = dictionaries.entry(parent.clone()).or_default();
            if let Some(previous) = dict.insert(name.to_string(), kind)
                && previous != kind
            {
                return Err(TarError::Conflict {
                    device: device.into(),
                    path: path.clone(),
                });
            }
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(name);
        }
        if last == EntryKind::Dictionary {
            dictionaries.entry(path.clone()).or_default();
        }
    }
    Ok(dictionaries)
}

impl<B: Block> KvRo for TarStore<B> {
    async fn exists(&self, key: &str) -> Result<Option<EntryKind>, KvError> {
        let key = kiln_devices::kv::normalize(key)?;
        Ok(if self.files.contains_key(&key) {
            Some(EntryKind::Value)
        } else if self.dictionaries.contains_key(&key) {
            Some(EntryKind::Dictionary)
        } else {
            None
        })
    }

    async fn get(&self, key: &str) -> Result<Cow<'static, [u8]>, KvError> {
        let file = self.file(key)?;
        let mut out = Vec::with_capacity(usize::try_from(file.size).map_err(|_| KvError::Full)?);
        self.read(file, 0, file.size, |b| out.extend_from_slice(b))
            .await?;
        Ok(Cow::Owned(out))
    }

    async fn get_partial(
        &self,
        key: &str,
        offset: u64,
        len: usize,
    ) -> Result<Cow<'static, [u8]>, KvError> {
        let file = self.file(key)?;
        if offset > file.size {
            return Err(KvError::OutOfRange);
        }
        let n = (len as u64).min(file.size - offset);
        let mut out = Vec::with_capacity(n as usize);
        self.read(file, offset, n, |b| out.extend_from_slice(b))
            .await?;
        Ok(Cow::Owned(out))
    }

    async fn list(&self, key: &str) -> Result<Vec<(String, EntryKind)>, KvError> {
        let key = kiln_devices::kv::normalize(key)?;
        match self.dictionaries.get(&key) {
            Some(d) => Ok(d.iter().map(|(n, k)| (n.clone(), *k)).collect()),
            None if self.files.contains_key(&key) => Err(KvError::IsValue),
            None => Err(KvError::NotFound),
        }
    }

    async fn size(&self, key: &str) -> Result<u64, KvError> {
        Ok(self.file(key)?.size)
    }

    async fn digest(&self, key: &str) -> Result<Digest, KvError> {
        let file = self.file(key)?;
        if let Some(d) = file.digest.get() {
            return Ok(Digest(d));
        }
        let mut hasher = sha2::Sha256::new();
        self.read(file, 0, file.size, |b| hasher.update(b)).await?;
        let d: [u8; 32] = hasher.finalize().into();
        file.digest.set(Some(d));
        Ok(Digest(d))
    }
}

#[cfg(test)]
mod tests;
