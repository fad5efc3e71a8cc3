//! kiln's virtio-net header on spt (`docs/hvt-extensions.md`,
//! "VNET_HDR"): a hand-made guest that declared it in kiln's features
//! note writes frames to its tap itself, through the seccomp filter. The
//! tender opened the tap with `IFF_VNET_HDR` for it, so a malformed header
//! is the kernel's to refuse (`write` fails with EINVAL), the guest goes
//! on and the tender reports the guest's own status; a well-formed one is
//! sent. Without the note, or with `KILN_SPT_NO_EXTENSIONS=1`, the tap is
//! plain and the same bytes are a frame.

use std::process::Command;

use kiln_abi::mft::{MftEntry, entry_offset};
use kiln_abi::note::{KILN_GUEST_VNET_HDR, KilnFeaturesNote};
use kiln_abi::spt::{SPT_BOOT_INFO_BASE, SptBootInfo};
use kiln_abi::{AbiNote, MftNote};
use kiln_testsupport::image::{Image, notes, temp_file};
use kiln_testsupport::netns::Netns;
use kiln_testsupport::skip::netns_or_skip;
use zerocopy::IntoBytes;

/// An spt image with one net device `service` whose code is `code`, with
/// kiln's features note when `declare`.
fn image(code: &[u8], declare: bool) -> Vec<u8> {
    let mft: MftNote<1> = MftNote::new([MftEntry::net("service")]);
    let mut notes = notes(AbiNote::spt(), &mft);
    if declare {
        notes.extend_from_slice(KilnFeaturesNote::new(KILN_GUEST_VNET_HDR).as_bytes());
    }
    Image::guest(&notes, code).build()
}

/// Writes `frame` (kept after the code) to the device's host descriptor,
/// read from the manifest the boot info points at, then exits with the
/// low byte of what `write` returned: the frame's length, or 256 - errno.
fn write_frame_and_exit(frame: &[u8]) -> Vec<u8> {
    let mft_ptr = SPT_BOOT_INFO_BASE as u32 + std::mem::offset_of!(SptBootInfo, mft) as u32;
    // Entry 0 is the manifest's reserved one; `b.hostfd` is 88 bytes in.
    let hostfd = (entry_offset(1) + 88) as u32;
    let mut c = Vec::new();
    // mov rax, [mft_ptr]
    c.extend_from_slice(&[0x48, 0x8b, 0x04, 0x25]);
    c.extend_from_slice(&mft_ptr.to_le_bytes());
    // mov edi, [rax + hostfd]
    c.extend_from_slice(&[0x8b, 0xb8]);
    c.extend_from_slice(&hostfd.to_le_bytes());
    // lea rsi, [rip + frame]: patched below
    c.extend_from_slice(&[0x48, 0x8d, 0x35, 0, 0, 0, 0]);
    let lea_end = c.len();
    // mov edx, len; mov eax, SYS_write; syscall
    c.push(0xba);
    c.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    c.extend_from_slice(&[0xb8, 1, 0, 0, 0, 0x0f, 0x05]);
    // mov edi, eax; mov eax, SYS_exit_group; syscall
    c.extend_from_slice(&[0x89, 0xc7, 0xb8, 231, 0, 0, 0, 0x0f, 0x05]);
    let disp = (c.len() - lea_end) as u32;
    c[lea_end - 4..lea_end].copy_from_slice(&disp.to_le_bytes());
    c.extend_from_slice(frame);
    c
}

/// A network namespace with tap `ktap0` up inside, removed on drop.
struct NetNs(Netns);

impl NetNs {
    fn new() -> NetNs {
        let ns = Netns::new("spt-vnet");
        ns.add_tap("ktap0");
        ns.ip(&["link", "set", "ktap0", "up"]);
        NetNs(ns)
    }

    fn rx_packets(&self) -> u64 {
        let out = self
            .0
            .command("cat")
            .arg("/sys/class/net/ktap0/statistics/rx_packets")
            .output()
            .expect("cat");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a count")
    }

    /// kiln-spt on the tap with the guest `code` (its image written to a
    /// temporary file, returned to be kept until the run ends).
    fn command(&self, code: &[u8], declare: bool) -> (Command, tempfile::TempPath) {
        let path = temp_file("kiln-spt-vnet-", ".spt", &image(code, declare));
        let mut cmd = self.0.command(env!("CARGO_BIN_EXE_kiln-spt"));
        cmd.args(["--mem=4", "--net:service=ktap0"]).arg(&path);
        (cmd, path)
    }

    /// `tcp-segmentation-offload` of the tap as `ethtool -k` reports it.
    fn tso(&self) -> String {
        self.0.offload("ktap0", "tcp-segmentation-offload")
    }

    /// Runs the guest `code` under kiln-spt on the tap: its exit code.
    fn run(&self, code: &[u8], declare: bool, env: &[(&str, &str)]) -> i32 {
        let (mut cmd, _path) = self.command(code, declare);
        let out = cmd
            .envs(env.iter().copied())
            .output()
            .expect("run kiln-spt");
        let stderr = String::from_utf8_lossy(&out.stderr);
        out.status
            .code()
            .unwrap_or_else(|| panic!("the tender died: {:?}: {stderr}", out.status))
    }
}

/// A broadcast frame of 60 bytes after a virtio-net header of `header`.
fn frame(header: [u8; 10]) -> Vec<u8> {
    let mut f = header.to_vec();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x07, 0x88, 0xb5]);
    f.resize(70, 0x5a);
    f
}

#[test]
fn malformed_virtio_net_headers_from_an_spt_guest_are_refused_by_the_kernel() {
    if !netns_or_skip(
        "malformed_virtio_net_headers_from_an_spt_guest_are_refused_by_the_kernel",
        &[("ip", "-V", "iproute2")],
    ) {
        return;
    }
    let ns = NetNs::new();
    const EINVAL: i32 = 256 - libc::EINVAL;
    // TSO over IPv4 with gso_size 0: the kernel's virtio_net_hdr_to_skb
    // refuses it.
    let mut bad = [0u8; 10];
    bad[0] = 1; // NEEDS_CSUM
    bad[1] = 1; // GSO_TCPV4
    bad[6..8].copy_from_slice(&60u16.to_le_bytes()); // csum_start
    bad[8..10].copy_from_slice(&16u16.to_le_bytes()); // past the frame
    let good = [0u8; 10];

    let before = ns.rx_packets();
    assert_eq!(
        ns.run(&write_frame_and_exit(&frame(bad)), true, &[]),
        EINVAL
    );
    assert_eq!(ns.rx_packets(), before, "the malformed frame went");
    assert_eq!(ns.run(&write_frame_and_exit(&frame(good)), true, &[]), 70);
    assert_eq!(ns.rx_packets(), before + 1);

    // No header: the same 70 bytes are a plain frame.
    let plain = [("KILN_SPT_NO_EXTENSIONS", "1")];
    assert_eq!(ns.run(&write_frame_and_exit(&frame(bad)), true, &plain), 70);
    assert_eq!(ns.run(&write_frame_and_exit(&frame(bad)), false, &[]), 70);
    assert_eq!(ns.rx_packets(), before + 3);
}

/// Writes `ready\n` to the console, then spins until it is killed.
fn ready_then_spin() -> Vec<u8> {
    let mut c = vec![0xbf, 1, 0, 0, 0]; // mov edi, 1
    c.extend_from_slice(&[0x48, 0x8d, 0x35, 14, 0, 0, 0]); // lea rsi, [rip + 14]
    c.extend_from_slice(&[0xba, 6, 0, 0, 0]); // mov edx, 6
    c.extend_from_slice(&[0xb8, 1, 0, 0, 0, 0x0f, 0x05]); // write
    c.extend_from_slice(&[0xeb, 0xfe]); // jmp $
    c.extend_from_slice(b"ready\n");
    c
}

/// A tap a VNET_HDR guest had keeps no offload once kiln-spt has ended,
/// whichever way it ended: Solo5's solo5-spt, which opens the tap plain
/// and never clears them, may take it next. Ends: the guest's exit, its
/// fault (`ud2`), a SIGTERM to the tender while the guest runs (the
/// tender ends by it, as solo5-spt; its handler clears them first), and
/// a SIGKILL (the tap's guard clears them).
#[test]
fn a_vnet_guests_tap_has_its_offloads_cleared_when_the_tender_ends() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    if !netns_or_skip(
        "a_vnet_guests_tap_has_its_offloads_cleared_when_the_tender_ends",
        &[
            ("ip", "-V", "iproute2"),
            ("ethtool", "--version", "ethtool"),
        ],
    ) {
        return;
    }
    let ns = NetNs::new();
    assert_eq!(ns.tso(), "off", "a new tap has TSO off");

    assert_eq!(
        ns.run(&write_frame_and_exit(&frame([0; 10])), true, &[]),
        70
    );
    assert_eq!(ns.tso(), "off", "after the guest's exit");

    let (mut cmd, _path) = ns.command(&[0x0f, 0x0b], true);
    let out = cmd.output().expect("run kiln-spt");
    assert_eq!(out.status.signal(), Some(libc::SIGILL), "{out:?}");
    assert_eq!(ns.tso(), "off", "after the guest's fault");

    let (mut cmd, _path) = ns.command(&ready_then_spin(), true);
    let mut child = kiln_testsupport::process::ChildGuard(
        cmd.stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn kiln-spt"),
    );
    let mut ready = [0u8; 6];
    let mut stdout = child.0.stdout.take().expect("stdout");
    stdout.read_exact(&mut ready).expect("the guest's line");
    assert_eq!(&ready, b"ready\n");
    assert_eq!(ns.tso(), "on", "the guest runs with offloads");
    // `ip netns exec` became kiln-spt.
    kiln_testsupport::process::signal(child.0.id(), libc::SIGTERM);
    let status = child
        .wait_for(std::time::Duration::from_secs(30))
        .expect("wait")
        .expect("kiln-spt ended");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert_eq!(ns.tso(), "off", "after SIGTERM");

    // SIGKILL: the tender clears nothing itself; the tap's guard (a child
    // kiln-tap forked when the tap was opened, beside the guest) does once
    // the tender is gone.
    let (mut cmd, _path) = ns.command(&ready_then_spin(), true);
    let mut child = kiln_testsupport::process::ChildGuard(
        cmd.stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn kiln-spt"),
    );
    let mut stdout = child.0.stdout.take().expect("stdout");
    stdout.read_exact(&mut ready).expect("the guest's line");
    assert_eq!(&ready, b"ready\n");
    assert_eq!(ns.tso(), "on", "the guest runs with offloads");
    let children = kiln_testsupport::process::children(child.0.id());
    assert_eq!(children.len(), 2, "the guest and the guard: {children:?}");
    kiln_testsupport::process::signal(child.0.id(), libc::SIGKILL);
    let status = child
        .wait_for(std::time::Duration::from_secs(30))
        .expect("wait")
        .expect("kiln-spt ended");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    for pid in children {
        assert!(
            kiln_testsupport::process::ended(pid, std::time::Duration::from_secs(30)),
            "process {pid} outlived the tender by 30 s"
        );
    }
    assert_eq!(ns.tso(), "off", "after SIGKILL");
}
