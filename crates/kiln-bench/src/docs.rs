//! The generated performance page, `docs/benchmarks.md`.

use std::fmt::Write as _;

use crate::machine::Machine;
use crate::report::{Row, SECTIONS, markdown_table};

/// What each section measures, for the page.
fn about(section: &str) -> &'static str {
    match section {
        "boot" => {
            "Whole-process wall time from spawn to wait (`std::process::Command`, no shell) of \
             `hello --times 0`, which exits at once: the image itself on unix, under its tender on \
             hvt and spt. Baselines, interleaved with the cases in the same run: a static C \
             program that returns at once (`gcc -static -O2`), and `bare-kvm` (kiln-hvt's example: \
             open /dev/kvm, one VM, one vCPU, two instructions). hvt is read against bare-kvm, the \
             others against the static program. One untimed warm-up run per case."
        }
        "hvt" => {
            "The tender's own costs, from kiln-hvt's benchmark harness (`cargo bench -p kiln-hvt \
             --bench hvt`, hand-made guests): `kiln-hvt --mem=512` on an image that halts at once, \
             interleaved with bare-kvm; one VM exit (a loop of POLLs with a zero timeout, wall and \
             CPU per exit); a POLL with a 100 us timeout, all told; frames echoed by a guest over a \
             datagram socket pair (one in flight = round trip, or a window of 8), with the \
             tender's CPU per frame."
        }
        "size" => {
            "Sizes of stripped copies (`strip`) of the images `kiln build` makes and of the tenders \
             it builds beside them (with only the modules the unikernel needs: none for hello, net \
             for www). Images are read against the stripped static C program, kiln-hvt against \
             the stripped bare-kvm."
        }
        "memory" => {
            "Peak resident set (`VmHWM` of /proc/PID/status, summed over the process and its \
             children) of www on each target after 1 s of wrk load, against nginx under the same \
             load in the same namespace (one process: `master_process off`). Then the smallest \
             `--mem` (MiB) each example runs with under a tender: hello exits 0, www answers a \
             GET; a binary search of at most 10 runs over 1..512."
        }
        "network" => {
            "Inside a network namespace the command creates and removes: a tap with the host \
             address 10.81.0.1/24, the unikernel's stack at 10.81.0.2 (unix-direct, hvt, spt; \
             virtio: www.virtio under QEMU's microvm with KVM, the command line `kiln run -t \
             virtio --print-command` prints), \
             the host-socket www on the namespace's 127.0.0.1. `ping -f -q -c N -w T` replies per \
             second against the kernel answering its own address, twice: wherever the scheduler \
             puts ping and the server, and with both pinned to one CPU (`taskset`; on a VM a \
             wake-up across CPUs is an interprocessor interrupt through the hypervisor, so the \
             unpinned rate depends on placement); `wrk -t1 -c16 --latency` on `/` \
             against nginx serving the same htdocs on the namespace's loopback, same run; in a full \
             run also a 1 MiB file of noise added to copies of www built for unix (both stacks), \
             hvt, spt and virtio, and served by the same nginx: three rounds in which every one \
             of these servers, started afresh, serves one load in turn; each 1 MiB figure is the \
             median of its three loads (min and max beside it), against nginx's median."
        }
        "storage" => {
            "examples/blockbench's own timing (the monotonic clock) of sequential writes, then one \
             flush, and reads of a 16 MiB disk in 512 B and 64 KiB requests, 256 (512 B) or 16 (64 KiB) in \
             flight at a time, against the same I/O from this host process (`pwrite`/`pread`, `fdatasync`); \
             hvt with kiln's BLOCK_EXCHANGE and again with `KILN_HVT_NO_EXTENSIONS=1` (one exit \
             per request); virtio runs it under `kiln \
             run -t virtio` (QEMU microvm, KVM, the disks on virtio-blk), 64 KiB requests only. examples/notes' changes \
             per second, each flushed, against a host loop of 1 KiB `pwrite` + `fdatasync`; and \
             notes' crash-test mode, SIGKILLed at random moments, every acknowledged change \
             checked after the restart."
        }
        "build" => {
            "`kiln build` wall time of a copy of each example, from clean (`kiln clean` and a cargo \
             target directory of its own, so every dependency compiles) and after an edit of the \
             app (a comment appended to `src/lib.rs`). hvt and spt include building the tender."
        }
        "virtio" => {
            "kiln's PVH image on QEMU's microvm under KVM, with the command line `kiln run -t \
             virtio --print-command` prints. hello's boot (`--times 0`, QEMU's whole process) \
             interleaved with the floor guest, a PVH ELF whose first instructions write \
             isa-debug-exit, under the same command line; `wrk -t1 -c16` on www's `/` in the \
             network section's kind of namespace, alternating with www.hvt under kiln-hvt (the \
             baseline is hvt's median)."
        }
        "bulk" => {
            "Debian's `iperf3 -c ADDR -t T -J` (T = 5 s, 3 runs, medians; 1 s, 1 run with \
             `--quick`) each way against examples/bulk, an iperf3 server on kiln's own stack \
             (unix-direct, spt, hvt, and virtio under QEMU microvm with KVM as `kiln run -t \
             virtio --print-command` starts it; unix-direct alone with `--quick`) on the tap of the \
             network section's namespace, read against the host kernel's TCP to `iperf3 -s` in \
             a second namespace over a veth pair, same run. \"to the server\": iperf3 sends; \"from the server (-R)\": the unikernel sends. \
             Profiles and analysis: docs/bulk.md."
        }
        "observe" => {
            "What logging and metrics cost www: `wrk -t1 -c16` on `/` against www on its own stack \
             in the network section's namespace, started with each setting in turn, in rounds \
             (8 of 3 s loads, each round starting one setting further on): \
             `--log=warn` (the baseline), `--log=info` (the default; www's per-request `debug` \
             access log filtered out), `--log=debug` (a console line per request) and \
             `--metrics-path=/metrics` (responses counted and timed, the stack's counters \
             exported). Medians over the rounds; ratios against the baseline of the same rounds \
             (docs/observing.md). Quick runs: unix-direct, one round of 2 s loads."
        }
        "tls" => {
            "examples/wwws over HTTPS in a network namespace of the command's own (addresses as \
             in network), against nginx 1 process, TLS 1.3, no session cache or tickets, with the \
             same ECDSA P-256 certificate; every load offers one suite (wrk through an OpenSSL \
             configuration, `openssl s_time -ciphersuites`). `wrk -t1 -c8` on a 24-byte page over \
             kept-alive connections, and `openssl s_time -new` (one new full handshake at a time, \
             the client's own cost included); each target's loads alternate with nginx's, 3 rounds \
             of 5 s (quick: unix with host sockets, one suite, one round of 2 s)."
        }
        "supervisor" => {
            "`kiln daemon` (docs/supervisor.md), run with its state and socket in a temporary \
             directory of its own. On each target, in interleaved rounds after one warm-up round: \
             the time from the command's start to hello's first console line for `kiln run -t T \
             DIR -- --times 1` (the line on its stdout; the baseline), `kiln up NAME DIR` (the \
             line in the unit's `console.log`; both ask cargo whether the image is stale) and \
             `kiln up NAME IMAGE`. Then 100 `kiln up` of hello (running, printing once a second), \
             one after another: the wall time, and the daemon's own VmRSS with them against its \
             VmRSS when it started (unix, and spt in a full run). Quick runs: 3 rounds."
        }
        _ => "",
    }
}

/// The line after which the page is kept as written: notes that are not
/// figures (analyses, proposals) go below it.
pub const NOTES_MARKER: &str = "<!-- kiln-bench keeps everything below this line as written -->";

/// The kept part of an earlier page: its notes marker and what follows.
pub fn kept_notes(old: &str) -> Option<&str> {
    old.find(NOTES_MARKER).map(|at| &old[at..])
}

/// The whole page; `notes` (from [`kept_notes`]) goes at the end.
pub fn page(
    machine: &Machine,
    command: &str,
    date: &str,
    load: (&str, &str),
    rows: &[Row],
    notes: Option<&str>,
) -> String {
    let mut out = String::from(
        "# kiln benchmarks\n\n\
         <!-- Generated by kiln-bench; do not edit by hand. Regenerate with the command below. -->\n\n\
         Every figure comes from one run of one command on one machine, beside a baseline \
         measured in the same run. Ratios are value / baseline (for sizes, times and latencies \
         lower is better; for rates higher is better). A target kiln cannot build or run here is \
         listed as \"not available\" with the reason.\n\n",
    );
    let _ = writeln!(out, "## Machine and run\n");
    let _ = writeln!(out, "| | |\n| --- | --- |");
    let _ = writeln!(out, "| CPU | {} |", machine.cpu);
    let _ = writeln!(out, "| cores | {} |", machine.cores);
    let _ = writeln!(out, "| memory | {} MiB |", machine.memory_mib);
    let _ = writeln!(out, "| kernel | Linux {} |", machine.kernel);
    let nested = if machine.kvm_nested {
        "yes: the CPU reports a hypervisor, so hvt guests run nested"
    } else {
        "no: no hypervisor reported, KVM runs on bare metal"
    };
    let _ = writeln!(out, "| KVM nested | {nested} |");
    let _ = writeln!(
        out,
        "| /dev/kvm | {} |",
        if machine.kvm {
            "usable"
        } else {
            "absent or not permitted"
        }
    );
    let flavour = if machine.kvm_modules.iter().any(|m| m == "kvm_pvm") {
        "kvm_pvm: PVM with shadow paging, which emulates guest code at CPL 0 and runs CPL 3 \
         on the CPU; kiln's unikernels run at CPL 3, and every exit costs tens of \
         microseconds (see the notes below)"
    } else if machine.kvm_modules.is_empty() {
        "none loaded"
    } else {
        "hardware virtualization"
    };
    let _ = writeln!(
        out,
        "| KVM module | {} ({flavour}) |",
        machine.kvm_modules.join(", ")
    );
    let _ = writeln!(out, "| date | {date} |");
    let _ = writeln!(
        out,
        "| load average (1, 5, 15 min) | before: {}; after: {} |",
        load.0, load.1
    );
    let _ = writeln!(out, "| command | `{command}` |\n");
    for section in SECTIONS {
        let section_rows: Vec<Row> = rows
            .iter()
            .filter(|r| r.section == section)
            .cloned()
            .collect();
        if section_rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## {section}\n\n{}\n", about(section));
        out.push_str(&markdown_table(&section_rows));
        out.push('\n');
    }
    match notes {
        Some(notes) => out.push_str(notes),
        None => {
            out.push_str(NOTES_MARKER);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    #[test]
    fn notes_below_the_marker_survive_regeneration() {
        let machine = Machine::probe();
        let rows = vec![
            Row::ok("boot", "hello", "unix", 2.0, "ms"),
            Row::missing(
                "boot",
                "hello",
                "hvt",
                "ms",
                Status::NotAvailable(crate::report::Unavailable::NoKvm("no | kvm".into())),
            ),
        ];
        let first = page(&machine, "cmd", "today", ("1", "2"), &rows, None);
        assert!(
            first.contains(
                "| hello | hvt | not available: /dev/kvm cannot be opened (no \\| kvm) |"
            ),
            "{first}"
        );
        let edited = format!("{first}\n## Notes\n\nby hand\n");
        let notes = kept_notes(&edited);
        let second = page(&machine, "cmd", "tomorrow", ("1", "2"), &rows, notes);
        assert!(second.ends_with("## Notes\n\nby hand\n"), "{second}");
        assert_eq!(second.matches(NOTES_MARKER).count(), 1);
        assert!(kept_notes("no marker").is_none());
    }
}
