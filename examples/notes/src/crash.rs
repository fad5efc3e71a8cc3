//! The crash-test mode: print the `crash/` keys, then make numbered changes and acknowledge each.
//!
//! Change number `n` touches key `crash/k{n % 8}`: it removes the key when
//! `n % 7 == 3` and otherwise sets it to [`value`]`(n)`, whose length
//! varies from 1 to 1000 bytes so that records span one to several
//! sectors. Before a change the mode prints `try set KEY N` or `try remove
//! KEY N`, after the store acknowledges it `ack set KEY N` or `ack remove
//! KEY N`, each as one console write. `--state` first prints `have KEY
//! VALUE` for every key under `crash/` and then `ready`; the churn ends
//! with `done N changes in U us`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use kiln_devices::{Console, KvError, KvRw, MonotonicClock};

use crate::{NotesError, store};

/// The dictionary the crash-test mode works in.
pub const DICT: &str = "crash";

/// Number of keys the changes rotate over.
pub const KEYS: u32 = 8;

/// The key change `n` touches.
pub fn key(n: u32) -> String {
    format!("{DICT}/k{}", n % KEYS)
}

/// Whether change `n` is a remove (otherwise it is a set of [`value`]).
pub fn is_remove(n: u32) -> bool {
    n % 7 == 3
}

/// The value change `n` sets: `n.` repeated, cut to 1 to 1000 bytes.
pub fn value(n: u32) -> Vec<u8> {
    let len = 1 + (n.wrapping_mul(37) % 1000) as usize;
    let unit = format!("{n}.");
    unit.bytes().cycle().take(len).collect()
}

/// Writes `line` and a newline in one console write, so that a kill never
/// leaves half a line that looks whole.
fn line(console: &impl Console, line: String) -> Result<(), NotesError> {
    let mut bytes = line.into_bytes();
    bytes.push(b'\n');
    console.write(&bytes)?;
    Ok(())
}

/// Prints the state if `state`, then makes `churn` changes numbered from
/// `from`.
pub async fn run(
    console: &impl Console,
    clock: &impl MonotonicClock,
    notes: &impl KvRw,
    state: bool,
    churn: u32,
    from: u32,
) -> Result<(), NotesError> {
    if state {
        let listed = match notes.list(DICT).await {
            Ok(names) => names,
            Err(KvError::NotFound) => Vec::new(),
            Err(e) => return Err(store("list")(e)),
        };
        for (name, _) in &listed {
            let key = format!("{DICT}/{name}");
            let bytes = notes.get(&key).await.map_err(store("read"))?;
            line(
                console,
                format!("have {key} {}", String::from_utf8_lossy(&bytes)),
            )?;
        }
        line(console, String::from("ready"))?;
    }
    let started = clock.now();
    for i in 0..churn {
        let n = from.wrapping_add(i);
        let key = key(n);
        if is_remove(n) {
            line(console, format!("try remove {key} {n}"))?;
            match notes.remove(&key).await {
                Ok(()) | Err(KvError::NotFound) => {}
                Err(e) => return Err(store("remove from")(e)),
            }
            line(console, format!("ack remove {key} {n}"))?;
        } else {
            line(console, format!("try set {key} {n}"))?;
            notes
                .set(&key, &value(n))
                .await
                .map_err(store("write to"))?;
            line(console, format!("ack set {key} {n}"))?;
        }
    }
    if churn > 0 {
        let micros = clock.now().saturating_duration_since(started).as_micros();
        line(console, format!("done {churn} changes in {micros} us"))?;
    }
    Ok(())
}
