//! LogStore::open on arbitrary device contents must refuse or accept
//! without panicking; an accepted store must serve what it lists (or say
//! `Corrupt`), and take a write and a compaction.
#![no_main]

use kiln_devices::{EntryKind, KvError, KvRo, KvRw};
use kiln_store::LogStore;
use kiln_store_fuzz::{SliceBlock, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
