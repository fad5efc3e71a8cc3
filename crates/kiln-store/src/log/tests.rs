//! LogStore tests over an in-memory device: behaviour, crashes after every
//! sector write, corruption, sector sizes, a full device and compaction.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::future::Future;
use std::format;

use kiln_devices::{EntryKind, KvError, KvRo, KvRw};

use super::{LogError, LogStore};
use crate::mem::{Crash, MemBlock, run};

type Model = BTreeMap<String, Vec<u8>>;

/// Every value of the store, by walking its dictionaries.
async fn dump<S: KvRo>(store: &S) -> Result<Model, KvError> {
    let mut out = Model::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        for (name, kind) in store.list(&dir).await? {
            let key = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            match kind {
                EntryKind::Dictionary => dirs.push(key),
                EntryKind::Value => {
                    let v = store.get(&key).await?.into_owned();
                    out.insert(key, v);
                }
            }
        }
    }
    Ok(out)
}

#[derive(Clone)]
enum Op {
    Set(String, Vec<u8>),
    Remove(String),
}

impl core::fmt::Debug for Op {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Op::Set(k, v) => write!(f, "set {k} ({} bytes)", v.len()),
            Op::Remove(k) => write!(f, "remove {k}"),
        }
    }
}

fn apply(model: &mut Model, op: &Op) {
    match op {
        Op::Set(k, v) => {
            model.insert(k.clone(), v.clone());
        }
        Op::Remove(k) => model.retain(|m, _| !super::under(m, k)),
    }
}

/// A deterministic generator (xorshift64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A write-heavy workload over a few keys, with values from empty to
/// several sectors, overwrites, and removals of keys and of dictionaries.
fn workload(seed: u64, ops: usize, max_value: u64) -> Vec<Op> {
    let mut rng = Rng(seed);
    let keys = ["a", "b", "dir/x", "dir/y", "dir/sub/z", "long/key/name"];
    (0..ops)
        .map(|i| {
            let key = keys[rng.below(keys.len() as u64) as usize].to_string();
            match rng.below(10) {
                0 => Op::Remove(key),
                1 => Op::Remove("dir".into()),
                _ => {
                    let len = rng.below(max_value + 1) as usize;
                    let byte = i as u8;
                    Op::Set(key, vec![byte; len])
                }
            }
        })
        .collect()
}

async fn perform<B: kiln_devices::Block>(store: &LogStore<B>, op: &Op) -> Result<(), KvError> {
    match op {
        Op::Set(k, v) => store.set(k, v).await,
        Op::Remove(k) => match store.remove(k).await {
            Err(KvError::NotFound) => Ok(()),
            other => other,
        },
    }
}

#[test]
fn values_dictionaries_and_reopen() {
    run(async {
        let block = MemBlock::new(512, 64);
        let store = LogStore::open("data", &block).await.unwrap();
        assert_eq!(store.exists("").await, Ok(Some(EntryKind::Dictionary)));
        assert_eq!(store.list("").await, Ok(vec![]));
        store.set("/notes//today", b"milk").await.unwrap();
        store.set("notes/big", &[7u8; 2000]).await.unwrap();
        store.set("top", b"").await.unwrap();
        assert_eq!(store.get("notes/today").await.unwrap().as_ref(), b"milk");
        assert_eq!(
            store.get("notes/big").await.unwrap().as_ref(),
            &[7u8; 2000][..]
        );
        assert_eq!(store.get("top").await.unwrap().as_ref(), b"");
        assert_eq!(store.size("notes/big").await, Ok(2000));
        assert_eq!(
            store
                .get_partial("notes/big", 470, 30)
                .await
                .unwrap()
                .as_ref(),
            &[7u8; 30][..]
        );
        assert_eq!(
            store
                .get_partial("notes/today", 2, 100)
                .await
                .unwrap()
                .as_ref(),
            b"lk"
        );
        assert_eq!(
            store
                .get_partial("notes/today", 4, 1)
                .await
                .unwrap()
                .as_ref(),
            b""
        );
        assert_eq!(
            store.get_partial("notes/today", 5, 1).await,
            Err(KvError::OutOfRange)
        );
        assert_eq!(
            store.list("").await.unwrap(),
            vec![
                ("notes".into(), EntryKind::Dictionary),
                ("top".into(), EntryKind::Value)
            ]
        );
        assert_eq!(store.list("top").await, Err(KvError::IsValue));
        assert_eq!(store.list("nothing").await, Err(KvError::NotFound));
        assert_eq!(store.get("notes").await, Err(KvError::IsDictionary));
        assert_eq!(store.get("nothing").await, Err(KvError::NotFound));
        assert_eq!(store.set("notes", b"x").await, Err(KvError::IsDictionary));
        assert_eq!(store.set("top/below", b"x").await, Err(KvError::IsValue));
        assert_eq!(store.set("", b"x").await, Err(KvError::IsDictionary));
        assert_eq!(store.set("a/../b", b"x").await, Err(KvError::InvalidKey));
        assert_eq!(
            store.set(&"k".repeat(256), b"x").await,
            Err(KvError::InvalidKey)
        );
        assert_eq!(
            store.digest("notes/today").await.unwrap().to_string(),
            crate::tests::sha256_hex(b"milk")
        );
        store.set("notes/today", b"eggs").await.unwrap();
        assert_eq!(
            store.digest("notes/today").await.unwrap().to_string(),
            crate::tests::sha256_hex(b"eggs")
        );
        drop(store);

        let store = LogStore::open("data", &block).await.unwrap();
        assert_eq!(store.get("notes/today").await.unwrap().as_ref(), b"eggs");
        assert_eq!(
            store.digest("notes/big").await.unwrap().to_string(),
            crate::tests::sha256_hex(&[7u8; 2000])
        );
        store.remove("notes").await.unwrap();
        assert_eq!(store.exists("notes/big").await, Ok(None));
        assert_eq!(store.remove("notes").await, Err(KvError::NotFound));
        drop(store);
        let store = LogStore::open("data", &block).await.unwrap();
        assert_eq!(
            dump(&store).await.unwrap().keys().collect::<Vec<_>>(),
            ["top"]
        );
    });
}

/// Runs `ops` on a fresh device that crashes at sector write `n`, then
/// reopens what the medium kept and checks: every acknowledged operation
/// is there, and the one in flight is either wholly there or wholly not.
/// Returns whether the crash happened.
fn crash_at(sector_size: u32, sectors: u64, ops: &[Op], n: usize, mode: Crash) -> bool {
    run(async {
        let block = MemBlock::new(sector_size, sectors);
        block.crash_after(n, mode);
        let mut model = Model::new();
        let mut in_flight = None;
        if let Ok(store) = LogStore::open("data", &block).await {
            for op in ops {
                match perform(&store, op).await {
                    Ok(()) => apply(&mut model, op),
                    Err(KvError::Full) => {}
                    Err(KvError::Block(_)) => {
                        in_flight = Some(op.clone());
                        break;
                    }
                    Err(e) => panic!("{op:?} failed: {e}"),
                }
            }
        }
        let crashed = block.crashed();
        let after = MemBlock::from_image(sector_size, block.image());
        let store = LogStore::open("data", &after)
            .await
            .unwrap_or_else(|e| panic!("reopen after a crash at write {n} ({mode:?}): {e}"));
        let found = dump(&store).await.unwrap();
        let mut with = model.clone();
        if let Some(op) = &in_flight {
            apply(&mut with, op);
        }
        assert!(
            found == model || found == with,
            "crash at write {n} ({mode:?}): store has {:?}, expected {:?} or, with {:?}, {:?}",
            found.keys().collect::<Vec<_>>(),
            model.keys().collect::<Vec<_>>(),
            in_flight,
            with.keys().collect::<Vec<_>>(),
        );
        // The store goes on working after recovery, and a torn tail is
        // overwritten cleanly.
        store.set("after", b"crash").await.unwrap();
        drop(store);
        let store = LogStore::open("data", &after).await.unwrap();
        let again = dump(&store).await.unwrap();
        assert_eq!(again.get("after").map(Vec::as_slice), Some(&b"crash"[..]));
        assert_eq!(
            again.len(),
            found.len() + usize::from(!found.contains_key("after"))
        );
        crashed
    })
}

fn total_writes(sector_size: u32, sectors: u64, ops: &[Op]) -> usize {
    run(async {
        let block = MemBlock::new(sector_size, sectors);
        let store = LogStore::open("data", &block).await.unwrap();
        for op in ops {
            match perform(&store, op).await {
                Ok(()) | Err(KvError::Full) => {}
                Err(e) => panic!("{op:?} failed: {e}"),
            }
        }
        assert!(
            store.usage().await.unwrap().compactions > 0,
            "the workload must compact"
        );
        block.writes()
    })
}

fn crash_everywhere(sector_size: u32, sectors: u64, ops: &[Op]) {
    let total = total_writes(sector_size, sectors, ops);
    for mode in [
        Crash::DropUnflushed,
        Crash::KeepOrdered,
        Crash::TearLast,
        Crash::Reorder,
    ] {
        for n in 0..total {
            assert!(
                crash_at(sector_size, sectors, ops, n, mode),
                "write {n} must crash"
            );
        }
        assert!(!crash_at(sector_size, sectors, ops, total, mode));
    }
}

#[test]
fn crash_after_every_sector_write_512() {
    // 64 sectors: regions of 31 record sectors, so the workload compacts
    // several times, and some values span four sectors.
    crash_everywhere(512, 64, &workload(1, 60, 1500));
}

#[test]
fn crash_after_every_sector_write_4096() {
    crash_everywhere(4096, 32, &workload(2, 40, 5000));
}

#[test]
fn torn_tail_record_is_dropped() {
    run(async {
        let block = MemBlock::new(512, 64);
        let store = LogStore::open("data", &block).await.unwrap();
        store.set("k", b"old").await.unwrap();
        store.set("k", &[9u8; 1200]).await.unwrap();
        drop(store);
        // Sectors 0 and 1 hold the region header; `old` is in sector 2
        // and the last record in sectors 3..6: damage its last sector.
        block.flip(5 * 512 + 100, 0x40);
        let store = LogStore::open("data", &block).await.unwrap();
        assert_eq!(store.get("k").await.unwrap().as_ref(), b"old");
    });
}

#[test]
fn corrupt_value_in_the_middle_is_reported_not_returned() {
    run(async {
        let block = MemBlock::new(512, 64);
        let store = LogStore::open("data", &block).await.unwrap();
        store.set("k", &[1u8; 1200]).await.unwrap(); // sectors 2..5
        store.set("other", b"fine").await.unwrap(); // sector 5
        drop(store);
        block.flip(3 * 512 + 300, 0x01);
        let store = LogStore::open("data", &block).await.unwrap();
        assert_eq!(store.get("k").await, Err(KvError::Corrupt));
        assert_eq!(store.get_partial("k", 0, 10).await, Err(KvError::Corrupt));
        assert_eq!(store.get("other").await.unwrap().as_ref(), b"fine");
        // Compaction keeps the key lost rather than dropping it silently.
        store.compact().await.unwrap();
        assert_eq!(store.get("k").await, Err(KvError::Corrupt));
        drop(store);
        let store = LogStore::open("data", &block).await.unwrap();
        assert_eq!(store.get("k").await, Err(KvError::Corrupt));
        assert_eq!(store.get("other").await.unwrap().as_ref(), b"fine");
        store.set("k", b"new").await.unwrap();
        assert_eq!(store.get("k").await.unwrap().as_ref(), b"new");
    });
}

#[test]
fn corruption_found_after_open_is_reported() {
    run(async {
        let block = MemBlock::new(512, 64);
        let store = LogStore::open("data", &block).await.unwrap();
        store.set("k", &[1u8; 1200]).await.unwrap();
        block.flip(3 * 512 + 10, 0x80);
        assert_eq!(store.get("k").await, Err(KvError::Corrupt));
        // The digest was taken of the value as set; the intact first
        // sector still reads.
        assert_eq!(
            store.digest("k").await.unwrap().to_string(),
            crate::tests::sha256_hex(&[1u8; 1200])
        );
        assert_eq!(
            store.get_partial("k", 0, 10).await.unwrap().as_ref(),
            &[1u8; 10][..]
        );
    });
}

#[test]
fn damaged_record_start_with_later_records_refuses_to_open() {
    run(async {
        let block = MemBlock::new(512, 64);
        let store = LogStore::open("data", &block).await.unwrap();
        store.set("a", b"1").await.unwrap(); // sector 2
        store.set("b", b"2").await.unwrap(); // sector 3
        store.set("c", b"3").await.unwrap(); // sector 4
        drop(store);
        block.flip(3 * 512 + 40, 0x02);
        match LogStore::open("data", &block).await {
            Err(LogError::Corrupt { sector: 3, .. }) => {}
            other => panic!("expected a corrupt-log error, got {other:?}"),
        }
    });
}

#[test]
fn full_store_refuses_then_recovers_room() {
    run(async {
        let block = MemBlock::new(512, 24); // regions of 10 record sectors
        let store = LogStore::open("data", &block).await.unwrap();
        let mut stored = 0;
        let err = loop {
            match store.set(&format!("k{stored}"), &[stored as u8; 900]).await {
                Ok(()) => stored += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err, KvError::Full);
        assert_eq!(stored, 5, "five 2-sector records fit in 10 sectors");
        // Nothing was lost by the refused write.
        for i in 0..stored {
            assert_eq!(
                store.get(&format!("k{i}")).await.unwrap().as_ref(),
                &[i as u8; 900][..]
            );
        }
        assert_eq!(store.set("huge", &[0u8; 20_000]).await, Err(KvError::Full));
        store.remove("k0").await.unwrap();
        store.set("new", &[1u8; 900]).await.unwrap();
        drop(store);
        let store = LogStore::open("data", &block).await.unwrap();
        assert_eq!(dump(&store).await.unwrap().len(), 5);
    });
}

#[test]
fn compaction_keeps_everything() {
    run(async {
        let block = MemBlock::new(4096, 64);
        let store = LogStore::open("data", &block).await.unwrap();
        let mut model = Model::new();
        for op in workload(7, 400, 9000) {
            perform(&store, &op).await.unwrap();
            apply(&mut model, &op);
        }
        let usage = store.usage().await.unwrap();
        assert!(usage.compactions >= 10, "{usage:?}");
        assert_eq!(dump(&store).await.unwrap(), model);
        drop(store);
        let store = LogStore::open("data", &block).await.unwrap();
        assert_eq!(dump(&store).await.unwrap(), model);
    });
}

#[test]
fn foreign_data_and_other_geometry_are_refused() {
    run(async {
        let block = MemBlock::from_image(512, vec![0x5a; 512 * 16]);
        assert!(matches!(
            LogStore::open("data", &block).await,
            Err(LogError::NotAStore { .. })
        ));
        let block = MemBlock::new(512, 64);
        LogStore::open("data", &block).await.unwrap();
        let as_4096 = MemBlock::from_image(4096, block.image());
        assert!(matches!(
            LogStore::open("data", &as_4096).await,
            Err(LogError::Geometry { .. })
        ));
        let tiny = MemBlock::new(512, 5);
        assert!(matches!(
            LogStore::open("data", &tiny).await,
            Err(LogError::TooSmall { .. })
        ));
        // `format` erases whatever was there.
        let block = MemBlock::from_image(512, vec![0x5a; 512 * 16]);
        let store = LogStore::format("data", &block).await.unwrap();
        store.set("x", b"y").await.unwrap();
        drop(store);
        let store = LogStore::open("data", &block).await.unwrap();
        assert_eq!(dump(&store).await.unwrap().len(), 1);
    });
}

/// A device whose every request first yields to the other tasks, so that
/// concurrent store operations would interleave at every device request.
struct Yielding(MemBlock);

impl kiln_devices::Block for Yielding {
    fn info(&self) -> kiln_devices::BlockInfo {
        self.0.info()
    }
    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), kiln_devices::BlockError> {
        kiln_rt::yield_now().await;
        self.0.read(sector, buf).await
    }
    async fn write(&self, sector: u64, buf: &[u8]) -> Result<(), kiln_devices::BlockError> {
        kiln_rt::yield_now().await;
        self.0.write(sector, buf).await
    }
    async fn flush(&self) -> Result<(), kiln_devices::BlockError> {
        kiln_rt::yield_now().await;
        self.0.flush().await
    }
}

#[test]
fn concurrent_operations_are_serialized() {
    use alloc::rc::Rc;
    run(async {
        let store = Rc::new(
            LogStore::open("data", Yielding(MemBlock::new(512, 128)))
                .await
                .unwrap(),
        );
        let value = |t: usize, i: usize| vec![t as u8 ^ i as u8; 100 + (i * 37) % 800];
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                kiln_rt::spawn(async move {
                    for i in 0..30 {
                        let key = format!("t{t}/k{}", i % 5);
                        store.set(&key, &value(t, i)).await.unwrap();
                        assert_eq!(store.get(&key).await.unwrap().into_owned(), value(t, i));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        assert!(store.usage().await.unwrap().compactions > 0);
        let mut model = Model::new();
        for t in 0..4 {
            for i in 25..30 {
                model.insert(format!("t{t}/k{}", i % 5), value(t, i));
            }
        }
        assert_eq!(dump(&*store).await.unwrap(), model);
        let image = MemBlock::from_image(512, store.block().0.image());
        let reopened = LogStore::open("data", &image).await.unwrap();
        assert_eq!(dump(&reopened).await.unwrap(), model);
    });
}

/// Every value under `dir`, walking past errors: `Ok` values and the
/// errors met.
async fn walk<S: KvRo>(store: &S) -> Vec<(String, Result<Vec<u8>, KvError>)> {
    let mut out = Vec::new();
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
                EntryKind::Value => {
                    let got = store.get(&key).await.map(|v| v.into_owned());
                    out.push((key, got));
                }
            }
        }
    }
    out
}

#[test]
fn random_damage_never_returns_wrong_data() {
    run(async {
        // A store with some history: every value each key ever had.
        let block = MemBlock::new(512, 96);
        let store = LogStore::open("data", &block).await.unwrap();
        let mut history: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for op in workload(11, 80, 1200) {
            perform(&store, &op).await.unwrap();
            if let Op::Set(k, v) = op {
                history.entry(k).or_default().push(v);
            }
        }
        drop(store);
        let image = block.image();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut opened, mut refused, mut corrupt) = (0, 0, 0);
        for _ in 0..400 {
            let mut damaged = image.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(damaged.len() as u64) as usize;
                damaged[at] ^= 1 << rng.below(8);
            }
            let device = MemBlock::from_image(512, damaged);
            let Ok(store) = LogStore::open("data", &device).await else {
                refused += 1;
                continue;
            };
            opened += 1;
            for (key, got) in walk(&store).await {
                match got {
                    Ok(v) => assert!(
                        history.get(&key).is_some_and(|h| h.contains(&v)),
                        "{key}: a value never written ({} bytes)",
                        v.len()
                    ),
                    Err(KvError::Corrupt) => corrupt += 1,
                    Err(e) => panic!("{key}: {e}"),
                }
            }
        }
        std::eprintln!(
            "damaged stores: {opened} opened, {refused} refused, {corrupt} corrupt reads"
        );
        assert!(opened > 0 && corrupt > 0);
    });
}

#[test]
fn one_damaged_header_copy_is_survived_and_repaired() {
    run(async {
        let block = MemBlock::new(512, 64);
        let store = LogStore::open("data", &block).await.unwrap();
        store.set("k", b"v1").await.unwrap();
        store.compact().await.unwrap(); // region 1 (sectors 32..) is active
        store.set("k", b"v2").await.unwrap();
        drop(store);
        for copy in [32, 33] {
            block.flip(copy * 512 + 9, 0x10);
            // The other copy keeps region 1 active: no fallback to the
            // older region 0, whose `k` is v1.
            let store = LogStore::open("data", &block).await.unwrap();
            assert_eq!(store.get("k").await.unwrap().as_ref(), b"v2");
            drop(store);
            // Opening rewrote the damaged copy.
            let image = block.image();
            let at = copy * 512;
            assert!(super::header(&image[at..at + 512]).is_some());
        }
    });
}

/// A device that reports the `n`th sector write as failed, having done it
/// (`applied`) or not; every other request succeeds.
struct FailOnce {
    inner: MemBlock,
    fail_at: usize,
    applied: bool,
    writes: core::cell::Cell<usize>,
}

impl kiln_devices::Block for FailOnce {
    fn info(&self) -> kiln_devices::BlockInfo {
        self.inner.info()
    }
    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), kiln_devices::BlockError> {
        self.inner.read(sector, buf).await
    }
    async fn write(&self, sector: u64, buf: &[u8]) -> Result<(), kiln_devices::BlockError> {
        let size = self.inner.info().sector_size as usize;
        let first = self.writes.get();
        let count = buf.len() / size;
        self.writes.set(first + count);
        if (first..first + count).contains(&self.fail_at) {
            if self.applied {
                self.inner.write(sector, buf).await?;
            }
            return Err(kiln_devices::BlockError::Io(5));
        }
        self.inner.write(sector, buf).await
    }
    async fn flush(&self) -> Result<(), kiln_devices::BlockError> {
        self.inner.flush().await
    }
}

#[test]
fn failed_writes_leave_memory_and_device_agreeing() {
    let ops = workload(5, 50, 1500);
    let total = total_writes(512, 64, &ops);
    for applied in [false, true] {
        for fail_at in 0..total {
            run(async {
                let block = FailOnce {
                    inner: MemBlock::new(512, 64),
                    fail_at,
                    applied,
                    writes: core::cell::Cell::new(0),
                };
                // The failure may hit formatting: then open again.
                let store = match LogStore::open("data", &block).await {
                    Ok(store) => store,
                    Err(_) => LogStore::open("data", &block).await.unwrap(),
                };
                let (mut without, mut with) = (Model::new(), Model::new());
                for op in &ops {
                    match perform(&store, op).await {
                        Ok(()) => {
                            apply(&mut without, op);
                            apply(&mut with, op);
                        }
                        Err(KvError::Block(_)) => apply(&mut with, op),
                        Err(e) => panic!("{op:?}: {e}"),
                    }
                }
                let found = dump(&store).await.unwrap();
                assert!(
                    found == without || found == with,
                    "write {fail_at} failed (applied: {applied}): unexpected contents"
                );
                let reopened = MemBlock::from_image(512, block.inner.image());
                let on_device = dump(&LogStore::open("data", &reopened).await.unwrap())
                    .await
                    .unwrap();
                assert!(
                    on_device == found,
                    "write {fail_at} failed (applied: {applied}): the device holds {:?}, the store served {:?}",
                    on_device.keys().collect::<Vec<_>>(),
                    found.keys().collect::<Vec<_>>()
                );
            });
        }
    }
}

#[test]
fn cancelled_operations_leave_memory_and_device_agreeing() {
    use core::pin::pin;
    use core::task::{Context, Waker};
    // A store whose next big `set` must compact.
    let image = run(async {
        let block = MemBlock::new(512, 40); // regions of 18 record sectors
        let store = LogStore::open("data", &block).await.unwrap();
        for i in 0..8 {
            store.set(&format!("k{i}"), &[i as u8; 900]).await.unwrap();
        }
        store.set("k0", &[9u8; 100]).await.unwrap();
        block.image()
    });
    let mut completed = false;
    for polls in 0.. {
        let block = Yielding(MemBlock::from_image(512, image.clone()));
        let store = run(LogStore::open("data", &block)).unwrap();
        {
            let mut set = pin!(store.set("k1", &[7u8; 1400]));
            let mut cx = Context::from_waker(Waker::noop());
            for _ in 0..polls {
                if set.as_mut().poll(&mut cx).is_ready() {
                    completed = true;
                    break;
                }
            }
            // Dropped here, at every point of the operation in turn.
        }
        run(async {
            assert_eq!(store.get("k2").await.unwrap().as_ref(), &[2u8; 900][..]);
            let k1 = store.get("k1").await.unwrap().into_owned();
            assert!(
                k1 == [1u8; 900] || k1 == [7u8; 1400],
                "k1 half-set after {polls} polls"
            );
            store.set("after", b"x").await.unwrap();
            let found = dump(&store).await.unwrap();
            let reopened = MemBlock::from_image(512, block.0.image());
            let on_device = dump(&LogStore::open("data", &reopened).await.unwrap())
                .await
                .unwrap();
            assert!(
                on_device == found,
                "cancelled after {polls} polls: device and store differ"
            );
        });
        if completed {
            assert!(run(store.usage()).unwrap().compactions > 0 || polls > 0);
            break;
        }
        assert!(polls < 10_000, "the set never completed");
    }
}
