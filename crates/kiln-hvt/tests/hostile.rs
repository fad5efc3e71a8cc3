//! Malformed images and hostile hypercall arguments under the `kiln-hvt`
//! binary: each is refused or stopped with a message naming what is wrong,
//! and the tender never crashes.

mod support;

use kiln_abi::MftEntry;
use support::{
    Guest, PF_R, PF_W, PF_X, Phdr, TempDir, assert_refused, kvm_available, load_phdr, run_guest,
    run_hvt,
};
use zerocopy::IntoBytes;

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
        |g| g.abi_note = kiln_abi::AbiNote::spt().as_bytes().to_vec(),
        &["built for the spt target, not hvt; hint: run it with kiln-spt"],
    );
    refused_spoiled(
        &hello,
        |g| {
            g.abi_note = kiln_abi::AbiNote::new(kiln_abi::AbiTarget::Hvt, 1)
                .as_bytes()
                .to_vec();
        },
        &["hvt ABI version 1, kiln-hvt implements version 2"],
    );
    refused_spoiled(&hello, |g| g.mft_note.clear(), &["no Solo5 manifest note"]);
    // A note that runs past its PT_NOTE segment.
    refused_spoiled(
        &hello,
        |g| {
            let descsz = u32::from_le_bytes(g.mft_note[4..8].try_into().unwrap());
            g.mft_note[4..8].copy_from_slice(&(descsz + 64).to_le_bytes());
        },
        &["malformed ELF note"],
    );

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
