//! End to end on spt: builds the spt stand-in (`tests/hello-spt-handmade`,
//! the hvt stand-in's sources with kiln-solo5's `spt` feature) for
//! `x86_64-unknown-none` and the `kiln-spt` tender, then runs the image
//! under the tender and checks its output and exit status: hello and exit
//! codes, a forbidden system call stopped by the filter, faults, malformed
//! images refused, a block write past the device's end killed by the
//! filter, net and block devices over an inherited descriptor, and an idle
//! guest that blocks.
//!
//! spt needs no special device: only seccomp, which every Linux host kiln
//! supports has.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_testsupport::netns::Netns;
use kiln_testsupport::process::{self, ChildGuard};
use kiln_testsupport::skip::netns_or_skip;
use support::{Devices, RUN_TIMEOUT, Run, Target, built, temp_file};
use zerocopy::IntoBytes;

/// The spt tender and images, built once for all tests.
fn spt() -> &'static support::Built {
    built(Target::Spt)
}

/// Runs `image` under the tender with `flags` before it and guest
/// arguments `args` after it.
fn run_image(flags: &[String], image: &Path, args: &[&str]) -> Run {
    support::run_image(Target::Spt, flags, image, args)
}

/// Runs the hello image with guest arguments `args`.
fn run(args: &[&str]) -> Run {
    run_image(&[], &spt().image, args)
}

#[test]
fn hello_prints_and_exits_zero() {
    let r = run(&["--times", "2"]);
    assert_eq!(
        r.stdout, "hello from kiln on spt (1/2)\nhello from kiln on spt (2/2)\n",
        "stderr:\n{}",
        r.stderr
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(r.stderr, "");
}

#[test]
fn the_exit_code_is_the_unikernels() {
    let r = run(&["--exit", "7"]);
    assert_eq!(r.code, Some(7), "stderr:\n{}", r.stderr);
    let r = run(&["--fail"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stdout, "error: disk on fire\n");
    let r = run(&["--panic"]);
    assert_eq!(r.code, Some(255));
    assert!(
        r.stdout
            .contains("kiln: panicked at ../hello-hvt-handmade/src/main.rs:"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("deliberate panic, times = 3"));
}

#[test]
fn a_forbidden_system_call_kills_the_guest_and_is_reported() {
    let r = run(&["--getpid"]);
    assert_eq!(r.signal, Some(libc::SIGSYS), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr.contains(
            "kiln-spt: guest killed by seccomp: forbidden system call 39 (getpid) at rip 0x"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn faults_kill_the_guest_and_are_reported() {
    let r = run(&["--null-write"]);
    assert_eq!(r.signal, Some(libc::SIGSEGV), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr
            .contains("kiln-spt: guest crashed: SIGSEGV at 0x0 (rip 0x"),
        "{}",
        r.stderr
    );
    // Executing data: the fault is at the instruction pointer itself.
    let r = run(&["--exec-data"]);
    assert_eq!(r.signal, Some(libc::SIGSEGV), "stderr:\n{}", r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("guest crashed: SIGSEGV at "))
        .unwrap_or_else(|| panic!("no crash report in:\n{}", r.stderr));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words[words.len() - 3];
    let rip = words[words.len() - 1].trim_end_matches(')');
    assert_eq!(at, rip, "{line}");
    // Writing read-only data.
    let r = run(&["--ro-write"]);
    assert_eq!(r.signal, Some(libc::SIGSEGV));
    assert!(
        r.stderr.contains("guest crashed: SIGSEGV at 0x1"),
        "{}",
        r.stderr
    );
}

/// Finds `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The program headers of `elf`: (offset of each, its p_type).
fn phdrs(elf: &[u8]) -> Vec<(usize, u32)> {
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let (off, size, num) = (
        u64_at(32) as usize,
        u16_at(54) as usize,
        u16_at(56) as usize,
    );
    (0..num)
        .map(|i| {
            let at = off + i * size;
            (at, u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()))
        })
        .collect()
}

#[test]
fn malformed_images_are_refused() {
    let good = std::fs::read(&spt().image).expect("read the image");
    let abi_note = kiln_abi::AbiNote::spt();
    let abi_note = abi_note.as_bytes();
    let abi_at = find(&good, abi_note).expect("the spt ABI note is in the image");

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push((
        "truncated",
        good[..good.len() / 2].to_vec(),
        "outside the file",
    ));
    cases.push(("empty", Vec::new(), "not a 64-bit little-endian ELF file"));

    // An hvt image: the same bytes with the hvt ABI note.
    let mut hvt = good.clone();
    hvt[abi_at..abi_at + abi_note.len()].copy_from_slice(kiln_abi::AbiNote::hvt().as_bytes());
    cases.push((
        "hvt",
        hvt,
        "image is built for the hvt target, not spt; hint: run it with kiln-hvt",
    ));

    let mut old = good.clone();
    // The version follows the target in the descriptor (20 bytes in).
    old[abi_at + 24..abi_at + 28].copy_from_slice(&1u32.to_le_bytes());
    cases.push(("old ABI", old, "spt ABI version 1"));

    // No notes: every PT_NOTE header becomes PT_NULL.
    let mut none = good.clone();
    for (at, kind) in phdrs(&good) {
        if kind == 4 {
            none[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
        }
    }
    cases.push(("no notes", none, "no Solo5 ABI note"));

    // A bad manifest: its version (the first word of `struct mft`, 24
    // bytes into the note) changed.
    let namesz = 6u32.to_le_bytes();
    let mft_type = kiln_abi::note::MFT_NOTE_TYPE.to_le_bytes();
    let mut bad_mft = good.clone();
    let mft_at = (0..good.len() - 20)
        .find(|&i| {
            good[i..i + 4] == namesz
                && good[i + 8..i + 12] == mft_type
                && &good[i + 12..i + 17] == b"Solo5"
        })
        .expect("the manifest note is in the image");
    bad_mft[mft_at + 24..mft_at + 28].copy_from_slice(&9u32.to_le_bytes());
    cases.push(("bad manifest", bad_mft, "invalid manifest"));

    // A segment outside guest memory: the last PT_LOAD moved to 1 GiB.
    let mut outside = good.clone();
    let (last_load, _) = *phdrs(&good)
        .iter()
        .rfind(|(_, kind)| *kind == 1)
        .expect("a PT_LOAD");
    outside[last_load + 16..last_load + 24].copy_from_slice(&(1u64 << 30).to_le_bytes());
    cases.push(("outside", outside, "does not fit in guest memory"));

    for (name, bytes, expected) in cases {
        let file = temp_file(&name.replace(' ', "-"));
        std::fs::write(&file, &bytes).expect("write the image");
        let r = run_image(&[], &file, &[]);
        assert_eq!(r.code, Some(1), "{name}: stderr:\n{}", r.stderr);
        assert!(r.stdout.is_empty(), "{name}: the guest ran:\n{}", r.stdout);
        assert!(
            r.stderr.contains("invalid spt image") && r.stderr.contains(expected),
            "{name}: expected '{expected}' in:\n{}",
            r.stderr
        );
    }
}

#[test]
fn a_block_write_past_the_end_is_killed_by_the_filter() {
    let d = Devices::new("disk-hostile");
    let r = run_image(&d.flags(), &spt().devices, &["--pwrite-past-end"]);
    assert_eq!(r.signal, Some(libc::SIGSYS), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr
            .contains("guest killed by seccomp: forbidden system call 18 (pwrite64)"),
        "{}",
        r.stderr
    );
    let after = std::fs::read(&*d.disk).expect("read the disk image");
    assert_eq!(after.len(), 8 * 512, "the disk grew");
    assert!(after[8..].iter().all(|&b| b == 0), "the disk was written");
}

#[test]
fn net_and_block_devices_work() {
    // One `pread64` per read.
    support::check_net_and_block(Target::Spt, &[], "hypercalls", 8);
}

#[test]
fn an_unattached_or_unknown_device_is_refused() {
    let r = run_image(&[], &spt().devices, &[]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("hint: add --net:service=TAP"),
        "{}",
        r.stderr
    );
    let r = run_image(&["--block:nope=/dev/null".into()], &spt().image, &[]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("declares no BLOCK_BASIC device named 'nope'"),
        "{}",
        r.stderr
    );
}

#[test]
fn clocks_sleep_and_random_work() {
    support::check_clocks_sleep_and_random(Target::Spt);
}

/// An idle unikernel is blocked in `epoll_pwait`, not spinning: a guest
/// that sleeps for a second uses a small fraction of a second of CPU. The
/// bound is loose on purpose; a spinning guest would use the whole second.
#[test]
fn an_idle_guest_blocks_instead_of_spinning() {
    support::check_idle_guest_blocks(Target::Spt);
}

/// The counter of frames tap `ktap0` inside `ns` received.
fn rx_packets(ns: &Netns) -> u64 {
    let out = ns
        .command("cat")
        .arg("/sys/class/net/ktap0/statistics/rx_packets")
        .output()
        .expect("read the tap's counters");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Collects a guarded child's output and status, or kills it after
/// [`RUN_TIMEOUT`] and fails the test.
fn finish(guard: ChildGuard) -> Run {
    let out = process::finish(guard, RUN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    Run {
        code: out.status.code(),
        signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The guest echoes a frame the host kernel sends over a real tap
/// interface (an ARP request for a neighbour on the tap's subnet), all
/// inside a network namespace.
#[test]
fn a_tap_interface_in_a_namespace_carries_frames() {
    let b = spt();
    let tools = [("ping", "-V", "iputils-ping")];
    if !netns_or_skip("a_tap_interface_in_a_namespace_carries_frames", &tools) {
        return;
    }
    let ns = Netns::new("spt");
    ns.add_tap("ktap0");
    let disk = temp_file("tap-disk");
    std::fs::write(&disk, vec![0u8; 8 * 512]).expect("write the disk image");
    let before = rx_packets(&ns);
    let mut guest = ChildGuard(
        ns.command(&b.tender)
            .args([
                "--mem=64",
                "--net:service=ktap0",
                "--net-mac:service=02:00:00:00:00:07",
                &format!("--block:disk={}", disk.display()),
            ])
            .arg(&b.devices)
            .args(["--frames", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kiln-spt in the namespace"),
    );
    // Give the guest its address's neighbour to resolve: the kernel sends
    // ARP requests on the tap, the guest echoes the first frame it gets.
    ns.address("ktap0", "10.77.0.1/24", None);
    // Bounded: at most 20 one-second pings, until the guest has exited.
    for _ in 0..20 {
        if matches!(guest.0.try_wait(), Ok(Some(_))) {
            break;
        }
        let _ = ns
            .command("ping")
            .args(["-c", "1", "-W", "1", "10.77.0.2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let r = finish(guest);
    r.assert_code(0);
    assert!(
        r.stdout.contains("net: mac 02:00:00:00:00:07 mtu 1500")
            && r.stdout.contains("net: echoed frame 1 of"),
        "{}",
        r.stdout
    );
    assert!(
        rx_packets(&ns) > before,
        "the tap received nothing from the guest"
    );
}

/// The guest process runs under the filter (seccomp mode 2) while it
/// sleeps; the tender (its parent) does not need one.
#[test]
fn the_guest_runs_under_the_seccomp_filter() {
    let b = spt();
    let tender = ChildGuard(
        Command::new(&b.tender)
            .arg("--mem=64")
            .arg(&b.image)
            .args(["--times", "1", "--pause", "1500"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kiln-spt"),
    );
    let pid = tender.0.id();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut mode = String::new();
    while Instant::now() < deadline {
        if let Some(guest) = process::children(pid).first() {
            let status =
                std::fs::read_to_string(format!("/proc/{guest}/status")).unwrap_or_default();
            mode = status
                .lines()
                .find(|l| l.starts_with("Seccomp:"))
                .unwrap_or("")
                .to_string();
            if mode.ends_with('2') {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = finish(tender);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(mode, "Seccomp:\t2", "no seccomp filter while the guest ran");
}

/// A unikernel waiting for a frame blocks in `epoll_pwait`.
#[test]
fn a_guest_waiting_for_a_frame_blocks() {
    support::check_idle_net_guest_blocks(Target::Spt);
}
