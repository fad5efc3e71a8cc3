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
use kiln_testsupport::skip::netns_or_skip;
use zerocopy::IntoBytes;

const ENTRY: u64 = 0x10_0000;

/// An spt image with one net device `service` whose code is `code`, with
/// kiln's features note when `declare`.
fn image(code: &[u8], declare: bool) -> Vec<u8> {
    let mut notes = AbiNote::spt().as_bytes().to_vec();
    let mft: MftNote<1> = MftNote::new([MftEntry::net("service")]);
    let mut buf = vec![0u8; 512];
    let n = mft.encode(&mut buf).expect("encode the manifest");
    notes.extend_from_slice(&buf[..n]);
    if declare {
        notes.extend_from_slice(KilnFeaturesNote::new(KILN_GUEST_VNET_HDR).as_bytes());
    }
    let notes_at = 64 + 2 * 56;
    let code_at = (notes_at + notes.len()).next_multiple_of(0x1000);
    let mut out = vec![0u8; code_at];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2;
    out[5] = 1;
    out[6] = 1;
    out[16..18].copy_from_slice(&2u16.to_le_bytes());
    out[18..20].copy_from_slice(&62u16.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..32].copy_from_slice(&ENTRY.to_le_bytes());
    out[32..40].copy_from_slice(&64u64.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&2u16.to_le_bytes());
    let mut ph = |i: usize, kind: u32, flags: u32, off: usize, vaddr: u64, size: usize| {
        let p = &mut out[64 + 56 * i..64 + 56 * (i + 1)];
        p[0..4].copy_from_slice(&kind.to_le_bytes());
        p[4..8].copy_from_slice(&flags.to_le_bytes());
        p[8..16].copy_from_slice(&(off as u64).to_le_bytes());
        p[16..24].copy_from_slice(&vaddr.to_le_bytes());
        p[24..32].copy_from_slice(&vaddr.to_le_bytes());
        p[32..40].copy_from_slice(&(size as u64).to_le_bytes());
        p[40..48].copy_from_slice(&(size as u64).max(0x1000).to_le_bytes());
        p[48..56].copy_from_slice(&4u64.to_le_bytes());
    };
    ph(0, 4, 4, notes_at, 0, notes.len());
    ph(1, 1, 5, code_at, ENTRY, code.len());
    out[notes_at..notes_at + notes.len()].copy_from_slice(&notes);
    out.extend_from_slice(code);
    out
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
struct NetNs(String);

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

impl NetNs {
    fn new() -> NetNs {
        let name = format!("kiln-spt-vnet-{}", std::process::id());
        assert!(ip(&["netns", "add", &name]), "ip netns add {name}");
        let ns = NetNs(name);
        assert!(ip(&[
            "-n", &ns.0, "tuntap", "add", "dev", "ktap0", "mode", "tap"
        ]));
        assert!(ip(&["-n", &ns.0, "link", "set", "ktap0", "up"]));
        ns
    }

    fn rx_packets(&self) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(["cat", "/sys/class/net/ktap0/statistics/rx_packets"])
            .output()
            .expect("cat");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a count")
    }

    /// Runs the guest `code` under kiln-spt on the tap: its exit code.
    fn run(&self, code: &[u8], declare: bool, env: &[(&str, &str)]) -> i32 {
        let path = tempfile::Builder::new()
            .prefix("kiln-spt-vnet-")
            .suffix(".spt")
            .tempfile()
            .expect("image file")
            .into_temp_path();
        std::fs::write(&path, image(code, declare)).expect("write the image");
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, env!("CARGO_BIN_EXE_kiln-spt")])
            .args(["--mem=4", "--net:service=ktap0"])
            .arg(&path)
            .envs(env.iter().copied())
            .output()
            .expect("run kiln-spt");
        let stderr = String::from_utf8_lossy(&out.stderr);
        out.status
            .code()
            .unwrap_or_else(|| panic!("the tender died: {:?}: {stderr}", out.status))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.0]);
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
