//! Boot, the hypercalls and the vCPU under the `kiln-hvt` binary, with
//! tiny hand-assembled guests: output and exit status, the abort report,
//! the boot info and registers the ABI promises, the command line,
//! walltime and POLL, a halted CPU, the seccomp filter, kiln's CPUID leaf.

mod support;

use support::{Guest, TempDir, assert_refused, kvm_available, run_guest};

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
    let run = g
        .launch(&dir, "bi.hvt", &["--mem=16"])
        .args(&["--times=3", "x"])
        .run();
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
    let run = g.launch(&dir, "c.hvt", &[]).args(&["--times=3", "x"]).run();
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

#[test]
fn seccomp_filter_is_on_while_the_guest_runs() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    let p = g.words(&[3_000_000_000, 0, 0]); // 3 s
    g.hypercall(3, p).halt(0);
    let child = g.launch(&dir, "s.hvt", &[]).spawn();
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
        KILN_CPUID_LEAF, KILN_FEATURE_BLOCK_EXCHANGE, KILN_FEATURE_NET_EXCHANGE,
        KILN_FEATURE_NET_RX_AREA, KILN_FEATURE_STOP, features,
    };

    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    let regs = g.data(&[0u8; 16]);
    g.cpuid_to(KILN_CPUID_LEAF, regs).puts_at(regs, 16).halt(0);
    let launch = || g.launch(&dir, "cpuid.hvt", &[]);
    let read = |run: &support::Run| -> [u32; 4] {
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(run.stdout.len(), 16, "{run:?}");
        let mut r = [0u32; 4];
        for (v, c) in r.iter_mut().zip(run.stdout.chunks_exact(4)) {
            *v = u32::from_le_bytes(c.try_into().unwrap());
        }
        r
    };
    let on = read(&launch().run());
    // STOP is the tender's own, offered with or without modules.
    let mut expected = KILN_FEATURE_STOP;
    if cfg!(feature = "net") {
        expected |= KILN_FEATURE_NET_EXCHANGE | KILN_FEATURE_NET_RX_AREA;
    }
    if cfg!(feature = "block") {
        expected |= KILN_FEATURE_BLOCK_EXCHANGE;
    }
    assert_eq!(features(on), expected, "leaf {on:x?}");
    let off = read(&launch().env(kiln_hvt::NO_EXTENSIONS_ENV, "1").run());
    assert_eq!(features(off), 0, "leaf {off:x?}");
}
