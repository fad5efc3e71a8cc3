//! Guest memory under the `kiln-hvt` binary: the sizes it takes and refuses,
//! and the page protection every guest gets (Solo5's, and kiln's W^X and
//! read-only boot data), with hand-assembled guests that break it.

mod support;

use support::{Guest, PF_R, PF_W, TempDir, assert_refused, kvm_available, load_phdr, run_guest};

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
