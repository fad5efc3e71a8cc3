//! The block module under the `kiln-hvt` binary: reads and writes of a file
//! backing, bad offsets, a bad backing file, a hostile buffer.
#![cfg(feature = "block")]

mod support;

use kiln_abi::MftEntry;
use support::{Guest, TempDir, assert_refused, hvt_cmd, kvm_available, run_guest};

/// What the supervisor's counters file (`kiln_abi::block_stats`) at
/// `stats` holds: each device's name and its reads, writes, bytes read,
/// bytes written and errors.
fn counted(stats: &std::path::Path) -> Vec<(String, [u64; 5])> {
    let bytes = std::fs::read(stats).unwrap();
    kiln_abi::block_stats::parse(&bytes)
        .expect("a counters file")
        .map(|r| {
            let name = r.name().expect("a UTF-8 name").to_owned();
            (
                name,
                [r.reads, r.writes, r.read_bytes, r.written_bytes, r.errors],
            )
        })
        .collect()
}

/// Prints the `ret` of each of the `n` BLOCK_EXCHANGE requests of the
/// table at `table`, 4 bytes each.
fn puts_rets(g: &mut Guest, table: u64, n: u64) {
    for i in 0..n {
        g.puts_at(table + i * 40 + 36, 4);
    }
}

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
    assert_eq!(
        counted(&stats),
        [("disk".to_owned(), [1, 1, 512, 512, 2])],
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

/// A counters file that cannot be used (here a directory) is reported
/// once on stderr, the line led by the tender's name, and the guest runs
/// with nothing counted.
#[test]
fn an_unusable_counters_file_is_reported_once() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let a = dir.write("a.img", &[0u8; 1024]);
    let b = dir.write("b.img", &[0u8; 1024]);
    let mut g = Guest::with_devices([MftEntry::block("a"), MftEntry::block("b")]);
    g.puts(b"ran").halt(0);
    let stats = a.parent().unwrap();
    let run = g
        .launch(
            &dir,
            "guest.hvt",
            &[
                &format!("--block:a={}", a.display()),
                &format!("--block:b={}", b.display()),
            ],
        )
        .env(kiln_abi::block_stats::ENV, stats.to_str().unwrap())
        .run();
    assert_eq!(
        (run.code, run.stdout_str().as_str()),
        (Some(0), "ran"),
        "{run:?}"
    );
    let warning = format!(
        "kiln-hvt: warning: block counters not kept: KILN_BLOCK_STATS={}: ",
        stats.display()
    );
    assert_eq!(run.stderr.matches(&warning).count(), 1, "{run:?}");
    assert_eq!(run.stderr.matches("block counters").count(), 1, "{run:?}");
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

/// One BLOCK_EXCHANGE request as the words of a `BlockRequest`: `ret`
/// (the high half of the last word) starts unset.
fn request(handle: u64, offset: u64, data: u64, len: u64, op: u32) -> [u64; 5] {
    [
        handle,
        offset,
        data,
        len,
        u64::from(op) | (0xeeee_eeee << 32),
    ]
}

/// BLOCK_EXCHANGE performs its requests in order (a read sees the write
/// before it), refuses the bad ones alone with EINVAL as BLOCK_READ and
/// BLOCK_WRITE do, and counts each request in the supervisor's counters
/// as its own call would be counted. Without the extension the port is
/// no hypercall.
#[test]
fn block_exchange_performs_and_counts_each_request() {
    use kiln_abi::hvt_ext::{BLOCK_OP_READ as R, BLOCK_OP_WRITE as W, KILN_BLOCK_EXCHANGE_NR};

    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let disk = dir.write("disk.img", &[0u8; 4096]);
    let mut g = Guest::with_devices([MftEntry::block("disk")]);
    let pattern = g.data(&[b'K'; 1024]);
    let buf = g.data(&[0u8; 1024]);
    // Read buffers may not overlap: one each.
    let small: Vec<u64> = (0..3).map(|_| g.data(&[0u8; 512])).collect();
    let table: Vec<u64> = [
        request(1, 512, pattern, 1024, W),
        request(1, 512, buf, 1024, R),
        request(1, 3, small[0], 512, R),
        request(1, 4096, pattern, 512, W),
        request(1, 0, small[1], 100, R),
        request(9, 0, small[2], 512, R),
        request(1, 3584, pattern, 512, W),
    ]
    .concat();
    let t = g.words(&table);
    let arg = g.words(&[t, 7, support::UNSET]);
    g.hypercall(KILN_BLOCK_EXCHANGE_NR, arg)
        .puts_at(buf, 1024)
        .puts_at(arg + 16, 8);
    puts_rets(&mut g, t, 7);
    g.halt(0);
    let flag = format!("--block:disk={}", disk.display());
    let stats = dir.write("block-stats", b"");
    let launch = || {
        g.launch(&dir, "exchange.hvt", &[&flag])
            .env(kiln_abi::block_stats::ENV, stats.to_str().unwrap())
    };
    let run = launch().run();
    assert_eq!(run.code, Some(0), "{run:?}");
    let rets: Vec<u8> = [0i32, 0, 2, 2, 2, 2, 0]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    assert_eq!(
        run.stdout,
        [vec![b'K'; 1024], 7u64.to_le_bytes().to_vec(), rets].concat(),
        "the read saw the write before it; misaligned, past the end, partial sector and unknown handle refused"
    );
    let written = std::fs::read(&disk).unwrap();
    assert!(written[..512].iter().all(|&b| b == 0));
    assert!(written[512..1536].iter().all(|&b| b == b'K'));
    assert!(written[1536..3584].iter().all(|&b| b == 0));
    assert!(written[3584..].iter().all(|&b| b == b'K'));
    assert_eq!(
        counted(&stats),
        [("disk".to_owned(), [1, 2, 1024, 1536, 3])],
        "each request counted as its own call: the handle that is no device is counted nowhere"
    );

    let run = launch().env(kiln_hvt::NO_EXTENSIONS_ENV, "1").run();
    assert_refused(&run, &["port 0x541, not a hypercall"]);
}

/// Requests that continue each other on the device are served by one
/// host call (tested in `src/block.rs`) and still get their own results
/// and counts; a bad request in the middle of a run is refused alone.
#[test]
fn block_exchange_runs_of_contiguous_requests() {
    use kiln_abi::hvt_ext::{BLOCK_OP_READ as R, BLOCK_OP_WRITE as W, KILN_BLOCK_EXCHANGE_NR};

    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let disk = dir.write("disk.img", &[0u8; 4096]);
    let mut g = Guest::with_devices([MftEntry::block("disk")]);
    let a = g.data(&[b'A'; 512]);
    let b = g.data(&[b'B'; 512]);
    let c = g.data(&[b'C'; 1024]);
    let back: Vec<u64> = (0..3).map(|_| g.data(&[0u8; 1024])).collect();
    let table: Vec<u64> = [
        request(1, 0, a, 512, W),
        request(1, 512, b, 512, W),
        request(1, 1024, c, 1024, W),
        request(1, 2048, a, 512, W),
        request(1, 2049, b, 512, W),
        request(1, 2560, b, 512, W),
        request(1, 0, back[0], 512, R),
        request(1, 512, back[1], 512, R),
        request(1, 1024, back[2], 1024, R),
    ]
    .concat();
    let t = g.words(&table);
    let arg = g.words(&[t, 9, support::UNSET]);
    g.hypercall(KILN_BLOCK_EXCHANGE_NR, arg)
        .puts_at(back[0], 512)
        .puts_at(back[1], 512)
        .puts_at(back[2], 1024);
    puts_rets(&mut g, t, 9);
    g.halt(0);
    let flag = format!("--block:disk={}", disk.display());
    let stats = dir.write("block-stats", b"");
    let run = g
        .launch(&dir, "runs.hvt", &[&flag])
        .env(kiln_abi::block_stats::ENV, stats.to_str().unwrap())
        .run();
    assert_eq!(run.code, Some(0), "{run:?}");
    let rets: Vec<u8> = [0i32, 0, 0, 0, 2, 0, 0, 0, 0]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    let expected = [vec![b'A'; 512], vec![b'B'; 512], vec![b'C'; 1024], rets].concat();
    assert_eq!(run.stdout, expected);
    let written = std::fs::read(&disk).unwrap();
    assert_eq!(&written[..2048], &expected[..2048]);
    assert!(written[2048..2560].iter().all(|&x| x == b'A'));
    assert!(written[2560..3072].iter().all(|&x| x == b'B'));
    assert!(written[3072..].iter().all(|&x| x == 0));
    assert_eq!(
        counted(&stats),
        [("disk".to_owned(), [3, 5, 2048, 3072, 1])],
        "each request of a run counted as its own call"
    );
}

/// Hostile BLOCK_EXCHANGE tables stop the guest with an error naming the
/// field, before any request is performed (the valid write first in the
/// table never reaches the disk); the tender never crashes.
#[test]
fn hostile_block_exchanges_are_stopped() {
    use kiln_abi::hvt_ext::{BLOCK_OP_READ as R, BLOCK_OP_WRITE as W, KILN_BLOCK_EXCHANGE_NR};

    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mem_end = 8u64 << 20;
    // (what to spoil: None for the argument or Some(request), the byte
    // offset in it, the value; message)
    let cases: [(Option<u64>, u64, u64, &str); 13] = [
        (
            None,
            8,
            257,
            "count: 257, more than the 256 an exchange may name",
        ),
        (None, 8, u64::MAX, "count: 18446744073709551615, more than"),
        (None, 0, 0x7fff_0000, "bad requests table address"),
        (None, 0, u64::MAX - 4, "bad requests table address"),
        // The table in the guest's code, which the tender keeps read-only:
        // it could not set the results.
        (None, 0, support::CODE_BASE, "bad requests table address"),
        (
            Some(1),
            32,
            7,
            "requests[1].op: 7, neither read (1) nor write (2)",
        ),
        (Some(1), 16, mem_end - 256, "requests[1].data: bad buffer"),
        (Some(1), 16, u64::MAX - 100, "requests[1].data: bad buffer"),
        (Some(0), 16, mem_end - 10, "requests[0].data: bad buffer"),
        // A read into the guest's code, which the tender keeps read-only.
        (
            Some(1),
            16,
            support::CODE_BASE,
            "requests[1].data: bad buffer",
        ),
        (
            Some(2),
            16,
            0,
            "requests[2].data: read buffer overlaps the buffer of requests[1]",
        ),
        (
            Some(1),
            16,
            1,
            "requests[1].data: read buffer overlaps the exchange's argument or table",
        ),
        // A later request's buffer that starts before an earlier one's.
        (
            Some(2),
            16,
            2,
            "requests[2].data: read buffer overlaps the buffer of requests[1]",
        ),
    ];
    for (at, off, value, message) in cases {
        let disk = dir.write("disk.img", &[0u8; 4096]);
        let mut g = Guest::with_devices([MftEntry::block("disk")]);
        let pattern = g.data(&[b'K'; 512]);
        let buf = g.data(&[0u8; 1024]);
        let table: Vec<u64> = [
            request(1, 0, pattern, 512, W),
            request(1, 512, buf, 512, R),
            request(1, 1024, buf + 512, 512, R),
        ]
        .concat();
        let t = g.words(&table);
        let arg = g.words(&[t, 3, 0]);
        // Placeholders: 0 is the buffer of request 1 plus 256, 1 the
        // table, 2 the buffer of request 1 less 256.
        let value = match value {
            0 => buf + 256,
            1 => t + 40,
            2 => buf - 256,
            v => v,
        };
        let base = at.map_or(arg, |i| t + i * 40);
        let pos = (base + off - support::DATA_BASE) as usize;
        let width = if off == 32 { 4 } else { 8 };
        g.data[pos..pos + width].copy_from_slice(&value.to_le_bytes()[..width]);
        g.hypercall(KILN_BLOCK_EXCHANGE_NR, arg).halt(0);
        let flag = format!("--block:disk={}", disk.display());
        let (run, _) = run_guest(&dir, &g, &["--mem=8", &flag]);
        assert_refused(
            &run,
            &["guest stopped: block exchange hypercall: ", message],
        );
        let after = std::fs::read(&disk).unwrap();
        assert!(
            after.iter().all(|&b| b == 0),
            "{message}: a request was performed"
        );
    }
}
