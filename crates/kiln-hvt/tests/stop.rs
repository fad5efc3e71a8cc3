//! kiln's STOP extension under the `kiln-hvt` binary, with hand-assembled
//! guests: one that enables it sees the stop request at once, even blocked
//! in a 10 s POLL; one that does not (any Solo5 guest) gets solo5-hvt's
//! behaviour, `Exiting on signal N` and exit status 1; a second signal is
//! that hard stop too; a stop word outside guest memory stops the guest.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout};
use std::time::{Duration, Instant};

use kiln_testsupport::process::{ChildGuard, ended_within, signal};

use kiln_abi::hvt_ext::KILN_STOP_ENABLE_NR;
use support::{Guest, TempDir, kvm_available};

/// POLL's hypercall number.
const POLL: u16 = 3;
/// How long the guests' POLL waits: far longer than any bound below, so
/// that an answer within the bound means the signal cut the wait short.
const POLL_NANOS: u64 = 10_000_000_000;
/// How soon after the signal the tender must have ended.
const BOUND: Duration = Duration::from_secs(2);

/// A guest that optionally enables the extension with its word at `word`,
/// prints `ready`, then POLLs (10 s each) until its word is non-zero, and
/// then prints `stop seen` and halts with 0.
fn polling_guest(enable: bool) -> Guest {
    let mut g = Guest::new();
    let word = g.data(&[0; 8]);
    let enable_arg = g.words(&[word]);
    let poll_arg = g.words(&[POLL_NANOS, 0, 0]);
    if enable {
        g.hypercall(KILN_STOP_ENABLE_NR, enable_arg);
    }
    g.puts(b"ready\n");
    let top = g.here();
    g.hypercall(POLL, poll_arg);
    g.cmp_dword(word, 0);
    let back = g.jump(&[0x0f, 0x84]);
    g.patch(back, top);
    g.puts(b"stop seen\n").halt(0);
    g
}

/// Starts the guest and waits for its `ready` line.
fn start(dir: &TempDir, guest: &Guest) -> (Child, BufReader<ChildStdout>) {
    let mut child = guest.launch(dir, "guest.hvt", &[]).spawn();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, out)
}

/// Waits for `child` at most `limit` after `since`; kills it and fails
/// beyond. Returns its exit code, stdout rest and stderr.
fn end(child: Child, out: BufReader<ChildStdout>, since: Instant) -> (i32, String, String) {
    // On a panic the guard kills and reaps the tender.
    let (status, rest, err) = ended_within(
        ChildGuard(child),
        out,
        BOUND.saturating_sub(since.elapsed()),
    )
    .unwrap()
    .unwrap_or_else(|| panic!("kiln-hvt did not end within {BOUND:?} of the signal"));
    let code = status
        .code()
        .unwrap_or_else(|| panic!("kiln-hvt ended by a signal: {status:?}\n{err}"));
    (code, rest, err)
}

#[test]
fn an_enabled_guest_sees_the_stop_in_its_wait_and_exits_cleanly() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (child, out) = start(&dir, &polling_guest(true));
        // The guest is (or is about to be) blocked in its 10 s POLL.
        std::thread::sleep(Duration::from_millis(100));
        let since = Instant::now();
        signal(child.id(), sig);
        let (code, rest, err) = end(child, out, since);
        assert_eq!((code, rest.as_str()), (0, "stop seen\n"), "{err}");
        assert!(err.is_empty(), "{err}");
    }
}

#[test]
fn a_guest_that_does_not_enable_it_gets_solo5_hvts_exit() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    for (sig, text) in [
        (libc::SIGTERM, "kiln-hvt: exiting on signal 15 (SIGTERM)\n"),
        (libc::SIGINT, "kiln-hvt: exiting on signal 2 (SIGINT)\n"),
    ] {
        let (child, out) = start(&dir, &polling_guest(false));
        let since = Instant::now();
        signal(child.id(), sig);
        let (code, rest, err) = end(child, out, since);
        assert_eq!((code, rest.as_str(), err.as_str()), (1, "", text));
    }
}

#[test]
fn a_second_signal_is_a_hard_stop() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    // Enables the extension, then POLLs forever without looking at its
    // word: the request reaches it and nothing happens.
    let mut g = Guest::new();
    let word = g.data(&[0; 8]);
    let enable_arg = g.words(&[word]);
    let poll_arg = g.words(&[POLL_NANOS, 0, 0]);
    g.hypercall(KILN_STOP_ENABLE_NR, enable_arg);
    g.puts(b"ready\n");
    let top = g.here();
    g.hypercall(POLL, poll_arg);
    let back = g.jump(&[0xe9]);
    g.patch(back, top);
    let (child, out) = start(&dir, &g);
    signal(child.id(), libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
            .is_ok_and(|s| !s.contains(") Z ")),
        "the first SIGTERM ended the tender"
    );
    let since = Instant::now();
    signal(child.id(), libc::SIGTERM);
    let (code, _, err) = end(child, out, since);
    assert_eq!(
        (code, err.as_str()),
        (1, "kiln-hvt: exiting on signal 15 (SIGTERM)\n")
    );
}

#[test]
fn a_stop_word_outside_guest_memory_stops_the_guest() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    for word in [0x7fff_fff8u64, u64::MAX - 3] {
        let mut g = Guest::new();
        let arg = g.words(&[word]);
        g.hypercall(KILN_STOP_ENABLE_NR, arg).halt(0);
        let (run, _) = support::run_guest(&dir, &g, &["--mem=8"]);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(
            run.stderr.starts_with(
                "kiln-hvt: error: guest stopped: stop enable hypercall: bad word address"
            ),
            "{}",
            run.stderr
        );
    }
    // The guest's code is read-only: not a stop word either.
    let mut g = Guest::new();
    let arg = g.words(&[support::CODE_BASE]);
    g.hypercall(KILN_STOP_ENABLE_NR, arg).halt(0);
    let (run, _) = support::run_guest(&dir, &g, &[]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("is read-only"), "{}", run.stderr);
}

#[test]
fn hidden_extensions_make_the_enable_port_an_error() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    let word = g.data(&[0; 8]);
    let arg = g.words(&[word]);
    g.hypercall(KILN_STOP_ENABLE_NR, arg).halt(0);
    let run = g
        .launch(&dir, "guest.hvt", &[])
        .env("KILN_HVT_NO_EXTENSIONS", "1")
        .run();
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("not a hypercall"), "{}", run.stderr);
}
