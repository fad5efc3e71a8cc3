//! End to end on KVM: builds the hand-written hello stand-in
//! (`tests/hello-hvt-handmade`) for `x86_64-unknown-none` and the
//! `kiln-hvt` tender, then runs the image under the tender and checks its
//! output and exit status, including deliberate panics and faults.
//!
//! Needs `/dev/kvm`: without it each test says loudly that it is skipped,
//! and fails instead when `CI=true`.

mod support;

use kiln_testsupport::skip::kvm_or_skip;
use support::{Run, Target, built, check_clocks_sleep_and_random, run_image};

/// Runs the hello image under the tender with guest arguments `args`.
fn run(args: &[&str]) -> Run {
    run_image(Target::Hvt, &[], &built(Target::Hvt).image, args)
}

/// Asserts that `run` aborted (255) after an exception report whose first
/// line contains `headline`, followed by a register dump.
fn assert_exception(run: &Run, headline: &str) {
    run.assert_code(255);
    let mut lines = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("kiln: exception"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no exception report in:\n{}", run.stdout));
    assert!(first.contains(headline), "{first}");
    // The headline also reaches the tender, as the abort message.
    let mnemonic = first.split_whitespace().nth(2).unwrap_or("?");
    assert!(
        run.stderr.contains(&format!("exception {mnemonic} (")),
        "the tender did not get the abort message:\n{}",
        run.stderr
    );
    let dump: Vec<&str> = lines.take(8).collect();
    for register in ["rax", "rsp", "rip", "rflags", "cr2", "error"] {
        assert!(
            dump.iter()
                .any(|l| l.split_whitespace().any(|w| w == register)),
            "register {register} missing from the dump:\n{}",
            dump.join("\n")
        );
    }
}

#[test]
fn hello_prints_and_exits_zero() {
    if !kvm_or_skip("hello_prints_and_exits_zero") {
        return;
    }
    let r = run(&["--times", "2"]);
    assert_eq!(
        r.stdout, "hello from kiln on hvt (1/2)\nhello from kiln on hvt (2/2)\n",
        "stderr:\n{}",
        r.stderr
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
}

#[test]
fn the_exit_code_is_the_unikernels() {
    if !kvm_or_skip("the_exit_code_is_the_unikernels") {
        return;
    }
    assert_eq!(run(&["--exit", "7"]).code, Some(7));
    assert_eq!(run(&["--exit", "0"]).code, Some(0));
    let r = run(&["--fail"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stdout, "error: disk on fire\n");
    let r = run(&["--no-such-flag"]);
    assert_eq!(r.code, Some(2));
    assert_eq!(r.stdout, "error: unknown argument '--no-such-flag'\n");
}

#[test]
fn a_panic_aborts_with_its_message_and_location() {
    if !kvm_or_skip("a_panic_aborts_with_its_message_and_location") {
        return;
    }
    let r = run(&["--panic"]);
    assert_eq!(r.code, Some(255), "stderr:\n{}", r.stderr);
    assert!(
        r.stdout.starts_with("kiln: panicked at src/main.rs:")
            && r.stdout.contains(": deliberate panic, times = 3\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("panicked at src/main.rs:"),
        "the tender did not get the abort message:\n{}",
        r.stderr
    );
}

#[test]
fn a_null_page_write_aborts_with_a_register_dump() {
    if !kvm_or_skip("a_null_page_write_aborts_with_a_register_dump") {
        return;
    }
    let r = run(&["--null-write"]);
    assert_exception(&r, "#PF (page fault, vector 14) at rip 0x0000000000");
    assert!(
        r.stdout.contains(
            "write of address 0x0, page not present; hint: this is a null pointer dereference"
        ),
        "{}",
        r.stdout
    );
    // The unikernel runs at CPL 3 (kiln's user code and stack selectors),
    // after the few boot instructions that need CPL 0.
    for selector in ["cs 0x0000000000000033", "ss 0x000000000000002b"] {
        assert!(r.stdout.contains(selector), "{selector}:\n{}", r.stdout);
    }
}

#[test]
fn a_write_to_read_only_memory_aborts_with_a_register_dump() {
    if !kvm_or_skip("a_write_to_read_only_memory_aborts_with_a_register_dump") {
        return;
    }
    // Error code 0x7: present, write, user mode (the unikernel runs at
    // CPL 3).
    let r = run(&["--ro-write"]);
    assert_exception(&r, "error code 0x7: write of address 0x");
    assert!(
        r.stdout.contains(", protection violation\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn executing_data_and_overflowing_the_stack_fault() {
    if !kvm_or_skip("executing_data_and_overflowing_the_stack_fault") {
        return;
    }
    let r = run(&["--exec-data"]);
    // Error code 0x15: present, user mode, instruction fetch.
    assert_exception(&r, "error code 0x15: instruction fetch of address");
    let r = run(&["--stack-overflow"]);
    assert_exception(&r, "page not present; hint: this is a stack overflow");
}

#[test]
fn running_out_of_memory_aborts_with_a_message() {
    if !kvm_or_skip("running_out_of_memory_aborts_with_a_message") {
        return;
    }
    let r = run(&["--oom"]);
    assert_eq!(r.code, Some(255), "stderr:\n{}", r.stderr);
    assert!(
        r.stdout
            .starts_with("kiln: out of memory: cannot allocate 16777216 bytes (align 1)"),
        "{}",
        r.stdout
    );
}

#[test]
fn clocks_sleep_and_random_work() {
    if !kvm_or_skip("clocks_sleep_and_random_work") {
        return;
    }
    check_clocks_sleep_and_random(Target::Hvt);
}

#[test]
fn net_and_block_devices_work() {
    if !kvm_or_skip("net_and_block_devices_work") {
        return;
    }
    // Under kiln-hvt the net device goes through NET_EXCHANGE; the last
    // echo, queued when the unikernel returns, is sent at exit. The
    // block device's eight reads issued together go in one BLOCK_EXCHANGE.
    support::check_net_and_block(Target::Hvt, &[], "kiln exchange", 1);
}

/// Under kiln-hvt, 100 small frames waiting for the guest arrive in one
/// exit: NET_EXCHANGE_AREA packs them into one receive area (NET_EXCHANGE's
/// table of buffers names at most 64 of them: two exits).
#[test]
fn a_burst_of_small_frames_takes_one_exit() {
    if !kvm_or_skip("a_burst_of_small_frames_takes_one_exit") {
        return;
    }
    support::check_net_and_block_burst(Target::Hvt, &[], "kiln exchange", 1, Some((100, 1)));
}

/// With kiln's extension hidden, as under Solo5's tender, the guest finds
/// no CPUID signature and uses NETREAD, NETWRITE and POLL.
#[test]
fn net_and_block_devices_work_without_kiln_extensions() {
    if !kvm_or_skip("net_and_block_devices_work_without_kiln_extensions") {
        return;
    }
    // kiln-hvt still offers Solo5's net ring, which kiln's guests leave
    // alone (docs/hvt-extensions.md, "Ring I/O").
    support::check_net_and_block(
        Target::Hvt,
        &[("KILN_HVT_NO_EXTENSIONS", "1")],
        "hypercalls",
        8,
    );
}

/// An idle unikernel is blocked in the POLL hypercall, not spinning: a
/// guest that sleeps for a second uses a small fraction of a second of CPU
/// (guest time counts as the tender's user time). The bound is loose on
/// purpose; a spinning guest would use the whole second.
#[test]
fn an_idle_guest_blocks_instead_of_spinning() {
    if !kvm_or_skip("an_idle_guest_blocks_instead_of_spinning") {
        return;
    }
    support::check_idle_guest_blocks(Target::Hvt);
}

/// A unikernel waiting for a frame blocks in its wait (on hvt the
/// NET_EXCHANGE that replaces POLL under kiln-hvt).
#[test]
fn a_guest_waiting_for_a_frame_blocks() {
    if !kvm_or_skip("a_guest_waiting_for_a_frame_blocks") {
        return;
    }
    support::check_idle_net_guest_blocks(Target::Hvt);
}
