//! The fuzz targets' bodies, a block device over the fuzzer's bytes and a
//! way to run a store's futures to completion. kiln-store's
//! `tests/fuzz_seeds.rs` includes this file to replay the seeds in every
//! test run.
//!
//! Run with `cargo +nightly fuzz run tar_open fuzz/corpus/tar_open
//! fuzz/seeds/tar_open` from `crates/kiln-store` (likewise `log_open`).

use std::cell::RefCell;

use kiln_devices::{Block, BlockError, BlockInfo, EntryKind, Instant, KvError, KvRo, KvRw};
use kiln_store::{LogStore, TarStore};

/// A block device holding the fuzzer's input: its first byte picks the
/// sector size (even: 512, odd: 4096), the rest is the medium, padded
/// with zeros to whole sectors.
pub struct SliceBlock {
    info: BlockInfo,
    data: RefCell<Vec<u8>>,
}

impl SliceBlock {
    pub fn new(input: &[u8]) -> SliceBlock {
        let (first, rest) = input.split_first().unwrap_or((&0, &[]));
        let sector_size: u32 = if first % 2 == 0 { 512 } else { 4096 };
        let mut data = rest.to_vec();
        data.resize(data.len().next_multiple_of(sector_size as usize), 0);
        SliceBlock {
            info: BlockInfo {
                sector_size,
                sectors: data.len() as u64 / u64::from(sector_size),
                read_only: false,
            },
            data: RefCell::new(data),
        }
    }
}

impl Block for SliceBlock {
    fn info(&self) -> BlockInfo {
        self.info
    }
    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let at = self.info.check(sector, buf.len())? as usize;
        buf.copy_from_slice(&self.data.borrow()[at..at + buf.len()]);
        Ok(())
    }
    async fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        let at = self.info.check(sector, buf.len())? as usize;
        self.data.borrow_mut()[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    async fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
}

struct Idle;

impl kiln_rt::Platform for Idle {
    fn now(&self) -> Instant {
        Instant::ZERO
    }
    fn wait(&self, deadline: Option<Instant>) {
        // Only the executor's periodic zero-deadline poll is expected; a
        // real wait would mean a store future that can never complete.
        assert_eq!(
            deadline,
            Some(Instant::ZERO),
            "a store future blocked forever"
        );
    }
}

/// Runs `f` to completion.
pub fn run<F: Future>(f: F) -> F::Output {
    kiln_rt::block_on(&Idle, f)
}

/// TarStore::open on arbitrary device contents must refuse or accept
/// without panicking, and an accepted archive must serve every key it
/// lists without panicking.
pub fn tar_open(data: &[u8]) {
    run(async {
        let Ok(store) = TarStore::open("fuzz", SliceBlock::new(data)).await else {
            return;
        };
        let mut dirs = vec![String::new()];
        while let Some(dir) = dirs.pop() {
            let entries = store.list(&dir).await.expect("a listed dictionary lists");
            for (name, kind) in entries {
                let key = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                match kind {
                    EntryKind::Dictionary => dirs.push(key),
                    EntryKind::Value => {
                        let size = store.size(&key).await.expect("a listed value has a size");
                        let whole = store.get(&key).await.expect("a listed value reads");
                        assert_eq!(whole.len() as u64, size);
                        let part = store.get_partial(&key, size / 2, 700).await.unwrap();
                        assert_eq!(&whole[(size / 2) as usize..][..part.len()], &part[..]);
                        store.digest(&key).await.unwrap();
                    }
                }
            }
        }
    });
}

/// LogStore::open on arbitrary device contents must refuse or accept
/// without panicking; an accepted store must serve what it lists (or say
/// `Corrupt`), and take a write and a compaction.
pub fn log_open(data: &[u8]) {
    run(async {
        let Ok(store) = LogStore::open("fuzz", SliceBlock::new(data)).await else {
            return;
        };
        let mut dirs = vec![String::new()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = store.list(&dir).await else {
                continue;
            };
            for (name, kind) in entries {
                let key = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                match kind {
                    EntryKind::Dictionary => dirs.push(key),
                    EntryKind::Value => match store.get(&key).await {
                        Ok(_) | Err(KvError::Corrupt) => {}
                        Err(e) => panic!("{key}: {e}"),
                    },
                }
            }
        }
        let _ = store.set("fuzz/key", b"value").await;
        let _ = store.compact().await;
    });
}
