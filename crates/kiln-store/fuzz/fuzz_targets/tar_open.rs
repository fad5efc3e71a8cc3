//! TarStore::open on arbitrary device contents must refuse or accept
//! without panicking, and an accepted archive must serve every key it
//! lists without panicking.
#![no_main]

use kiln_devices::{EntryKind, KvRo};
use kiln_store::TarStore;
use kiln_store_fuzz::{SliceBlock, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
