//! The notes unikernel over a `LogStore` on a file: notes persist from one
//! run to the next, in order, and `--clear` removes them.

use std::cell::RefCell;

use kiln_devices::{Console, ConsoleError};
use kiln_store::LogStore;
use kiln_unix::FileBlock;

/// A console that keeps what is written.
#[derive(Default)]
struct Captured(RefCell<Vec<u8>>);

impl Console for &Captured {
    fn write(&self, bytes: &[u8]) -> Result<(), ConsoleError> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(())
    }
}

/// One run of the unikernel on the store in `path`: its output.
fn run(path: &str, add: &str, clear: bool) -> String {
    let platform = kiln_unix::platform();
    let block = FileBlock::open(platform, "data", path, 512).unwrap();
    let console = Captured::default();
    kiln_rt::block_on(platform, async {
        let store = LogStore::open("notes", block).await.unwrap();
        notes::start(
            &console,
            kiln_unix::MonotonicClock::new(),
            store,
            add.into(),
            clear,
            false,
            0,
            0,
        )
        .await
        .unwrap();
    });
    String::from_utf8(console.0.into_inner()).unwrap()
}

#[test]
fn notes_persist_across_runs() {
    // Removed when dropped, even if the test fails.
    let disk = tempfile::Builder::new()
        .prefix("kiln-notes-")
        .suffix(".img")
        .tempfile()
        .unwrap();
    disk.as_file().set_len(64 * 1024).unwrap();
    let path = disk.into_temp_path();
    let p = path.to_str().unwrap();
    assert_eq!(run(p, "", false), "0 notes\n");
    assert_eq!(run(p, "buy milk", false), "1: buy milk\n1 notes\n");
    assert_eq!(
        run(p, "call Ada", false),
        "1: buy milk\n2: call Ada\n2 notes\n"
    );
    assert_eq!(run(p, "", false), "1: buy milk\n2: call Ada\n2 notes\n");
    assert_eq!(run(p, "fresh start", true), "1: fresh start\n1 notes\n");
}
