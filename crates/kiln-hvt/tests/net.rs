//! The net module under the `kiln-hvt` binary: frames over an inherited
//! socket and over a tap in a network namespace, POLL's ready set, the
//! tap's MTU in the net info, one descriptor for two devices, and kiln's
//! NET_EXCHANGE and NET_EXCHANGE_AREA extensions, well-used and hostile.
#![cfg(feature = "net")]

mod support;

use kiln_abi::MftEntry;
use support::{Guest, TempDir, assert_refused, kvm_available, run_guest};

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
    let child = g
        .launch(
            &dir,
            "net.hvt",
            &[&flag, "--net-mac:service=02:00:00:00:00:01"],
        )
        .spawn();
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
    let child = g.launch(&dir, "poll0.hvt", &[&flag]).spawn();
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

// Regression: kiln-hvt accepted the same `--net:NAME=@FD` for two devices,
// which then both owned the descriptor and closed it twice.
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

/// A network namespace with one tap interface, removed on drop.
struct NetNs {
    name: String,
}

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
        // One name per test: the tests of this file run in parallel.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("kiln-hvt-{}-{n}", std::process::id());
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

impl Drop for NetNs {
    fn drop(&mut self) {
        Self::ip(&["netns", "del", &self.name]);
    }
}

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

/// Puts an exchange argument in `g`'s data: `frames` to send, `bufs`
/// receive buffers of 1514 bytes; returns its address and the address of
/// the first receive buffer.
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
    let child = g.launch(&dir, "exchange.hvt", &[&flag]).spawn();
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
fn assert_nothing_sent(host: &std::os::unix::net::UnixDatagram, case: &str) {
    host.set_nonblocking(true).unwrap();
    assert!(
        host.recv(&mut [0u8; 64]).is_err(),
        "{case}: a frame was sent"
    );
}

/// Runs `g` with 8 MiB and its `service` device on a fresh socket, and
/// asserts that its NET_EXCHANGE was stopped with `message` and sent nothing.
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
    let run = g
        .launch(&dir, "hidden.hvt", &[&flag])
        .env(kiln_hvt::NO_EXTENSIONS_ENV, "1")
        .run();
    drop(guest_end);
    assert_refused(&run, &["port 0x540, not a hypercall"]);
}

/// Puts a NET_EXCHANGE_AREA argument in `g`'s data: `frames` to send, a
/// receive area of `len` bytes, frames cut to `cap`; returns its address
/// and the area's.
fn area_arg(g: &mut Guest, frames: &[&[u8]], len: u64, cap: u64) -> (u64, u64) {
    let tx: Vec<u64> = frames
        .iter()
        .flat_map(|f| [g.data(f), f.len() as u64])
        .collect();
    let tx = g.words(&tx);
    let area = g.data(&vec![0u8; len as usize]);
    let arg = g.words(&[
        1,
        5_000_000_000,
        tx,
        frames.len() as u64,
        area,
        len,
        cap,
        0,
        0,
        0,
        0,
        0,
    ]);
    (arg, area)
}

/// NET_EXCHANGE_AREA end to end: a frame out, and the three frames waiting
/// read into one area as records, as the guest sees them.
#[test]
fn net_exchange_area_packs_what_waits_in_one_call() {
    use kiln_abi::hvt_ext::KILN_NET_EXCHANGE_AREA_NR;

    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let (host, guest_end, flag) = support::inherited_socket();
    // Waiting before the guest starts.
    for frame in [&[0xb1; 60][..], &[0xb2; 61], &[0xb3; 1514]] {
        host.send(frame).unwrap();
    }
    let mut g = Guest::with_devices([MftEntry::net("service")]);
    let (arg, area) = area_arg(&mut g, &[&[0xa1; 60]], 16 * 1024, 1514);
    g.hypercall(KILN_NET_EXCHANGE_AREA_NR, arg)
        .puts_at(arg + 56, 36)
        .puts_at(area, 144 + 8)
        .halt(0);
    let child = g.launch(&dir, "area.hvt", &[&flag]).spawn();
    drop(guest_end);
    let mut got = [0u8; 2048];
    let n = host.recv(&mut got).expect("the frame from the guest");
    assert_eq!(&got[..n], &[0xa1; 60]);
    let run = support::finish(child);
    assert_eq!(run.code, Some(0), "{run:?}");
    let expected = [
        1u64.to_le_bytes().as_slice(),      // tx_written
        &3u64.to_le_bytes(),                // rx_read
        &(72u64 + 72 + 1528).to_le_bytes(), // rx_used
        &0u64.to_le_bytes(),                // ready_set: drained
        &0i32.to_le_bytes(),                // ret: OK
        // The records: length, frame, padding to 8 bytes.
        &60u64.to_le_bytes(),
        &[0xb1; 60],
        &[0; 4],
        &61u64.to_le_bytes(),
        &[0xb2; 61],
        &[0; 3],
        &1514u64.to_le_bytes(),
    ]
    .concat();
    assert_eq!(run.stdout, expected, "{run:?}");
}

/// Hostile NET_EXCHANGE_AREA arguments stop the guest with an error naming
/// the field, nothing sent; without the extension the port is no
/// hypercall.
#[test]
fn hostile_net_exchange_areas_are_stopped() {
    use kiln_abi::hvt_ext::KILN_NET_EXCHANGE_AREA_NR;

    if !kvm_available() {
        return;
    }
    let dir = TempDir::new();
    // (what to spoil: byte offset in the argument, value; message)
    let cases: [(usize, u64, &str); 6] = [
        (
            40,
            (4 << 20) + 1,
            "rx_area_len is 4194305, more than the 4194304 bytes",
        ),
        (48, 0, "rx_frame_cap is 0, a frame cannot be empty"),
        (
            48,
            4096,
            "rx_frame_cap is 4096, more than the area of 4096 bytes holds",
        ),
        // The guest's code, which the tender keeps read-only.
        (32, support::CODE_BASE, "bad rx area address"),
        (32, (8 << 20) - 100, "bad rx area address"),
        (
            24,
            65,
            "tx_count is 65, more than the 64 an exchange may name",
        ),
    ];
    for (at, value, message) in cases {
        let mut g = Guest::with_devices([MftEntry::net("service")]);
        let (arg, _) = area_arg(&mut g, &[&[0xa1; 60]], 4096, 1514);
        let off = (arg - support::DATA_BASE) as usize + at;
        g.data[off..off + 8].copy_from_slice(&value.to_le_bytes());
        g.hypercall(KILN_NET_EXCHANGE_AREA_NR, arg).halt(0);
        assert_exchange_stopped(&dir, &g, message);
    }

    // Without the extension, the port is not a hypercall.
    let (_host, guest_end, flag) = support::inherited_socket();
    let mut g = Guest::with_devices([MftEntry::net("service")]);
    let (arg, _) = area_arg(&mut g, &[&[0xa1; 60]], 4096, 1514);
    g.hypercall(KILN_NET_EXCHANGE_AREA_NR, arg).halt(0);
    let run = g
        .launch(&dir, "hidden.hvt", &[&flag])
        .env(kiln_hvt::NO_EXTENSIONS_ENV, "1")
        .run();
    drop(guest_end);
    assert_refused(&run, &["port 0x542, not a hypercall"]);
}

/// A guest that declared, in kiln's features note, that it reads
/// virtio-net headers (`docs/hvt-extensions.md`, "VNET_HDR"): kiln-hvt
/// opens the tap with offloads and says so in kiln's CPUID leaf (bit 1),
/// then checks every header the guest sends. A malformed one (an unknown
/// `gso_type`, a checksum past the frame's end) is refused with EINVAL and
/// counted, reported once, and the tender goes on: the well-formed frame
/// after it reaches the tap. With `KILN_HVT_NO_EXTENSIONS=1` the bit is off
/// and the same bytes are a plain frame.
#[test]
fn a_guest_declaring_virtio_net_headers_gets_them_checked() {
    if !kvm_available() {
        return;
    }
    let Some(ns) = NetNs::with_tap() else {
        return;
    };
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::net("service")]);
    // kiln's features note, in the notes' segment after the manifest.
    let note = kiln_abi::note::KilnFeaturesNote::new(kiln_abi::note::KILN_GUEST_VNET_HDR);
    g.mft_note
        .extend_from_slice(zerocopy::IntoBytes::as_bytes(&note));
    // A broadcast frame of 60 bytes, after a header that asks nothing.
    let mut good = vec![0u8; 10];
    good.extend_from_slice(&[0xff; 6]);
    good.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x07, 0x88, 0xb5]);
    good.resize(70, 0x5a);
    let mut bad_gso = good.clone();
    bad_gso[1] = 0x33;
    let mut bad_csum = good.clone();
    bad_csum[0] = 1; // NEEDS_CSUM
    bad_csum[6..8].copy_from_slice(&50u16.to_le_bytes()); // csum_start
    bad_csum[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset
    let regs = g.data(&[0u8; 16]);
    let (b1, b2, ok) = (g.data(&bad_gso), g.data(&bad_csum), g.data(&good));
    let w1 = g.words(&[1, b1, 70, support::UNSET]);
    let w2 = g.words(&[1, b2, 70, support::UNSET]);
    let w3 = g.words(&[1, ok, 70, support::UNSET]);
    g.cpuid_to(kiln_abi::hvt_ext::KILN_CPUID_LEAF, regs)
        .puts_at(regs, 16)
        .hypercall(6, w1)
        .hypercall(6, w2)
        .hypercall(6, w3)
        .puts_at(w1 + 24, 4)
        .puts_at(w2 + 24, 4)
        .puts_at(w3 + 24, 4)
        .halt(0);
    let path = dir.write("vnet.hvt", &g.build());
    let features = |stdout: &[u8]| {
        let reg = |i: usize| u32::from_le_bytes(stdout[4 * i..4 * i + 4].try_into().unwrap());
        kiln_abi::hvt_ext::features([reg(0), reg(1), reg(2), reg(3)])
    };
    let rets = |stdout: &[u8]| -> Vec<i32> {
        stdout[16..28]
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let hvt = env!("CARGO_BIN_EXE_kiln-hvt");
    let path = path.display().to_string();
    let args = [hvt, "--net:service=ktap0", path.as_str()];

    let before = ns.rx_packets();
    let run = support::run_cmd(&mut ns.exec(&args));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout.len(), 28, "{run:?}");
    assert_ne!(
        features(&run.stdout) & kiln_abi::hvt_ext::KILN_FEATURE_VNET_HDR,
        0,
        "the header was not offered: {run:?}"
    );
    let einval = kiln_abi::status::Solo5Result::Einval as i32;
    assert_eq!(rets(&run.stdout), [einval, einval, 0], "{run:?}");
    let stderr = &run.stderr;
    assert_eq!(
        stderr.matches("malformed virtio-net header").count(),
        1,
        "{stderr}"
    );
    assert_eq!(ns.rx_packets(), before + 1, "only the good frame goes");

    // Extensions hidden: no header, the same three writes are plain
    // frames of 70 bytes and all three go.
    let before = ns.rx_packets();
    let run = support::run_cmd(ns.exec(&args).env("KILN_HVT_NO_EXTENSIONS", "1"));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(features(&run.stdout), 0, "{run:?}");
    assert_eq!(rets(&run.stdout), [0, 0, 0], "{run:?}");
    assert_eq!(ns.rx_packets(), before + 3);
}

/// What `ethtool -k ktap0` says of TCP segmentation offload in `ns`:
/// whether the kernel may hand the tap's reader frames larger than the
/// MTU. `None` (skipped loudly, fails under CI=true) without ethtool.
fn tso(ns: &NetNs) -> Option<String> {
    let Ok(out) = ns.exec(&["ethtool", "-k", "ktap0"]).output() else {
        kiln_testsupport::skip::skip("a kiln-hvt offload test", "`ethtool` is not installed");
        return None;
    };
    if !out.status.success() {
        kiln_testsupport::skip::skip("a kiln-hvt offload test", "`ethtool -k` failed");
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("tcp-segmentation-offload: "))
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string)
}

/// A tap a VNET_HDR guest had keeps no offload once kiln-hvt has ended,
/// whichever way it ended: Solo5's solo5-hvt, which opens the tap plain
/// and never clears them, may take it next. The guest declares the
/// header, optionally enables kiln's STOP, prints `ready` and POLLs until
/// its stop word is set; then `end` (a halt, or a port that is not a
/// hypercall). While it waits the tap has TSO on; after SIGTERM (a stop
/// request the guest exits on, or solo5-hvt's exit 1) it is off, and
/// after SIGKILL too, once the tap's guard has seen the tender go.
#[test]
fn a_vnet_guests_tap_has_its_offloads_cleared_when_the_tender_ends() {
    use std::io::{BufRead, BufReader};
    if !kvm_available() {
        return;
    }
    let Some(ns) = NetNs::with_tap() else {
        return;
    };
    let Some(before) = tso(&ns) else {
        return;
    };
    assert_eq!(before, "off", "a new tap has TSO off");
    let dir = TempDir::new();
    let hvt = env!("CARGO_BIN_EXE_kiln-hvt");
    // (STOP enabled, halt or bad port, signal, expected exit code, stderr
    // needle)
    let cases = [
        (true, true, libc::SIGTERM, Some(0), ""),
        (
            true,
            false,
            libc::SIGTERM,
            Some(1),
            "port 0x600, not a hypercall",
        ),
        (
            false,
            true,
            libc::SIGTERM,
            Some(1),
            "kiln-hvt: exiting on signal 15 (SIGTERM)",
        ),
        (true, true, libc::SIGKILL, None, ""),
    ];
    for (i, (enable, halt, signal, code, needle)) in cases.into_iter().enumerate() {
        let mut g = Guest::with_devices([MftEntry::net("service")]);
        let note = kiln_abi::note::KilnFeaturesNote::new(kiln_abi::note::KILN_GUEST_VNET_HDR);
        g.mft_note
            .extend_from_slice(zerocopy::IntoBytes::as_bytes(&note));
        let word = g.data(&[0; 8]);
        let enable_arg = g.words(&[word]);
        let poll_arg = g.words(&[10_000_000_000, 0, 0]);
        if enable {
            g.hypercall(kiln_abi::hvt_ext::KILN_STOP_ENABLE_NR, enable_arg);
        }
        g.puts(b"ready\n");
        let top = g.here();
        g.hypercall(3, poll_arg);
        g.cmp_dword(word, 0);
        let back = g.jump(&[0x0f, 0x84]);
        g.patch(back, top);
        if halt {
            g.halt(0);
        } else {
            g.out(0x600, 0).halt(0);
        }
        let path = dir.write(&format!("offloads{i}.hvt"), &g.build());
        let path = path.display().to_string();
        let mut child = support::spawn(&mut ns.exec(&[hvt, "--net:service=ktap0", &path]));
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        if line != "ready\n" {
            let _ = child.kill();
            panic!(
                "case {i}: the guest did not start: {:?}",
                support::finish(child)
            );
        }
        assert_eq!(tso(&ns).as_deref(), Some("on"), "case {i}: no offloads");
        // The tap's guard (kiln-tap's, forked when the tap was opened).
        let guards = kiln_testsupport::process::children(child.id());
        assert_eq!(guards.len(), 1, "case {i}: one guard: {guards:?}");
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) takes no pointers; the child is ours and not
        // reaped (`ip netns exec` became kiln-hvt).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        child.stdout = Some(out.into_inner());
        let run = support::finish(child);
        assert_eq!(run.code, code, "case {i}: {run:?}");
        assert!(run.stderr.contains(needle), "case {i}: {run:?}");
        // After SIGKILL the guard clears the offloads once the tender is
        // gone; after any other end the tender stopped it before exiting.
        for guard in guards {
            assert!(
                kiln_testsupport::process::ended(guard, std::time::Duration::from_secs(30)),
                "case {i}: the guard outlived the tender by 30 s"
            );
        }
        assert_eq!(
            tso(&ns).as_deref(),
            Some("off"),
            "case {i}: the tap kept its offloads: {run:?}"
        );
    }
}
