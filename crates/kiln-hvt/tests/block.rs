//! The block module under the `kiln-hvt` binary: reads and writes of a file
//! backing, bad offsets, a bad backing file, a hostile buffer.
#![cfg(feature = "block")]

mod support;

use kiln_abi::MftEntry;
use support::{Guest, TempDir, assert_refused, kvm_available, run_guest};

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
    let (run, _) = run_guest(&dir, &g, &[&flag]);
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
