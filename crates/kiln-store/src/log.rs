//! [`LogStore`]: a crash-safe read-write store, a log of checksummed
//! records in one of two regions of a block device (the format is in the
//! crate documentation).

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use kiln_devices::kv::normalize;
use kiln_devices::{Block, BlockError, Digest, EntryKind, KvError, KvRo, KvRw};
use sha2::Digest as _;

use crate::lock::{Guard, Lock};

mod compact;
mod format;
mod replay;

use compact::Change;
use format::*;

/// The longest key (in bytes, in normal form) a [`LogStore`] accepts.
pub const MAX_KEY_LEN: usize = 255;

/// Why a [`LogStore`] could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The device cannot hold two regions of three sectors.
    #[error(
        "block device `{device}` has {sectors} sectors, too few for a read-write store\nhint: give the store a device of at least 6 sectors (a few MiB is sensible)"
    )]
    TooSmall {
        /// The block device's name.
        device: String,
        /// Its number of sectors.
        sectors: u64,
    },
    /// The device is read-only.
    #[error(
        "block device `{device}` is read-only, a read-write store needs to write it\nhint: make the file writable"
    )]
    ReadOnly {
        /// The block device's name.
        device: String,
    },
    /// A device request failed.
    #[error("block device `{device}`: cannot {action} sector {sector}")]
    Block {
        /// The block device's name.
        device: String,
        /// `read` or `write`.
        action: &'static str,
        /// The first sector of the request.
        sector: u64,
        /// The device's error.
        #[source]
        source: BlockError,
    },
    /// Neither region header is valid and the device is not blank.
    #[error(
        "block device `{device}` does not hold a kiln store\nhint: a read-write store starts on a zero-filled device (`truncate -s 16M FILE` makes one)"
    )]
    NotAStore {
        /// The block device's name.
        device: String,
    },
    /// The store was written by another version of this format.
    #[error(
        "block device `{device}` holds a store of format version {version}, this kiln reads version 1"
    )]
    Version {
        /// The block device's name.
        device: String,
        /// The version found.
        version: u32,
    },
    /// The store was made for another sector size or device size.
    #[error(
        "block device `{device}` holds a store made for {made_sectors} sectors of {made_size} bytes, but has {sectors} sectors of {sector_size} bytes\nhint: attach the file with the sector size it was made with, and do not resize it"
    )]
    Geometry {
        /// The block device's name.
        device: String,
        /// Sector size the store was made with.
        made_size: u32,
        /// Region size the store was made with, times two.
        made_sectors: u64,
        /// The device's sector size.
        sector_size: u32,
        /// The device's sectors.
        sectors: u64,
    },
    /// A record in the middle of the log is unreadable: later, acknowledged
    /// records exist, so treating it as the end of the log would lose them.
    #[error(
        "block device `{device}`: the store's record at sector {sector} is corrupt and later records exist\nhint: the medium is damaged; restore the device from a copy"
    )]
    Corrupt {
        /// The block device's name.
        device: String,
        /// The sector of the unreadable record.
        sector: u64,
    },
    /// A record with a valid checksum makes no sense (a bad length, key or
    /// operation): the device was written by something else.
    #[error("block device `{device}`: the store's record at sector {sector} is malformed ({why})")]
    Malformed {
        /// The block device's name.
        device: String,
        /// The sector of the record.
        sector: u64,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// What the index knows of a key.
#[derive(Debug, Clone)]
enum Slot {
    /// A value stored in the record at `start`.
    Value(Location),
    /// A value whose record was found corrupt: reads fail with
    /// [`KvError::Corrupt`] until it is set or removed.
    Lost,
}

#[derive(Debug, Clone)]
struct Location {
    start: u64,
    seq: u64,
    len: u64,
    key_len: usize,
    digest: Option<[u8; 32]>,
}

#[derive(Debug)]
struct State {
    /// The active region (0 or 1).
    active: u64,
    /// Its generation.
    generation: u64,
    /// The generation the next compaction uses.
    next_generation: u64,
    /// The first free sector of the active region.
    tail: u64,
    /// The sequence number of the last record in the active region.
    seq: u64,
    index: BTreeMap<String, Slot>,
    /// Set while a record is appended or a compaction commits: if the
    /// operation fails or is cancelled then, the device may or may not
    /// hold the change, and the state is reloaded from it before the next
    /// operation.
    dirty: bool,
}

/// How much of a [`LogStore`] is in use, in sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Sectors a compaction would keep (live records).
    pub live: u64,
    /// Sectors of the active region's log, live or not.
    pub log: u64,
    /// Sectors a region can hold: the most `log` can reach.
    pub capacity: u64,
    /// Compactions since the store was opened.
    pub compactions: u64,
}

/// A read-write key-value store on a block device, crash-safe: each `set`
/// and `remove` is atomic and durable once it returns. See the crate
/// documentation for the on-disk format.
#[derive(Debug)]
pub struct LogStore<B> {
    block: B,
    /// The block device's name, for messages.
    device: String,
    sector_size: usize,
    /// Sectors per region, header included.
    region: u64,
    state: Lock<State>,
    compactions: core::cell::Cell<u64>,
}

/// Whether `key` is `prefix` or lies under it.
fn under(key: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || (key.starts_with(prefix)
            && (key.len() == prefix.len() || key.as_bytes().get(prefix.len()) == Some(&b'/')))
}

/// The keys strictly under dictionary `dir` (`""`: every key).
fn children<'a, V>(
    index: &'a BTreeMap<String, V>,
    dir: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        alloc::format!("{dir}/")
    };
    index
        .range(prefix.clone()..)
        .take_while(move |(k, _)| k.starts_with(&prefix))
}

impl<B: Block> LogStore<B> {
    /// Opens the store on `block` (named `device` in messages): reads both
    /// region headers and replays the active region's log to build the
    /// index, discarding a torn record at its end. A zero-filled device
    /// (precisely: no valid region header, and region 1's header and
    /// region 0's first record sector zero-filled) is formatted as an
    /// empty store.
    pub async fn open(device: &str, block: B) -> Result<LogStore<B>, LogError> {
        let mut store = LogStore::new(device, block)?;
        let size = store.sector_size;
        let mut raw = [vec![0u8; 2 * size], vec![0u8; 2 * size]];
        store.read_at(device, 0, &mut raw[0]).await?;
        store.read_at(device, store.region, &mut raw[1]).await?;
        let copies = raw.each_ref().map(|r| {
            [
                header(r.get(..size).unwrap_or_default()),
                header(r.get(size..).unwrap_or_default()),
            ]
        });
        if copies.iter().flatten().all(Option::is_none) {
            // A blank device, or one whose formatting was interrupted (torn
            // first headers; no record is written before they are durable,
            // so region 0's first record sector is still blank).
            let mut record = vec![0u8; size];
            store.read_at(device, HEADERS, &mut record).await?;
            if raw[1].iter().chain(&record).all(|&b| b == 0) {
                store.write_fresh(device, 1).await?;
                return Ok(store);
            }
            return Err(LogError::NotAStore {
                device: device.into(),
            });
        }
        let state = store.load().await?;
        store.state = Lock::new(state);
        Ok(store)
    }

    /// Erases `block` (writes zeros over all of it) and makes an empty
    /// store on it.
    pub async fn format(device: &str, block: B) -> Result<LogStore<B>, LogError> {
        let store = LogStore::new(device, block)?;
        let zeros = vec![0u8; CHUNK.max(store.sector_size)];
        let per = (zeros.len() / store.sector_size) as u64;
        let sectors = store.region.saturating_mul(2);
        let mut at = 0;
        while at < sectors {
            let n = per.min(sectors - at);
            let len = n as usize * store.sector_size;
            store
                .block
                .write(at, zeros.get(..len).unwrap_or_default())
                .await
                .map_err(|source| LogError::Block {
                    device: device.into(),
                    action: "write",
                    sector: at,
                    source,
                })?;
            at += n;
        }
        store.write_fresh(device, 1).await?;
        Ok(store)
    }

    fn new(device: &str, block: B) -> Result<LogStore<B>, LogError> {
        let info = block.info();
        if info.read_only {
            return Err(LogError::ReadOnly {
                device: device.into(),
            });
        }
        let region = info.sectors / 2;
        // The format needs room for its frame, a record header and the
        // longest key in a sector: at least 512-byte sectors.
        if region <= HEADERS || info.sector_size < 512 || !info.sector_size.is_power_of_two() {
            return Err(LogError::TooSmall {
                device: device.into(),
                sectors: info.sectors,
            });
        }
        Ok(LogStore {
            block,
            device: device.into(),
            sector_size: info.sector_size as usize,
            region,
            state: Lock::new(State {
                active: 0,
                generation: 1,
                next_generation: 2,
                tail: HEADERS,
                seq: 0,
                index: BTreeMap::new(),
                dirty: false,
            }),
            compactions: core::cell::Cell::new(0),
        })
    }

    /// Writes region 0's headers for an empty store of `generation`.
    async fn write_fresh(&self, device: &str, generation: u64) -> Result<(), LogError> {
        let h = RegionHeader {
            version: VERSION,
            generation,
            state: COMMITTED,
            sector_size: self.sector_size as u32,
            region_sectors: self.region,
            first_seq: 1,
        };
        self.write_header(0, h, HEADERS)
            .await
            .map_err(|e| LogError::Block {
                device: device.into(),
                action: "write",
                sector: 0,
                source: match e {
                    KvError::Block(b) => b,
                    _ => BlockError::Io(5),
                },
            })
    }

    async fn read_at(&self, device: &str, sector: u64, buf: &mut [u8]) -> Result<(), LogError> {
        self.block
            .read(sector, buf)
            .await
            .map_err(|source| LogError::Block {
                device: device.into(),
                action: "read",
                sector,
                source,
            })
    }

    /// Payload bytes per sector.
    fn payload(&self) -> usize {
        self.sector_size - FRAME
    }

    /// Sectors of a record with a key of `key_len` bytes and a value of
    /// `value_len`, or `None` if it could never fit.
    fn record_sectors(&self, key_len: usize, value_len: u64) -> Option<u64> {
        let total = ((RECORD_HEADER + key_len) as u64).checked_add(value_len)?;
        let n = total.div_ceil(self.payload() as u64);
        // Sector indexes within a record are 32-bit.
        (n <= self.region - HEADERS && n <= u64::from(u32::MAX)).then_some(n)
    }

    /// Writes the record `op key value` at sector `at` (not flushed).
    /// Returns its length in sectors.
    async fn write_record(
        &self,
        at: u64,
        generation: u64,
        seq: u64,
        op: u8,
        key: &str,
        value: &[u8],
    ) -> Result<u64, KvError> {
        let sectors = self
            .record_sectors(key.len(), value.len() as u64)
            .ok_or(KvError::Full)?;
        let size = self.sector_size;
        let per = (CHUNK / size).max(1) as u64;
        let mut head = [0u8; RECORD_HEADER];
        head[0] = op;
        head[2..4].copy_from_slice(&(key.len() as u16).to_le_bytes());
        head[8..16].copy_from_slice(&(value.len() as u64).to_le_bytes());
        let parts: [&[u8]; 3] = [&head, key.as_bytes(), value];
        let mut buf = vec![0u8; per.min(sectors) as usize * size];
        let mut k = 0;
        while k < sectors {
            let n = per.min(sectors - k);
            for (i, sector) in buf.chunks_mut(size).take(n as usize).enumerate() {
                let index = k + i as u64;
                sector.fill(0);
                fill(
                    sector.get_mut(FRAME..).unwrap_or_default(),
                    index as usize * self.payload(),
                    &parts,
                );
                put_frame(
                    sector,
                    Frame {
                        index: index as u32,
                        generation,
                        seq,
                    },
                );
            }
            self.block
                .write(at + k, buf.get(..n as usize * size).unwrap_or_default())
                .await?;
            k += n;
        }
        Ok(sectors)
    }

    /// Streams `len` bytes of the value at `loc` from `offset` to `sink`,
    /// checking every sector's frame.
    async fn read_value(
        &self,
        generation: u64,
        loc: &Location,
        offset: u64,
        len: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), KvError> {
        if len == 0 {
            return Ok(());
        }
        let p = self.payload() as u64;
        let first_byte = (RECORD_HEADER + loc.key_len) as u64 + offset;
        let last_byte = first_byte + len - 1;
        let (k0, k1) = (first_byte / p, last_byte / p);
        let size = self.sector_size;
        let per = (CHUNK / size).max(1) as u64;
        let mut buf = vec![0u8; per.min(k1 - k0 + 1) as usize * size];
        let mut k = k0;
        while k <= k1 {
            let n = per.min(k1 - k + 1);
            let chunk = buf.get_mut(..n as usize * size).unwrap_or_default();
            self.block.read(loc.start + k, chunk).await?;
            for (i, sector) in chunk.chunks(size).enumerate() {
                let index = k + i as u64;
                let want = Frame {
                    index: index as u32,
                    generation,
                    seq: loc.seq,
                };
                if frame(sector) != Some(want) {
                    return Err(KvError::Corrupt);
                }
                let lo = (index * p).max(first_byte) - index * p;
                let hi = ((index + 1) * p).min(last_byte + 1) - index * p;
                sink(
                    sector
                        .get(FRAME + lo as usize..FRAME + hi as usize)
                        .unwrap_or_default(),
                );
            }
            k += n;
        }
        Ok(())
    }

    /// Writes `h` to the `copies` header sectors from sector `at`, then
    /// flushes.
    async fn write_header(&self, at: u64, h: RegionHeader, copies: u64) -> Result<(), KvError> {
        let mut sectors = vec![0u8; copies as usize * self.sector_size];
        for sector in sectors.chunks_mut(self.sector_size) {
            put_header(sector, h);
        }
        self.block.write(at, &sectors).await?;
        self.block.flush().await?;
        Ok(())
    }

    /// Appends a one-record change, compacting first-and-instead if the
    /// active region has no room for it.
    async fn append(&self, st: &mut State, op: u8, key: &str, value: &[u8]) -> Result<(), KvError> {
        let sectors = self
            .record_sectors(key.len(), value.len() as u64)
            .ok_or(KvError::Full)?;
        let end = (st.active + 1) * self.region;
        if st.tail + sectors > end {
            let change = if op == OP_SET {
                Change::Set(key, value)
            } else {
                Change::Remove(key)
            };
            return self.compact_with(st, change).await;
        }
        let seq = st.seq + 1;
        let start = st.tail;
        // If the write fails or is cancelled, the record may or may not be
        // on the device: reload before the next operation to find out.
        st.dirty = true;
        self.write_record(start, st.generation, seq, op, key, value)
            .await?;
        self.block.flush().await?;
        st.dirty = false;
        st.tail += sectors;
        st.seq = seq;
        if op == OP_SET {
            st.index
                .insert(key.to_string(), new_slot(start, seq, key, value));
        } else {
            st.index.retain(|k, _| !under(k, key));
        }
        Ok(())
    }

    /// Takes the store's lock, first reloading the state from the device
    /// if the last change failed or was cancelled midway.
    async fn state(&self) -> Result<Guard<'_, State>, KvError> {
        let mut st = self.state.lock().await;
        if st.dirty {
            let next_generation = st.next_generation;
            let mut fresh = self.load().await.map_err(|e| match e {
                LogError::Block { source, .. } => KvError::Block(source),
                _ => KvError::Corrupt,
            })?;
            fresh.next_generation = fresh.next_generation.max(next_generation);
            *st = fresh;
        }
        Ok(st)
    }

    /// Rewrites the live records into the other region now.
    pub async fn compact(&self) -> Result<(), KvError> {
        let mut st = self.state().await?;
        self.compact_with(&mut st, Change::None).await
    }

    /// How full the store is.
    pub async fn usage(&self) -> Result<Usage, KvError> {
        let st = self.state().await?;
        let live = st
            .index
            .values()
            .map(|slot| match slot {
                Slot::Value(l) => self.record_sectors(l.key_len, l.len).unwrap_or(0),
                Slot::Lost => 1,
            })
            .sum();
        Ok(Usage {
            live,
            log: st.tail - (st.active * self.region + HEADERS),
            capacity: self.region - HEADERS,
            compactions: self.compactions.get(),
        })
    }

    /// The block device.
    pub fn block(&self) -> &B {
        &self.block
    }

    /// The value slot of `key` (normalized), or why there is none.
    fn slot<'a>(st: &'a State, key: &str) -> Result<&'a Location, KvError> {
        match st.index.get(key) {
            Some(Slot::Value(l)) => Ok(l),
            Some(Slot::Lost) => Err(KvError::Corrupt),
            None if key.is_empty() || children(&st.index, key).next().is_some() => {
                Err(KvError::IsDictionary)
            }
            None => Err(KvError::NotFound),
        }
    }
}

fn new_slot(start: u64, seq: u64, key: &str, value: &[u8]) -> Slot {
    Slot::Value(Location {
        start,
        seq,
        len: value.len() as u64,
        key_len: key.len(),
        digest: Some(sha2::Sha256::digest(value).into()),
    })
}

/// Copies the bytes `offset..offset + dst.len()` of the concatenation of
/// `parts` into `dst` (zeros past the end).
fn fill(dst: &mut [u8], mut offset: usize, parts: &[&[u8]]) {
    let mut out = 0;
    for part in parts {
        if out >= dst.len() {
            break;
        }
        if offset >= part.len() {
            offset -= part.len();
            continue;
        }
        let src = part.get(offset..).unwrap_or_default();
        let n = src.len().min(dst.len() - out);
        if let (Some(d), Some(s)) = (dst.get_mut(out..out + n), src.get(..n)) {
            d.copy_from_slice(s);
        }
        out += n;
        offset = 0;
    }
}

impl<B: Block> KvRo for LogStore<B> {
    async fn exists(&self, key: &str) -> Result<Option<EntryKind>, KvError> {
        let key = normalize(key)?;
        let st = self.state().await?;
        Ok(if st.index.contains_key(&key) {
            Some(EntryKind::Value)
        } else if key.is_empty() || children(&st.index, &key).next().is_some() {
            Some(EntryKind::Dictionary)
        } else {
            None
        })
    }

    async fn get(&self, key: &str) -> Result<Cow<'static, [u8]>, KvError> {
        let key = normalize(key)?;
        let st = self.state().await?;
        let loc = Self::slot(&st, &key)?;
        let mut out = Vec::with_capacity(usize::try_from(loc.len).map_err(|_| KvError::Full)?);
        self.read_value(st.generation, loc, 0, loc.len, |b| out.extend_from_slice(b))
            .await?;
        Ok(Cow::Owned(out))
    }

    async fn get_partial(
        &self,
        key: &str,
        offset: u64,
        len: usize,
    ) -> Result<Cow<'static, [u8]>, KvError> {
        let key = normalize(key)?;
        let st = self.state().await?;
        let loc = Self::slot(&st, &key)?;
        if offset > loc.len {
            return Err(KvError::OutOfRange);
        }
        let n = (len as u64).min(loc.len - offset);
        let mut out = Vec::with_capacity(n as usize);
        self.read_value(st.generation, loc, offset, n, |b| out.extend_from_slice(b))
            .await?;
        Ok(Cow::Owned(out))
    }

    async fn list(&self, key: &str) -> Result<Vec<(String, EntryKind)>, KvError> {
        let key = normalize(key)?;
        let st = self.state().await?;
        if st.index.contains_key(&key) {
            return Err(KvError::IsValue);
        }
        let skip = if key.is_empty() { 0 } else { key.len() + 1 };
        let mut names: BTreeMap<String, EntryKind> = BTreeMap::new();
        for (k, _) in children(&st.index, &key) {
            let rest = k.get(skip..).unwrap_or_default();
            match rest.split_once('/') {
                Some((name, _)) => names.insert(name.to_string(), EntryKind::Dictionary),
                None => names.insert(rest.to_string(), EntryKind::Value),
            };
        }
        if names.is_empty() && !key.is_empty() {
            return Err(KvError::NotFound);
        }
        Ok(names.into_iter().collect())
    }

    async fn size(&self, key: &str) -> Result<u64, KvError> {
        let key = normalize(key)?;
        let st = self.state().await?;
        Ok(Self::slot(&st, &key)?.len)
    }

    async fn digest(&self, key: &str) -> Result<Digest, KvError> {
        let key = normalize(key)?;
        let mut st = self.state().await?;
        let loc = Self::slot(&st, &key)?;
        if let Some(d) = loc.digest {
            return Ok(Digest(d));
        }
        let mut hasher = sha2::Sha256::new();
        self.read_value(st.generation, loc, 0, loc.len, |b| hasher.update(b))
            .await?;
        let d: [u8; 32] = hasher.finalize().into();
        if let Some(Slot::Value(l)) = st.index.get_mut(&key) {
            l.digest = Some(d);
        }
        Ok(Digest(d))
    }
}

impl<B: Block> KvRw for LogStore<B> {
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let key = normalize(key)?;
        if key.is_empty() {
            return Err(KvError::IsDictionary);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(KvError::InvalidKey);
        }
        let mut st = self.state().await?;
        // A value may not sit under another value, nor replace a dictionary.
        for (i, _) in key.match_indices('/') {
            if st.index.contains_key(key.get(..i).unwrap_or_default()) {
                return Err(KvError::IsValue);
            }
        }
        if children(&st.index, &key).next().is_some() {
            return Err(KvError::IsDictionary);
        }
        self.append(&mut st, OP_SET, &key, value).await
    }

    async fn remove(&self, key: &str) -> Result<(), KvError> {
        let key = normalize(key)?;
        let mut st = self.state().await?;
        if !st.index.contains_key(&key) && children(&st.index, &key).next().is_none() {
            return if key.is_empty() {
                Ok(())
            } else {
                Err(KvError::NotFound)
            };
        }
        self.append(&mut st, OP_REMOVE, &key, &[]).await
    }
}

#[cfg(test)]
mod tests;
