//! End-to-end tests: tiny hand-assembled guests run under the `kiln-hvt`
//! binary, well-behaved, malformed and hostile.

mod support;

use kiln_abi::MftEntry;
use support::{
    Guest, PF_R, PF_W, PF_X, Phdr, TempDir, hvt_cmd, kvm_available, load_phdr, run_guest, run_hvt,
};

fn assert_refused(run: &support::Run, needles: &[&str]) {
    assert_eq!(run.signal, None, "tender crashed: {run:?}");
    assert_eq!(run.code, Some(1), "expected exit 1: {run:?}");
    assert!(
        run.stderr.starts_with("kiln-hvt: error: "),
        "{}",
        run.stderr
    );
    for n in needles {
        assert!(
            run.stderr.contains(n),
            "stderr lacks {n:?}:\n{}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn hello_prints_and_exits_zero() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    g.puts(b"hello from hvt\n").halt(0);
    let (run, _) = run_guest(&dir, &g, &[]);
    assert_eq!(run.stdout_str(), "hello from hvt\n", "{run:?}");
    assert_eq!(run.code, Some(0), "{run:?}");
}

#[test]
fn exit_status_is_the_guests() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    for status in [7, 1, 254] {
        let mut g = Guest::new();
        g.halt(status);
        let (run, _) = run_guest(&dir, &g, &["--mem=8"]);
        assert_eq!(run.code, Some(status), "{run:?}");
        assert!(run.stderr.is_empty(), "{}", run.stderr);
    }
}

#[test]
fn abort_prints_message_and_registers() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    let msg = g.data(b"assertion failed: x < 3\0trailing junk");
    g.halt_cookie(255, msg);
    let (run, _) = run_guest(&dir, &g, &[]);
    assert_eq!(run.code, Some(255), "{run:?}");
    assert!(
        run.stderr
            .contains("guest aborted: assertion failed: x < 3\n"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("trailing junk"));
    assert!(run.stderr.contains("rip=0x0000000000100"), "{}", run.stderr);
    assert!(run.stderr.contains("cr3=0x2000"), "{}", run.stderr);
}

#[test]
fn boot_info_and_registers_follow_the_abi() {
    if !kvm_available() {
        return;
    }
    // The guest stores its entry %rdi and %rsp (`mov [slot], rdi;
    // mov [slot + 8], rsp`), then prints the 40 bytes of boot info at 0x5000
    // and the two registers.
    let dir = TempDir::new();
    let mut g = Guest::new();
    let slot = g.data(&[0u8; 16]);
    // mov [abs32], rdi  (48 89 3c 25 imm32); mov [abs32], rsp (48 89 24 25 imm32)
    g.at_addr(&[0x48, 0x89, 0x3c, 0x25], slot)
        .at_addr(&[0x48, 0x89, 0x24, 0x25], slot + 8)
        .puts_at(0x5000, 40)
        .puts_at(slot, 16)
        .halt(0);
    let path = dir.write("bi.hvt", &g.build());
    let run = run_hvt(&["--mem=16", &path.display().to_string(), "--times=3", "x"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let out = &run.stdout;
    assert_eq!(out.len(), 56, "{run:?}");
    let word = |i: usize| u64::from_le_bytes(out[i * 8..i * 8 + 8].try_into().unwrap());
    assert_eq!(word(0), 16 << 20, "mem_size");
    assert!(
        word(1) >= 0x10_2000 && word(1) % 0x1000 == 0,
        "kernel_end {:#x}",
        word(1)
    );
    assert!(word(2) > 1_000_000, "cpu_cycle_freq {}", word(2));
    let (cmdline, mft) = (word(3), word(4));
    assert!(cmdline > 0x5000 && cmdline < 0x10_0000);
    assert!(mft > 0x5000 && mft < cmdline);
    assert_eq!(word(5), 0x5000, "rdi");
    assert_eq!(word(6), (16 << 20) - 8, "rsp");
}

#[test]
fn cmdline_is_the_args_after_kernel() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    // The cmdline of a device-less guest sits after the boot info (40
    // bytes and the ring's 16) and the manifest (8 + 104).
    g.puts_at(0x5038 + 112, 11).halt(0);
    let path = dir.write("c.hvt", &g.build());
    let run = run_hvt(&[&path.display().to_string(), "--times=3", "x"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout_str(), "--times=3 x");
}

#[test]
fn walltime_is_now() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    let t = g.data(&[0u8; 8]);
    g.hypercall(1, t).puts_at(t, 8).halt(0);
    let (run, _) = run_guest(&dir, &g, &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let ns = u64::from_le_bytes(run.stdout[..8].try_into().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(
        now.abs_diff(ns) < 60_000_000_000,
        "walltime {ns} vs now {now}"
    );
}

#[test]
fn poll_waits_for_its_timeout() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    // 300 ms; ready_set and ret, both overwritten.
    let p = g.words(&[300_000_000, u64::MAX, u64::MAX]);
    g.hypercall(3, p).puts_at(p + 8, 12).halt(0);
    let start = std::time::Instant::now();
    let (run, _) = run_guest(&dir, &g, &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(start.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(
        run.stdout, [0u8; 12],
        "ready_set 0 and ret 0 with no devices"
    );
}

#[cfg(feature = "block")]
#[test]
fn block_read_write_and_bad_offsets() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let disk = dir.write("disk.img", &[0u8; 2048]);
    let mut g = Guest::with_devices([MftEntry::block("disk")]);
    let pattern = g.data(&[b'K'; 512]);
    let buf = g.data(&[0u8; 512]);
    let block_arg = |g: &mut Guest, offset: u64, data: u64, len: u64| {
        g.words(&[1, offset, data, len, support::UNSET])
    };
    let w = block_arg(&mut g, 512, pattern, 512);
    let r = block_arg(&mut g, 512, buf, 512);
    let bad = block_arg(&mut g, 3, buf, 512);
    let past = block_arg(&mut g, 2048, buf, 512);
    g.hypercall(4, w)
        .hypercall(5, r)
        .puts_at(buf, 4)
        .hypercall(5, bad)
        .puts_at(bad + 32, 4)
        .hypercall(4, past)
        .puts_at(past + 32, 4)
        .puts_at(w + 32, 4)
        .halt(0);
    let flag = format!("--block:disk={}", disk.display());
    // The supervisor's counters (`kiln_abi::block_stats`): a file named in
    // the environment, kept per device.
    let stats = dir.write("block-stats", b"");
    let path = dir.write("guest.hvt", &g.build());
    let run = support::run_cmd(
        hvt_cmd()
            .env(kiln_abi::block_stats::ENV, &stats)
            .arg(&flag)
            .arg(&path),
    );
    let bytes = std::fs::read(&stats).unwrap();
    let records: Vec<_> = kiln_abi::block_stats::parse(&bytes).unwrap().collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].name(), Some("disk"));
    assert_eq!(
        (
            records[0].reads,
            records[0].writes,
            records[0].read_bytes,
            records[0].written_bytes,
            records[0].errors
        ),
        (1, 1, 512, 512, 2),
        "one good read and write of a sector; a misaligned read and a write past the end refused"
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout,
        [
            b"KKKK".as_slice(),
            &2i32.to_le_bytes(),
            &2i32.to_le_bytes(),
            &0i32.to_le_bytes()
        ]
        .concat()
    );
    let written = std::fs::read(&disk).unwrap();
    assert!(written[512..1024].iter().all(|&b| b == b'K'));
    assert!(written[..512].iter().all(|&b| b == 0));
}

#[test]
fn hostile_hypercall_pointers_are_stopped() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    // Argument structure outside guest memory.
    let mut g = Guest::new();
    g.hypercall(2, 0xffff_fff0).halt(0);
    let (run, _) = run_guest(&dir, &g, &["--mem=8"]);
    assert_refused(
        &run,
        &[
            "guest stopped: puts hypercall: bad argument address",
            "outside guest memory",
            "rip=",
        ],
    );

    // Data pointer outside guest memory.
    let mut g = Guest::new();
    g.puts_at(0x7fff_0000, 16).halt(0);
    let (run, _) = run_guest(&dir, &g, &["--mem=8"]);
    assert_refused(
        &run,
        &["puts hypercall: bad data address", "outside guest memory"],
    );

    // Length that overflows.
    let mut g = Guest::new();
    g.puts_at(0x10_1000, u64::MAX - 8).halt(0);
    let (run, _) = run_guest(&dir, &g, &[]);
    assert_refused(&run, &["puts hypercall: bad data address", "overflows"]);
    assert!(run.stdout.is_empty());

    // A port that is not a hypercall.
    let mut g = Guest::new();
    g.out(0x600, 0).halt(0);
    let (run, _) = run_guest(&dir, &g, &[]);
    assert_refused(&run, &["port 0x600, not a hypercall"]);
}

#[test]
fn guest_that_halts_the_cpu_is_reported() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    g.code.push(0xf4); // hlt
    let (run, _) = run_guest(&dir, &g, &[]);
    assert_refused(&run, &["guest executed hlt", "rip="]);
}

#[cfg(all(feature = "net", feature = "block"))]
#[test]
fn missing_device_flags_are_refused() {
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::net("service"), MftEntry::block("disk")]);
    g.halt(0);
    let disk = dir.write("d.img", &[0u8; 512]);
    let flag = format!("--block:disk={}", disk.display());
    let (run, _) = run_guest(&dir, &g, &[&flag]);
    assert_refused(
        &run,
        &[
            "device 'service' (NET_BASIC) is declared by the image but not attached",
            "hint: add --net:service=TAP",
        ],
    );
}

/// With `--help` among the unikernel's arguments, devices without a flag
/// stay unattached so that the unikernel can print its usage; every other
/// check still applies.
#[cfg(all(feature = "net", feature = "block"))]
#[test]
fn help_runs_without_device_flags() {
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::net("service"), MftEntry::block("disk")]);
    g.halt(0);
    let path = dir.write("guest.hvt", &g.build());
    let run = run_hvt(&[
        support::path_str(&path),
        "--port=80".into(),
        "--help".into(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // A flag for a device the image does not declare is still refused.
    let run = run_hvt(&[
        "--net:nope=tap0".into(),
        support::path_str(&path),
        "--help".into(),
    ]);
    assert_refused(&run, &["declares no NET_BASIC device named 'nope'"]);
    // Without --help the missing flags are refused, as before.
    let run = run_hvt(&[support::path_str(&path), "--port=80".into()]);
    assert_refused(&run, &["is declared by the image but not attached"]);
}

#[cfg(all(feature = "net", feature = "block"))]
#[test]
fn flags_for_undeclared_devices_are_refused() {
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::block("disk")]);
    g.halt(0);
    let (run, path) = run_guest(&dir, &g, &["--net:nope=tap0"]);
    assert_refused(
        &run,
        &[
            "--net:nope=tap0:",
            &format!(
                "{} declares no NET_BASIC device named 'nope'",
                path.display()
            ),
            "the image declares 'disk' (BLOCK_BASIC)",
        ],
    );
    // Right name, wrong type.
    let (run, _) = run_guest(&dir, &g, &["--net:disk=tap0"]);
    assert_refused(&run, &["declares no NET_BASIC device named 'disk'"]);
}

// Regression: kiln-hvt accepted the same `--net:NAME=@FD` for two devices,
// which then both owned the descriptor and closed it twice.
#[cfg(feature = "net")]
#[test]
fn one_descriptor_for_two_net_devices_is_refused() {
    use std::os::fd::AsRawFd;

    let dir = TempDir::new();
    let (_host, guest_end, _) = support::inherited_socket();
    let mut g = Guest::with_devices([MftEntry::net("a"), MftEntry::net("b")]);
    g.halt(0);
    let fd = guest_end.as_raw_fd();
    let (run, _) = run_guest(
        &dir,
        &g,
        &[&format!("--net:a=@{fd}"), &format!("--net:b=@{fd}")],
    );
    assert_refused(
        &run,
        &[&format!(
            "descriptor {fd} is already attached to another device"
        )],
    );
}

#[cfg(feature = "block")]
#[test]
fn bad_block_backing_is_refused() {
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::block("disk")]);
    g.halt(0);
    let odd = dir.write("odd.img", &[0u8; 700]);
    let flag = format!("--block:disk={}", odd.display());
    let (run, _) = run_guest(&dir, &g, &[&flag]);
    assert_refused(
        &run,
        &[
            "device 'disk'",
            "not a multiple of the 512-byte sector size",
        ],
    );
    let (run, _) = run_guest(&dir, &g, &["--block:disk=/nonexistent/kiln.img"]);
    assert_refused(
        &run,
        &[
            "device 'disk': cannot open '/nonexistent/kiln.img'",
            "No such file",
        ],
    );
}

/// `base` spoiled by `spoil` is refused as an invalid image, for `needles`.
fn refused_spoiled(base: &Guest, spoil: impl FnOnce(&mut Guest), needles: &[&str]) {
    let mut g = base.clone();
    spoil(&mut g);
    refused_image(&g, needles);
}

fn refused_image(guest: &Guest, needles: &[&str]) {
    let dir = TempDir::new();
    let (run, path) = run_guest(&dir, guest, &[]);
    let mut all = vec![format!("{}: invalid hvt image", path.display())];
    all.extend(needles.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_refused(&run, &all);
}

#[test]
fn malformed_images_are_refused() {
    let mut hello = Guest::new();
    hello.puts(b"hi").halt(0);

    // Truncated at various points.
    let full = hello.build();
    for cut in [0, 10, 63, 64 + 56, 0x210, 0x1004] {
        let dir = TempDir::new();
        let path = dir.write("t.hvt", &full[..cut]);
        let run = run_hvt(&[path.display().to_string()]);
        assert_refused(&run, &["invalid hvt image"]);
    }

    refused_spoiled(
        &hello,
        |g| g.machine = 3,
        &["ELF machine is 3, expected x86_64"],
    );
    refused_spoiled(
        &hello,
        |g| g.e_type = 3,
        &["expected a static executable (ET_EXEC"],
    );
    refused_spoiled(&hello, |g| g.with_notes = false, &["no Solo5 ABI note"]);
    refused_spoiled(
        &hello,
        |g| g.abi_note = kiln_abi::AbiNote::spt().to_bytes().to_vec(),
        &["built for the spt target, not hvt; hint: run it with kiln-spt"],
    );
    refused_spoiled(
        &hello,
        |g| {
            g.abi_note = kiln_abi::AbiNote::new(kiln_abi::AbiTarget::Hvt, 1)
                .to_bytes()
                .to_vec();
        },
        &["hvt ABI version 1, kiln-hvt implements version 2"],
    );
    refused_spoiled(&hello, |g| g.mft_note.clear(), &["no Solo5 manifest note"]);

    // Manifest claiming too many entries.
    refused_spoiled(
        &hello,
        |g| g.mft_note[28..32].copy_from_slice(&65u32.to_le_bytes()),
        &["invalid manifest", "declares 65 entries"],
    );

    // Manifest note too large.
    refused_spoiled(
        &hello,
        |g| {
            let mut big = vec![0u8; 20 + 4 + 8 + 70 * 104];
            big[..20].copy_from_slice(&g.mft_note[..20]);
            let descsz = (big.len() - 20) as u32;
            big[4..8].copy_from_slice(&descsz.to_le_bytes());
            g.mft_note = big;
        },
        &["invalid manifest", "more than the"],
    );

    // Bad device names in a manifest of net devices.
    let mut service = Guest::with_devices([MftEntry::net("service")]);
    service.halt(0);
    let name_at = 24 + 8 + 104;
    // A space in it.
    refused_spoiled(
        &service,
        |g| g.mft_note[name_at + 3] = b' ',
        &["invalid name", "ser\\x20ice"],
    );
    // Unterminated.
    refused_spoiled(
        &service,
        |g| g.mft_note[name_at..name_at + 68].fill(b'a'),
        &["entry 1 has a name without a terminator"],
    );

    // Duplicate names (patched after the const builder would refuse them).
    let mut g = Guest::with_devices([MftEntry::net("aa"), MftEntry::block("bb")]);
    g.halt(0);
    refused_spoiled(
        &g,
        |g| g.mft_note[name_at + 104..name_at + 106].copy_from_slice(b"aa"),
        &["entries 1 and 2 have the same name \"aa\""],
    );

    // Entry point outside the image / in a non-executable segment.
    refused_spoiled(
        &hello,
        |g| g.entry = 0x20_0000,
        &["entry point 0x200000 is not inside"],
    );
    refused_spoiled(
        &hello,
        |g| g.entry = support::DATA_BASE,
        &["entry point 0x101000 is not inside"],
    );

    // One extra segment each, and what is refused.
    let segments: [(Phdr, &[&str]); 7] = [
        // Overlapping segments.
        (
            load_phdr(PF_R, 0x1000, 0x10_0800, 0x10, 0x1000),
            &["overlap in memory"],
        ),
        // Huge segment: address + size overflows.
        (
            load_phdr(PF_R, 0, 0x20_0000, 0, u64::MAX - 0x1000),
            &["overflows"],
        ),
        // Segment outside guest memory (default 512 MiB).
        (
            load_phdr(PF_R, 0, 0x4000_0000, 0x10, 0x10),
            &[
                "does not fit in guest memory (0..0x20000000)",
                "hint: give more memory",
            ],
        ),
        // Segment below the boot info / page table area.
        (
            load_phdr(PF_R | PF_X, 0, 0x4000, 0x10, 0x10),
            &["starts at 0x4000, below 0x100000"],
        ),
        // File range outside the file.
        (
            load_phdr(PF_R, 0xffff_0000, 0x30_0000, 0x10, 0x10),
            &["file range (offset 0xffff0000, size 0x10) is outside the file"],
        ),
        // Writable and executable.
        (
            load_phdr(PF_R | PF_W | PF_X, 0, 0x30_0000, 0x10, 0x10),
            &["segment 3 at 0x300000 is both writable and executable"],
        ),
        // memsz < filesz.
        (
            load_phdr(PF_R, 0, 0x30_0000, 0x10, 0x8),
            &["memory size 0x8 is smaller than its file size 0x10"],
        ),
    ];
    for (phdr, needles) in segments {
        refused_spoiled(&hello, |g| g.extra_phdrs.push(phdr), needles);
    }
}

#[test]
fn too_little_memory_is_refused_with_the_size_needed() {
    let dir = TempDir::new();
    let mut g = Guest::new();
    g.halt(0);
    // An image ending at 2 MiB (a large bss): no page left for the stack.
    g.extra_phdrs
        .push(load_phdr(PF_R | PF_W, 0, 0x10_3000, 0, 0xf_c800));
    let (run, _) = run_guest(&dir, &g, &["--mem=2"]);
    assert_refused(&run, &["--mem=2 is too small", "hint: --mem=4"]);
    let (run, _) = run_guest(&dir, &g, &["--mem=1048576"]);
    assert_refused(&run, &["guest memory must be 2 to 65536 MiB"]);
    // Refused by solo5-hvt too ("Malformed argument to --mem").
    let (run, _) = run_guest(&dir, &g, &["--mem=0"]);
    assert_refused(&run, &["--mem=0"]);
}

/// Regression: kiln-hvt refused `--mem` above 1024 ("guest memory must be 2
/// to 1024 MiB", one page directory) where solo5-hvt takes up to 4096, and
/// `--mem=2` (kiln wanted 1 MiB free above the image) where solo5-hvt runs a
/// small guest. The guest pushes onto the stack at the top of its memory and
/// prints the boot info's memory size.
#[test]
fn every_memory_size_solo5_takes_runs() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    // push rax: a write at the top of memory, through the last directory.
    g.code.push(0x50);
    g.puts_at(0x5000, 8).halt(0);
    // --mem=1 runs in 2 MiB, --mem=3 in 2 MiB, as solo5-hvt rounds them.
    for (mb, runs_in) in [
        (1u64, 2u64),
        (2, 2),
        (3, 2),
        (1026, 1026),
        (4096, 4096),
        (6144, 6144),
    ] {
        let (run, _) = run_guest(&dir, &g, &[&format!("--mem={mb}")]);
        assert_eq!(run.code, Some(0), "--mem={mb}: {run:?}");
        assert_eq!(run.stdout, (runs_in << 20).to_le_bytes(), "--mem={mb}");
    }
}

/// How a guest that broke a page protection ended: killed by the tender
/// with a report (exit 1), not a tender crash and not a clean exit.
fn assert_stopped(run: &support::Run, needle: &str) {
    assert_refused(run, &["guest", needle, "rip="]);
}

/// Regression: under kiln-hvt every page of a Solo5 guest was mapped RW and
/// executable with 2 MiB pages, so a write to address 8, a read through an
/// unset `%fs`, a write to its own code and a jump into its data all
/// succeeded; solo5-hvt makes the zero page and low memory absent or
/// read-only and write-protects the code. Each hostile guest here would
/// exit 0 after the access; each must be stopped.
#[test]
fn foreign_guests_get_solo5s_page_protection() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    // No IDT: a page fault becomes a triple fault, as under solo5-hvt.
    let cases: [(&str, Vec<u8>, &str); 6] = [
        // mov qword [8], rax
        (
            "null write",
            vec![0x48, 0x89, 0x04, 0x25, 8, 0, 0, 0],
            "triple-faulted",
        ),
        // mov rax, fs:[0] with the FS base 0
        (
            "unset %fs read",
            vec![0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0],
            "triple-faulted",
        ),
        // mov rax, qword [0x2000]: the tender's page tables
        (
            "page table read",
            vec![0x48, 0x8b, 0x04, 0x25, 0, 0x20, 0, 0],
            "triple-faulted",
        ),
        // mov qword [0x100000], rax: its own code
        (
            "text write",
            vec![0x48, 0x89, 0x04, 0x25, 0, 0, 0x10, 0],
            "read-only",
        ),
        // mov qword [0x5000], rax: the boot info
        (
            "boot info write",
            vec![0x48, 0x89, 0x04, 0x25, 0, 0x50, 0, 0],
            "read-only",
        ),
        // mov eax, DATA_BASE; jmp rax: executing data
        (
            "data execution",
            vec![0xb8, 0, 0x10, 0x10, 0, 0xff, 0xe0],
            "triple-faulted",
        ),
    ];
    for (name, code, needle) in cases {
        let mut g = Guest::new();
        g.data(&[0xf4; 8]);
        g.code.extend_from_slice(&code);
        g.halt(0);
        let (run, _) = run_guest(&dir, &g, &[]);
        assert!(run.stderr.contains(needle), "{name}: {run:?}");
        assert_stopped(&run, needle);
    }
    // What the guest may do: read its boot info and code, write its data.
    let mut g = Guest::new();
    let slot = g.data(&[0u8; 8]);
    g.load_rax(0x5000)
        .load_rax(0x10_0000)
        .store_rax(slot)
        .halt(0);
    let (run, _) = run_guest(&dir, &g, &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
}

/// `--solo5-protection` gives solo5-hvt's mapping: data executable and the
/// boot data writable, the code still write-protected.
#[test]
fn solo5_protection_maps_as_solo5_hvt_does() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let run = |code: &[u8]| {
        let mut g = Guest::new();
        g.data(&[0xf4; 8]);
        g.code.extend_from_slice(code);
        g.halt(0);
        run_guest(&dir, &g, &["--solo5-protection"]).0
    };
    // mov eax, DATA_BASE; jmp rax: the data's hlt runs.
    let r = run(&[0xb8, 0, 0x10, 0x10, 0, 0xff, 0xe0]);
    assert_refused(&r, &["guest executed hlt"]);
    // mov qword [0x5000], rax: the boot info is written.
    let r = run(&[0x48, 0x89, 0x04, 0x25, 0, 0x50, 0, 0]);
    assert_eq!(r.code, Some(0), "{r:?}");
    // mov qword [0x100000], rax: the code stays read-only.
    let r = run(&[0x48, 0x89, 0x04, 0x25, 0, 0, 0x10, 0]);
    assert_refused(&r, &["read-only"]);
}

/// A hypercall whose result the tender would write into the guest's
/// write-protected code is refused, the tender unharmed.
#[test]
fn hypercall_results_are_not_written_to_read_only_memory() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    // WALLTIME (1) with its argument structure in the code.
    g.hypercall(1, 0x10_0000).halt(0);
    let (run, _) = run_guest(&dir, &g, &[]);
    assert_refused(&run, &["walltime hypercall", "read-only"]);
}

#[test]
fn cli_errors() {
    let run = run_hvt::<&str>(&[]);
    assert_refused(&run, &["no KERNEL given"]);
    let run = run_hvt(&["--bogus", "k"]);
    assert_refused(&run, &["unknown flag --bogus", "hint: see kiln-hvt --help"]);
    let run = run_hvt(&["/nonexistent/k.hvt"]);
    assert_refused(&run, &["cannot read /nonexistent/k.hvt", "No such file"]);
    let help = run_hvt(&["--help"]);
    assert_eq!(help.code, Some(0));
    assert!(help.stdout_str().contains("--mem=MB"));
    #[cfg(feature = "net")]
    assert!(help.stdout_str().contains("--net:NAME=IFACE"));
    #[cfg(feature = "block")]
    assert!(help.stdout_str().contains("--block:NAME=PATH"));
    #[cfg(not(feature = "block"))]
    assert!(help.stdout_str().contains("modules not built in: "));
}

#[cfg(feature = "net")]
#[test]
fn net_write_poll_and_read_over_an_inherited_socket() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    // The tender inherits the guest end by number.
    let (host, guest_end, flag) = support::inherited_socket();

    let mut g = Guest::with_devices([MftEntry::net("service")]);
    let frame = g.data(&[0xabu8; 60]);
    let buf = g.data(&[0u8; 1514]);
    let w = g.words(&[1, frame, 60, support::UNSET]);
    let p = g.words(&[5_000_000_000, 0, 0]);
    let r = g.words(&[1, buf, 1514, support::UNSET]);
    g.hypercall(6, w)
        .hypercall(3, p)
        .hypercall(7, r)
        .puts_at(w + 24, 4)
        .puts_at(p + 8, 12)
        .puts_at(r + 16, 12)
        .puts_at(buf, 4)
        .halt(0);
    let path = dir.write("net.hvt", &g.build());
    let child = support::spawn(
        hvt_cmd()
            .arg(&flag)
            .arg("--net-mac:service=02:00:00:00:00:01")
            .arg(&path),
    );
    drop(guest_end);
    let mut got = [0u8; 2048];
    let n = host.recv(&mut got).expect("frame from the guest");
    assert_eq!(&got[..n], &[0xab; 60]);
    host.send(b"PONG and the rest of a frame").unwrap();
    let run = support::finish(child);
    assert_eq!(run.code, Some(0), "{run:?}");
    let expected = [
        0i32.to_le_bytes().as_slice(), // write: OK
        &2u64.to_le_bytes(),           // poll: handle 1 ready
        &1i32.to_le_bytes(),           // poll: ret 1
        &28u64.to_le_bytes(),          // read: len
        &0i32.to_le_bytes(),           // read: OK
        b"PONG",
    ]
    .concat();
    assert_eq!(run.stdout, expected, "{run:?}");
}

/// A POLL with a zero timeout must still report a device that is ready
/// (the tender waits with `epoll_pwait2` and a zero `timespec`).
#[cfg(feature = "net")]
#[test]
fn zero_timeout_poll_reports_a_ready_device() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let (host, guest_end, flag) = support::inherited_socket();

    let mut g = Guest::with_devices([MftEntry::net("service")]);
    let frame = g.data(&[0x11u8; 60]);
    let w = g.words(&[1, frame, 60, 0]);
    let wait = g.words(&[5_000_000_000, 0, 0]);
    let now = g.words(&[0, u64::MAX, u64::MAX]);
    // Send a frame, wait for the answer, then poll again without waiting:
    // the answer is still unread, so the handle must be reported.
    g.hypercall(6, w)
        .hypercall(3, wait)
        .hypercall(3, now)
        .puts_at(now + 8, 12)
        .halt(0);
    let path = dir.write("poll0.hvt", &g.build());
    let child = support::spawn(hvt_cmd().arg(&flag).arg(&path));
    drop(guest_end);
    let mut got = [0u8; 128];
    let n = host.recv(&mut got).expect("frame from the guest");
    assert_eq!(n, 60);
    host.send(b"answer").unwrap();
    let run = support::finish(child);
    assert_eq!(run.code, Some(0), "{run:?}");
    let expected = [2u64.to_le_bytes().as_slice(), &1i32.to_le_bytes()].concat();
    assert_eq!(
        run.stdout, expected,
        "ready_set and ret of the zero-timeout POLL"
    );
}

#[cfg(not(feature = "net"))]
#[test]
fn manifest_needing_a_compiled_out_module_is_refused() {
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::net("service")]);
    g.halt(0);
    let (run, _) = run_guest(&dir, &g, &[]);
    assert_refused(
        &run,
        &[
            "device 'service' (NET_BASIC) needs the net module",
            "hint: build kiln-hvt with --features net",
        ],
    );
    let (run, _) = run_guest(&dir, &g, &["--net:service=tap0"]);
    assert_refused(
        &run,
        &["--net:service=tap0: this kiln-hvt was built without the net module"],
    );
}

#[cfg(feature = "block")]
#[test]
fn hostile_block_buffer_is_stopped() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    // Block read into a buffer past the end of memory.
    let disk = dir.write("d.img", &[0u8; 1024]);
    let mut g = Guest::with_devices([MftEntry::block("disk")]);
    let arg = g.words(&[1, 0, (8 << 20) - 256, 512, 0]);
    g.hypercall(5, arg).halt(0);
    let flag = format!("--block:disk={}", disk.display());
    let (run, _) = run_guest(&dir, &g, &["--mem=8", &flag]);
    assert_refused(&run, &["block read hypercall: bad buffer address"]);
}

/// A network namespace with one tap interface, removed on drop.
#[cfg(feature = "net")]
struct NetNs {
    name: String,
}

#[cfg(feature = "net")]
impl NetNs {
    fn ip(args: &[&str]) -> bool {
        std::process::Command::new("ip")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `kiln-hvtN` with tap `ktap0` up inside, or `None` (skips loudly,
    /// fails under CI=true) when namespaces cannot be made here.
    fn with_tap() -> Option<Self> {
        let name = format!("kiln-hvt-{}", std::process::id());
        if !Self::ip(&["netns", "add", &name]) {
            kiln_testsupport::skip::skip(
                "a kiln-hvt network test",
                "cannot create a network namespace; hint: run as root with iproute2",
            );
            return None;
        }
        let ns = Self { name };
        let ok = Self::ip(&[
            "-n", &ns.name, "tuntap", "add", "dev", "ktap0", "mode", "tap",
        ]) && Self::ip(&["-n", &ns.name, "link", "set", "ktap0", "up"]);
        assert!(ok, "cannot create tap ktap0 in {}", ns.name);
        Some(ns)
    }

    fn exec(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    fn rx_packets(&self) -> u64 {
        let out = self
            .exec(&["cat", "/sys/class/net/ktap0/statistics/rx_packets"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

#[cfg(feature = "net")]
impl Drop for NetNs {
    fn drop(&mut self) {
        Self::ip(&["netns", "del", &self.name]);
    }
}

#[cfg(feature = "net")]
#[test]
fn tap_interface_in_a_namespace_carries_frames() {
    if !kvm_available() {
        return;
    }
    let Some(ns) = NetNs::with_tap() else {
        return;
    };
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::net("service")]);
    // An Ethernet broadcast frame of 60 bytes from the guest's MAC.
    let mut frame = vec![0xffu8; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x07, 0x88, 0xb5]);
    frame.resize(60, 0x5a);
    let f = g.data(&frame);
    let w = g.words(&[1, f, 60, support::UNSET]);
    g.hypercall(6, w).puts_at(w + 24, 4).halt(0);
    let path = dir.write("tap.hvt", &g.build());
    let before = ns.rx_packets();
    let run = support::run_cmd(&mut ns.exec(&[
        env!("CARGO_BIN_EXE_kiln-hvt"),
        "--net:service=ktap0",
        "--net-mac:service=02:00:00:00:00:07",
        &path.display().to_string(),
    ]));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout,
        0i32.to_le_bytes(),
        "net write returned an error"
    );
    assert_eq!(
        ns.rx_packets(),
        before + 1,
        "the tap did not receive the frame"
    );

    // An interface that does not exist is refused, not created.
    let run = support::run_cmd(&mut ns.exec(&[
        env!("CARGO_BIN_EXE_kiln-hvt"),
        "--net:service=knope0",
        &path.display().to_string(),
    ]));
    assert_refused(
        &run,
        &[
            "device 'service': cannot open tap interface 'knope0'",
            "ip tuntap add knope0 mode tap",
        ],
    );
    let out = ns.exec(&["ip", "link", "show", "knope0"]).output().unwrap();
    assert!(!out.status.success(), "knope0 was created");
}

/// Regression: the net info said MTU 1500 whatever the tap's MTU was;
/// Solo5's tenders report the tap's (SIOCGIFMTU). The guest prints the
/// `info` of its manifest entry, which the tender filled in.
#[cfg(feature = "net")]
#[test]
fn the_net_info_reports_the_taps_mtu() {
    if !kvm_available() {
        return;
    }
    let Some(ns) = NetNs::with_tap() else {
        return;
    };
    assert!(
        NetNs::ip(&["-n", &ns.name, "link", "set", "ktap0", "mtu", "9000"]),
        "cannot set the tap's MTU"
    );
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::net("service")]);
    // The manifest copy follows the boot info (0x5000 + 40, and the ring's
    // 16 bytes); entry 1 is the device, its `info` 72 bytes in.
    let info = 0x5038 + kiln_abi::mft::entry_offset(1) as u64 + 72;
    g.puts_at(info, 16).halt(0);
    let path = dir.write("mtu.hvt", &g.build());
    let run = support::run_cmd(&mut ns.exec(&[
        env!("CARGO_BIN_EXE_kiln-hvt"),
        "--net:service=ktap0",
        "--net-mac:service=02:00:00:00:00:07",
        &path.display().to_string(),
    ]));
    assert_eq!(run.code, Some(0), "{run:?}");
    let word = u64::from_le_bytes(run.stdout[..8].try_into().unwrap());
    let info = kiln_abi::mft::MftDeviceInfo { words: [word, 0] };
    assert_eq!(info.net_mtu(), 9000, "{run:?}");
    assert_eq!(info.net_mac(), [2, 0, 0, 0, 0, 7]);
}

#[test]
fn seccomp_filter_is_on_while_the_guest_runs() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    let p = g.words(&[3_000_000_000, 0, 0]); // 3 s
    g.hypercall(3, p).halt(0);
    let path = dir.write("s.hvt", &g.build());
    let child = support::spawn(hvt_cmd().arg(&path));
    let status_file = format!("/proc/{}/status", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut mode = String::new();
    while std::time::Instant::now() < deadline {
        let status = std::fs::read_to_string(&status_file).unwrap_or_default();
        mode = status
            .lines()
            .find(|l| l.starts_with("Seccomp:"))
            .unwrap_or("")
            .to_string();
        if mode.ends_with('2') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let run = support::finish(child);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(mode, "Seccomp:\t2", "no seccomp filter while the guest ran");
}

/// kiln's CPUID leaf carries the signature and the features the compiled
/// modules and the tender offer, and nothing with `KILN_HVT_NO_EXTENSIONS=1`: then the
/// guest sees what Solo5's tender would show it.
#[test]
fn the_kiln_cpuid_leaf_names_the_extensions() {
    use kiln_abi::hvt_ext::{
        KILN_CPUID_LEAF, KILN_FEATURE_NET_EXCHANGE, KILN_FEATURE_STOP, features,
    };

    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    let regs = g.data(&[0u8; 16]);
    g.cpuid_to(KILN_CPUID_LEAF, regs).puts_at(regs, 16).halt(0);
    let path = dir.write("cpuid.hvt", &g.build());
    let read = |run: &support::Run| -> [u32; 4] {
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(run.stdout.len(), 16, "{run:?}");
        let mut r = [0u32; 4];
        for (v, c) in r.iter_mut().zip(run.stdout.chunks_exact(4)) {
            *v = u32::from_le_bytes(c.try_into().unwrap());
        }
        r
    };
    let on = read(&run_hvt(&[&path]));
    // STOP is the tender's own, offered with or without modules.
    let expected = if cfg!(feature = "net") {
        KILN_FEATURE_NET_EXCHANGE | KILN_FEATURE_STOP
    } else {
        KILN_FEATURE_STOP
    };
    assert_eq!(features(on), expected, "leaf {on:x?}");
    let off = read(&support::run_cmd(
        hvt_cmd().env(kiln_hvt::NO_EXTENSIONS_ENV, "1").arg(&path),
    ));
    assert_eq!(features(off), 0, "leaf {off:x?}");
}

/// Puts an exchange argument in `g`'s data: `frames` to send, `bufs`
/// receive buffers of 1514 bytes; returns its address and the address of
/// the first receive buffer.
#[cfg(feature = "net")]
fn exchange_arg(
    g: &mut Guest,
    handle: u64,
    timeout: u64,
    frames: &[&[u8]],
    bufs: u64,
) -> (u64, u64) {
    let tx: Vec<u64> = frames
        .iter()
        .flat_map(|f| [g.data(f), f.len() as u64])
        .collect();
    let tx = g.words(&tx);
    let first = g.data(&vec![0u8; 1514 * bufs as usize]);
    let rx: Vec<u64> = (0..bufs)
        .flat_map(|i| [first + i * 1514, 1514, 0])
        .collect();
    let rx = g.words(&rx);
    let arg = g.words(&[
        handle,
        timeout,
        tx,
        frames.len() as u64,
        rx,
        bufs,
        0,
        0,
        0,
        0,
    ]);
    (arg, first)
}

/// NET_EXCHANGE end to end: two frames out, the answer read by the same
/// call after waiting for it, and the OUT fields as the guest sees them.
#[cfg(feature = "net")]
#[test]
fn net_exchange_sends_waits_and_reads_in_one_call() {
    use kiln_abi::hvt_ext::KILN_NET_EXCHANGE_NR;

    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let (host, guest_end, flag) = support::inherited_socket();
    let mut g = Guest::with_devices([MftEntry::net("service")]);
    let (arg, buf) = exchange_arg(&mut g, 1, 5_000_000_000, &[&[0xa1; 60], &[0xa2; 61]], 2);
    g.hypercall(KILN_NET_EXCHANGE_NR, arg)
        .puts_at(arg + 48, 28)
        .puts_at(buf, 4)
        .halt(0);
    let path = dir.write("exchange.hvt", &g.build());
    let child = support::spawn(hvt_cmd().arg(&flag).arg(&path));
    drop(guest_end);
    let mut got = [0u8; 2048];
    let n = host.recv(&mut got).expect("first frame from the guest");
    assert_eq!(&got[..n], &[0xa1; 60]);
    let n = host.recv(&mut got).expect("second frame from the guest");
    assert_eq!(&got[..n], &[0xa2; 61]);
    // The guest is waiting in the exchange now (it read nothing).
    std::thread::sleep(std::time::Duration::from_millis(50));
    host.send(b"PONG, the answer").unwrap();
    let run = support::finish(child);
    assert_eq!(run.code, Some(0), "{run:?}");
    let expected = [
        2u64.to_le_bytes().as_slice(), // tx_written
        &1u64.to_le_bytes(),           // rx_read
        &0u64.to_le_bytes(),           // ready_set: drained
        &0i32.to_le_bytes(),           // ret: OK
        b"PONG",
    ]
    .concat();
    assert_eq!(run.stdout, expected, "{run:?}");
}

/// Asserts that no frame is waiting at `host`.
#[cfg(feature = "net")]
fn assert_nothing_sent(host: &std::os::unix::net::UnixDatagram, case: &str) {
    host.set_nonblocking(true).unwrap();
    assert!(
        host.recv(&mut [0u8; 64]).is_err(),
        "{case}: a frame was sent"
    );
}

/// Runs `g` with 8 MiB and its `service` device on a fresh socket, and
/// asserts that its NET_EXCHANGE was stopped with `message` and sent nothing.
#[cfg(feature = "net")]
fn assert_exchange_stopped(dir: &TempDir, g: &Guest, message: &str) {
    let (host, guest_end, flag) = support::inherited_socket();
    let (run, _) = run_guest(dir, g, &["--mem=8", &flag]);
    drop(guest_end);
    assert_refused(&run, &["guest stopped: net exchange hypercall: ", message]);
    assert_nothing_sent(&host, message);
}

/// Hostile NET_EXCHANGE arguments stop the guest with an error naming the
/// field; the tender neither crashes nor sends anything. Without the
/// extension the port is no hypercall at all.
#[cfg(feature = "net")]
#[test]
fn hostile_net_exchanges_are_stopped() {
    use kiln_abi::hvt_ext::KILN_NET_EXCHANGE_NR;

    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    // (what to spoil: byte offset in the argument, value; message)
    let cases: [(usize, u64, &str); 4] = [
        (
            24,
            65,
            "tx_count is 65, more than the 64 an exchange may name",
        ),
        (40, 1 << 40, "rx_count is 1099511627776, more than the 64"),
        (16, 0x7fff_0000, "bad tx table address"),
        (32, u64::MAX - 4, "bad rx table address"),
    ];
    for (at, value, message) in cases {
        let mut g = Guest::with_devices([MftEntry::net("service")]);
        let (arg, _) = exchange_arg(&mut g, 1, 0, &[&[0xa1; 60]], 1);
        let off = (arg - support::DATA_BASE) as usize + at;
        g.data[off..off + 8].copy_from_slice(&value.to_le_bytes());
        g.hypercall(KILN_NET_EXCHANGE_NR, arg).halt(0);
        assert_exchange_stopped(&dir, &g, message);
    }

    // A handle that is no net device: EINVAL (2), nothing sent.
    let (host, guest_end, flag) = support::inherited_socket();
    let mut g = Guest::with_devices([MftEntry::net("service")]);
    let (arg, _) = exchange_arg(&mut g, 9, 0, &[&[0xa1; 60]], 1);
    g.hypercall(KILN_NET_EXCHANGE_NR, arg)
        .puts_at(arg + 72, 4)
        .halt(0);
    let (run, _) = run_guest(&dir, &g, &[&flag]);
    drop(guest_end);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, 2i32.to_le_bytes(), "{run:?}");
    assert_nothing_sent(&host, "handle 9");

    // Frame entries: empty, too long, outside memory.
    for (len, data, message) in [
        (0u64, None, "tx[0].len is 0, a frame cannot be empty"),
        (
            1519,
            None,
            "tx[0].len is 1519, more than the 1518 bytes of a frame",
        ),
        (60, Some((8u64 << 20) - 10), "bad tx[0] address"),
    ] {
        let mut g = Guest::with_devices([MftEntry::net("service")]);
        let frame = g.data(&[0xa1; 1600]);
        let tx = g.words(&[data.unwrap_or(frame), len]);
        let arg = g.words(&[1, 0, tx, 1, 0, 0, 0, 0, 0, 0]);
        g.hypercall(KILN_NET_EXCHANGE_NR, arg).halt(0);
        assert_exchange_stopped(&dir, &g, message);
    }

    // Without the extension, the port is not a hypercall.
    let (_host, guest_end, flag) = support::inherited_socket();
    let mut g = Guest::with_devices([MftEntry::net("service")]);
    let (arg, _) = exchange_arg(&mut g, 1, 0, &[&[0xa1; 60]], 1);
    g.hypercall(KILN_NET_EXCHANGE_NR, arg).halt(0);
    let path = dir.write("hidden.hvt", &g.build());
    let run = support::run_cmd(
        hvt_cmd()
            .env(kiln_hvt::NO_EXTENSIONS_ENV, "1")
            .arg(&flag)
            .arg(&path),
    );
    drop(guest_end);
    assert_refused(&run, &["port 0x540, not a hypercall"]);
}
