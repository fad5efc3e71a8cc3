//! notes: a kiln unikernel that keeps short notes in a read-write store
//! across runs. `--add TEXT` stores a note, `--clear` removes them all;
//! every run then prints the notes, oldest first.
//!
//! Each note is one value, `notes/NNNNNNNN` (its number, zero-padded so
//! that names sort in order), so adding one is a single atomic `set`.
//!
//! A crash-test mode (module [`crash`]) drives the same store hard under
//! `crash/`: `--state` prints what it holds, `--churn N` makes `N` changes
//! and prints one line per acknowledged change, so that a test can kill
//! the unikernel at any moment and check what a restart finds.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use kiln_devices::{Console, ConsoleError, KvError, KvRw, MonotonicClock};

pub mod crash;

/// The dictionary holding the notes.
const NOTES: &str = "notes";

/// Why a run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotesError {
    /// The store refused an operation.
    #[error("cannot {action} the notes store: {source}")]
    Store {
        /// What was being done.
        action: &'static str,
        /// The store's error.
        source: KvError,
    },
    /// The store has no room for the note.
    #[error(
        "the notes store is full\nhint: remove the notes with --clear, or give the store a larger block device"
    )]
    Full,
    /// The console failed.
    #[error("cannot write to the console: {0}")]
    Console(#[from] ConsoleError),
}

fn store(action: &'static str) -> impl Fn(KvError) -> NotesError {
    move |source| match source {
        KvError::Full => NotesError::Full,
        source => NotesError::Store { action, source },
    }
}

/// Clears the notes if `clear`, adds `add` if it is not empty, then prints
/// every note with its number. With `state` or a non-zero `churn`, runs
/// the crash-test mode instead (see [`crash`]).
#[allow(clippy::too_many_arguments)] // one parameter per device and argument
pub async fn start(
    console: impl Console,
    clock: impl MonotonicClock,
    notes: impl KvRw,
    add: String,
    clear: bool,
    state: bool,
    churn: u32,
    from: u32,
) -> Result<(), NotesError> {
    if state || churn > 0 {
        return crash::run(&console, &clock, &notes, state, churn, from).await;
    }
    if clear {
        match notes.remove(NOTES).await {
            Ok(()) | Err(KvError::NotFound) => {}
            Err(e) => return Err(store("clear")(e)),
        }
    }
    let listed = match notes.list(NOTES).await {
        Ok(names) => names,
        Err(KvError::NotFound) => alloc::vec::Vec::new(),
        Err(e) => return Err(store("list")(e)),
    };
    if !add.is_empty() {
        let last = listed
            .iter()
            .filter_map(|(name, _)| name.parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        let key = format!("{NOTES}/{:08}", last.saturating_add(1));
        notes
            .set(&key, add.as_bytes())
            .await
            .map_err(store("add to"))?;
    }
    let listed = match notes.list(NOTES).await {
        Ok(names) => names,
        Err(KvError::NotFound) => alloc::vec::Vec::new(),
        Err(e) => return Err(store("list")(e)),
    };
    for (name, _) in &listed {
        let text = match notes.get(&format!("{NOTES}/{name}")).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            // A damaged note is reported, not fatal: the others still print.
            Err(KvError::Corrupt) => String::from("(damaged on the medium)"),
            Err(e) => return Err(store("read")(e)),
        };
        let number = name.trim_start_matches('0');
        console.logf(format_args!("{number}: {text}"))?;
    }
    console.logf(format_args!("{} notes", listed.len()))?;
    Ok(())
}
