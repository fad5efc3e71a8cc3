//! End to end on the virtio target through the CLI: `kiln build -t virtio`
//! makes a PVH image, `kiln run -t virtio` boots it on QEMU under KVM, on
//! microvm (virtio-mmio) and on q35 (virtio-pci). hello (output, exit
//! statuses), clock, notes persisting on a virtio-blk disk, www serving its
//! pages and udp-echo echoing over virtio-net on a tap in a network
//! namespace, on both machines; bulk's echo port byte for byte with
//! virtio-net's offloads and without; and bad input (a truncated image, a
//! foreign ELF, a missing disk, a missing tap) refused with one clear error
//! and exit 2 before any VMM starts.
//!
//! Each example is built once per test process (`image`) and the same
//! `dist/NAME.virtio` is booted on both machines with `--image`.
//!
//! Needs `/dev/kvm`, `qemu-system-x86_64` (scripts/test installs Debian's
//! `qemu-system-x86`), and for www root, `ip` and `curl`: without them each
//! test says loudly that it is skipped, and fails instead when `CI=true`.
//! Builds share the `KILN_TARGET_DIR` of the other CLI tests.

mod common;
mod support {
    pub mod net;
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::crash::{Model, line_reader};
use common::{kiln_in, ok, run_for, shared_target_dir, temp_dir, text};
use kiln_testsupport::netns::Netns;
use kiln_testsupport::process;
use kiln_testsupport::skip::{have, kvm_or_skip, netns_or_skip, skip};
use support::net::{Running, files_under, htdocs};

/// Longest a build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest a unikernel may run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// An example's directory.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// Whether QEMU and KVM are here; says why not.
fn can_boot(test: &str) -> bool {
    if !have("qemu-system-x86_64", "--version") {
        skip(
            test,
            "qemu-system-x86_64 is not installed; hint: apt-get install qemu-system-x86",
        );
        return false;
    }
    kvm_or_skip(test)
}

/// `kiln build -t virtio DIR`, which must succeed; the image.
fn build(dir: &Path) -> PathBuf {
    ok(
        run_for(kiln_in(dir).args(["build", "-t", "virtio"]), BUILD_TIMEOUT),
        &format!("kiln build -t virtio {}", dir.display()),
    );
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    dir.join("dist").join(format!("{name}.virtio"))
}

/// examples/NAME's image, built once by this test process (the tests of
/// both machines boot the same `dist/NAME.virtio`): the first caller
/// builds it, the others wait for that build and reuse it.
fn image(name: &str) -> PathBuf {
    type Images = std::collections::HashMap<String, PathBuf>;
    static BUILT: std::sync::Mutex<Option<Images>> = std::sync::Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    built
        .get_or_insert_with(Images::new)
        .entry(name.to_string())
        .or_insert_with(|| build(&example(name)))
        .clone()
}

/// The QEMU machines `kiln run -t virtio --machine` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Machine {
    /// virtio-mmio, no firmware (the default).
    Microvm,
    /// virtio over PCI, through SeaBIOS's PVH loader.
    Q35,
}

impl Machine {
    fn flags(self) -> [&'static str; 2] {
        match self {
            Machine::Microvm => ["--machine", "microvm"],
            Machine::Q35 => ["--machine", "q35"],
        }
    }
}

/// `kiln run -t virtio [EXTRA] -- ARGS` in `dir` (building it if needed).
fn run(dir: &Path, extra: &[&str], args: &[&str]) -> Output {
    run_for(
        kiln_in(dir)
            .env("NO_COLOR", "1")
            .args(["run", "-t", "virtio"])
            .args(extra)
            .arg("--")
            .args(args),
        RUN_TIMEOUT,
    )
}

/// `kiln run -t virtio --image IMAGE --machine M [EXTRA] -- ARGS`: a built
/// image booted without another build.
fn boot(image: &Path, machine: Machine, extra: &[&str], args: &[&str]) -> Output {
    let dir = image
        .parent()
        .and_then(Path::parent)
        .expect("DIR/dist/IMAGE");
    let image = format!("--image={}", image.display());
    let flags: Vec<&str> = [image.as_str()]
        .into_iter()
        .chain(machine.flags())
        .chain(extra.iter().copied())
        .collect();
    run(dir, &flags, args)
}

/// The exit code, stdout and stderr, for assertions.
fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// examples/hello: its output, and the unikernel's status given back
/// through QEMU's isa-debug-exit: 0, and 64 for an argument error.
fn hello_gives_back_its_status(machine: Machine) -> PathBuf {
    let image = image("hello");
    let out = boot(&image, machine, &[], &["--times", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "hello\nhello\n", "{}", show(&out));
    assert!(
        !text(&out.stderr).contains("TCG"),
        "KVM was usable: {}",
        show(&out)
    );
    // An argument error: MirageOS's code, 64, given back through QEMU.
    let out = boot(&image, machine, &[], &["--times", "many"]);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(text(&out.stdout).contains("error: "), "{}", show(&out));
    image
}

/// hello on microvm, under KVM and under TCG.
#[test]
fn hello_on_microvm_gives_back_its_status() {
    if !can_boot("hello_on_microvm_gives_back_its_status") {
        return;
    }
    let image = hello_gives_back_its_status(Machine::Microvm);
    // The same image under QEMU's emulator: the TSC calibrated against
    // the PIT, no pvclock.
    let out = boot(
        &image,
        Machine::Microvm,
        &["--accel", "tcg"],
        &["--times", "2"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "hello\nhello\n", "{}", show(&out));
}

/// hello on q35 (SeaBIOS's PVH loader), under KVM.
#[test]
fn hello_on_q35_gives_back_its_status() {
    if !can_boot("hello_on_q35_gives_back_its_status") {
        return;
    }
    hello_gives_back_its_status(Machine::Q35);
}

/// `--console virtio`: the console's output goes through a virtio console
/// (virtio-serial-device on microvm, virtio-serial-pci on q35) when the VM
/// has one. `kiln run` multiplexes it with the 16550 on its stdout; QEMU
/// run by hand with the virtio console on a file of its own and the 16550
/// on stdout shows which device the guest wrote to. On microvm, kiln run
/// leaves ACPI on (devices in the DSDT) and the run by hand turns it off
/// (devices on the command line): both ways of finding devices.
#[test]
fn hello_writes_to_a_virtio_console() {
    if !can_boot("hello_writes_to_a_virtio_console") {
        return;
    }
    let image = image("hello");
    let tmp = temp_dir("virtio-console");
    for machine in [Machine::Microvm, Machine::Q35] {
        let virtio = ["--console", "virtio"];
        let out = boot(&image, machine, &virtio, &["--times=2"]);
        assert_eq!(out.status.code(), Some(0), "{machine:?}: {}", show(&out));
        assert_eq!(text(&out.stdout), "hello\nhello\n", "{}", show(&out));
        let print = [virtio[0], virtio[1], "--print-command"];
        let line = text(&boot(&image, machine, &print, &["--times=3"]).stdout);
        let file = tmp.path().join(format!("{machine:?}.out"));
        // On microvm with ACPI off, which makes QEMU announce the console
        // on the command line (`virtio_mmio.device=`, as Firecracker
        // does) instead of in the ACPI tables kiln run's microvm has.
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| match w {
                "stdio,id=console,mux=on,signal=off" => {
                    format!("file,id=console,path={}", file.display())
                }
                "chardev:console" => "stdio".to_string(),
                "microvm,accel=kvm" => "microvm,accel=kvm,acpi=off".to_string(),
                w => w.to_string(),
            })
            .collect();
        assert!(
            words.iter().any(|w| w.starts_with("file,id=console")),
            "{line}"
        );
        let mut qemu = Command::new(&words[0]);
        qemu.args(&words[1..]).stdin(Stdio::null());
        let out = run_for(&mut qemu, RUN_TIMEOUT);
        // QEMU's code for a guest status of 0.
        assert_eq!(out.status.code(), Some(1), "{line}\n{}", show(&out));
        assert!(
            out.stdout.is_empty(),
            "{machine:?}: the 16550 got output: {}",
            show(&out)
        );
        let console = std::fs::read_to_string(&file).unwrap_or_default();
        assert_eq!(console, "hello\nhello\nhello\n", "{machine:?}: {line}");
    }
}

/// examples/clock: the monotonic clock (pvclock), the wall clock (today's
/// date, as the host sees it) and the random device.
fn clock_runs(machine: Machine) {
    let out = boot(&image("clock"), machine, &[], &["--rolls", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    let today = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .expect("date runs");
    let today = text(&today.stdout).trim().to_string();
    assert!(stdout.contains("monotonic: "), "{stdout}");
    assert!(
        stdout.contains(&format!("wall: {today}T")),
        "not {today}: {stdout}"
    );
    assert_eq!(stdout.matches("roll ").count(), 4, "{stdout}");
}

#[test]
fn clock_on_microvm() {
    if can_boot("clock_on_microvm") {
        clock_runs(Machine::Microvm);
    }
}

#[test]
fn clock_on_q35() {
    if can_boot("clock_on_q35") {
        clock_runs(Machine::Q35);
    }
}

/// examples/notes: notes added in one run are there in the next, on a
/// virtio-blk disk with 512-byte and with 4096-byte sectors.
#[test]
fn notes_persist_on_a_virtio_disk() {
    if !can_boot("notes_persist_on_a_virtio_disk") {
        return;
    }
    let image = image("notes");
    let tmp = temp_dir("virtio-notes");
    for sector in ["512", "4096"] {
        let disk = tmp.path().join(format!("notes-{sector}.img"));
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let block = format!("--block:data={}", disk.display());
        let size = format!("--block-sector-size:data={sector}");
        for note in ["first", "second"] {
            let out = boot(
                &image,
                Machine::Microvm,
                &[],
                &[&block, &size, "--add", note],
            );
            assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        }
        let out = boot(&image, Machine::Microvm, &[], &[&block, &size]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert!(
            text(&out.stdout).contains("1: first\n2: second\n2 notes"),
            "{sector}: {}",
            show(&out)
        );
    }
}

/// The guest's address on the tap of [`serve`]'s namespace (the host's is
/// 10.0.0.1).
const GUEST: &str = "10.0.0.2";

/// A unikernel serving inside a network namespace of its own over the tap
/// `tap0` (10.0.0.1/24 on the host side): `kiln run -t virtio --image
/// IMAGE --machine M -- --net:service=tap0 --ipv4=10.0.0.2/24 ARGS`, once
/// its console shows `ready`. The namespace and the VM go when they are
/// dropped (bound in this order, the VM goes first).
fn serve(
    tag: &str,
    image: &Path,
    machine: Machine,
    args: &[&str],
    ready: &str,
) -> (Netns, Running) {
    let ns = Netns::new(tag);
    ns.add_tap("tap0");
    ns.address("tap0", "10.0.0.1/24", None);
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_kiln"));
    cmd.env("KILN_TARGET_DIR", shared_target_dir())
        .env("NO_COLOR", "1")
        .args(["run", "-t", "virtio"])
        .arg(format!("--image={}", image.display()))
        .args(machine.flags())
        .args(["--", "--net:service=tap0"])
        .arg(format!("--ipv4={GUEST}/24"))
        .args(args);
    // Its own process group, as a shell's job: a signal to the group is
    // what a terminal's Ctrl-C sends.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let what = image.file_name().unwrap().to_string_lossy().into_owned();
    let mut server = Running::spawn(cmd, tag);
    server.wait_until(&what, Duration::from_secs(60), |log| log.contains(ready));
    (ns, server)
}

/// curl inside `ns` for `http://10.0.0.2:8080/PATH` with `args`: the
/// status code (`-w %{http_code}`, which `args` may replace) and the body.
fn curl(ns: &Netns, path: &str, args: &[&str]) -> (String, Vec<u8>) {
    let mut curl = ns.command("curl");
    curl.args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://{GUEST}:8080/{path}"))
        .stdin(Stdio::null());
    let out = run_for(&mut curl, Duration::from_secs(10));
    let mut body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code = text(&body[split + 1..]);
    body.truncate(split);
    (code, body)
}

/// examples/www on a tap in a network namespace: every page byte for byte,
/// a 404, HEAD and a conditional GET (304), and 50 clients at once.
fn www_in_a_namespace(test: &str, machine: Machine) {
    if !can_boot(test) || !netns_or_skip(test, &[("curl", "--version", "curl")]) {
        return;
    }
    let image = image("www");
    // --help needs no device flags and names the ones kiln run maps; it
    // exits 63 (MirageOS's code for help), given back through QEMU.
    let out = boot(&image, machine, &[], &["--help"]);
    assert_eq!(out.status.code(), Some(63), "{}", show(&out));
    let help = text(&out.stdout);
    assert!(
        help.contains("attached by the VMM") && help.contains("--net:service=IFACE"),
        "{help}"
    );
    let (ns, mut server) = serve(
        "virtio-www",
        &image,
        machine,
        &["--port=8080"],
        "serving on port 8080",
    );
    for (path, bytes) in files_under(&htdocs()) {
        let (code, body) = curl(&ns, &path, &[]);
        assert_eq!(code, "200", "{path}\n{}", server.log());
        assert!(body == bytes, "{path}: the page differs from the file");
    }
    let (code, _) = curl(&ns, "no-such-page", &[]);
    assert_eq!(code, "404", "{}", server.log());

    // HEAD, then a conditional GET with the ETag: 304.
    let (code, head) = curl(&ns, "", &["-I"]);
    let head = text(&head);
    assert!(code == "200" && head.starts_with("HTTP/1.1 200"), "{head}");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .unwrap_or_else(|| panic!("no ETag: {head}"))
        .trim()
        .to_string();
    let if_none_match = format!("If-None-Match: {etag}");
    let (code, body) = curl(&ns, "", &["-H", &if_none_match]);
    assert_eq!(code, "304", "{}", server.log());
    assert!(body.is_empty(), "a body with 304: {}", text(&body));

    // 50 clients at once, each served in full.
    let tmp = temp_dir("virtio-www-parallel");
    let config = tmp.path().join("urls");
    let urls: String = (0..50)
        .map(|_| format!("url = \"http://{GUEST}:8080/\"\noutput = \"/dev/null\"\n"))
        .collect();
    std::fs::write(&config, urls).unwrap();
    let mut parallel = ns.command("curl");
    parallel
        .args([
            "-sS",
            "--max-time",
            "20",
            "--parallel",
            "--parallel-max",
            "50",
        ])
        .args(["-w", "%{http_code} %{size_download}\n", "-K"])
        .arg(&config)
        .stdin(Stdio::null());
    let out = run_for(&mut parallel, Duration::from_secs(30));
    let index = std::fs::read(htdocs().join("index.html")).unwrap();
    let expected = format!("200 {}", index.len());
    let lines = text(&out.stdout);
    assert_eq!(
        lines.lines().filter(|l| *l == expected).count(),
        50,
        "{lines}\n{}",
        server.log()
    );
    server.assert_running("www.virtio");
}

#[test]
fn www_on_microvm_in_a_namespace() {
    www_in_a_namespace("www_on_microvm_in_a_namespace", Machine::Microvm);
}

/// On q35 the network device is virtio-net-pci, and the wait polls it.
#[test]
fn www_on_q35_in_a_namespace() {
    www_in_a_namespace("www_on_q35_in_a_namespace", Machine::Q35);
}

/// A stop under `kiln run`: on microvm a Ctrl-C (SIGINT to kiln's process
/// group, as a terminal sends it) reaches only kiln, which presses ACPI's
/// power button; www sees the request, finishes and exits 0 through QEMU.
/// q35 has no button here: SIGTERM ends QEMU at once, and kiln says so and
/// exits 1, as kiln-hvt does with a guest that does not handle stops.
#[test]
fn a_stop_under_kiln_run_reaches_www() {
    let test = "a_stop_under_kiln_run_reaches_www";
    if !can_boot(test) || !netns_or_skip(test, &[("curl", "--version", "curl")]) {
        return;
    }
    let image = image("www");
    let signal = |server: &Running, to: libc::pid_t, signal: libc::c_int| {
        // SAFETY: kill touches no memory; the pid is a child not yet reaped.
        let r = unsafe { libc::kill(to, signal) };
        assert_eq!(r, 0, "kill({to}, {signal})\n{}", server.log());
    };
    let (ns, mut server) = serve(
        "virtio-stop",
        &image,
        Machine::Microvm,
        &["--port=8080"],
        "serving on port 8080",
    );
    let (code, _) = curl(&ns, "", &[]);
    assert_eq!(code, "200", "{}", server.log());
    signal(&server, -(server.id() as libc::pid_t), libc::SIGINT);
    let status = server.wait_exit(Duration::from_secs(15));
    let log = server.log();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    assert!(
        log.contains("SIGINT: the guest was asked to stop") && log.contains("stopping;"),
        "{log}"
    );
    drop((ns, server));

    let (_ns, mut server) = serve(
        "virtio-stop",
        &image,
        Machine::Q35,
        &["--port=8080"],
        "serving on port 8080",
    );
    signal(&server, server.id() as libc::pid_t, libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(15));
    let log = server.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains("stopped by a signal") && !log.contains("stopping;"),
        "{log}"
    );
}

/// examples/udp-echo over a tap in a network namespace: datagrams of 0 to
/// 1472 bytes (one Ethernet frame) come back whole from the port they
/// went to (the client runs inside the namespace:
/// `udp_echo_client_inside`).
fn udp_echo_in_a_namespace(test: &str, machine: Machine) {
    if !can_boot(test) || !netns_or_skip(test, &[]) {
        return;
    }
    let (ns, mut server) = serve(
        "virtio-udp",
        &image("udp-echo"),
        machine,
        &["--port=7777"],
        "echoing on port 7777",
    );
    let status = ns.run_test("udp_echo_client_inside", Duration::from_secs(60));
    assert!(status.success(), "the client failed\n{}", server.log());
    server.assert_running("udp-echo.virtio");
}

#[test]
fn udp_echo_on_microvm() {
    udp_echo_in_a_namespace("udp_echo_on_microvm", Machine::Microvm);
}

#[test]
fn udp_echo_on_q35() {
    udp_echo_in_a_namespace("udp_echo_on_q35", Machine::Q35);
}

/// The client of the udp-echo tests, run inside their namespace.
#[test]
#[ignore = "run inside a network namespace by udp_echo_on_microvm and udp_echo_on_q35"]
fn udp_echo_client_inside() {
    if kiln_testsupport::netns::inside().is_none() {
        eprintln!("udp_echo_client_inside: nothing to do outside the udp-echo tests");
        return;
    }
    let server: std::net::SocketAddr = format!("{GUEST}:7777").parse().unwrap();
    let socket = std::net::UdpSocket::bind("10.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for len in [1usize, 0, 17, 512, 1400, 1472] {
        let sent: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        // The first datagram may be dropped while the unikernel resolves
        // the client's address: send again, and skip late echoes of an
        // earlier size.
        let echoed = (0..10).any(|_| {
            socket.send_to(&sent, server).unwrap();
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                if from == server && buf[..n] == sent[..] {
                    return true;
                }
            }
            false
        });
        assert!(echoed, "no whole echo of a {len}-byte datagram");
    }
}

/// QEMU's virtio-net options that offer none of the offloads.
const NO_OFFLOADS: &str = ",csum=off,guest_csum=off,host_tso4=off,guest_tso4=off";
/// Bytes each way through bulk's echo port per case.
const BULK_BYTES: usize = 16 << 20;

/// examples/bulk on microvm over a tap, with virtio-net's checksum and
/// segmentation offloads (QEMU offers them with a tap backend) and
/// without (the device told to offer none: plain frames): 16 MiB through
/// the echo port come back byte for byte each time, and the host's tap
/// shows whether the guest took TCP segmentation (QEMU sets the tap's
/// offloads from the features the guest accepted; without kiln's offloads
/// it stays off in both cases). QEMU runs its command as `kiln run -t
/// virtio --print-command` prints it, the device's options added.
#[test]
fn bulk_on_virtio_with_and_without_offloads() {
    let test = "bulk_on_virtio_with_and_without_offloads";
    if !can_boot(test) || !netns_or_skip(test, &[("ethtool", "--version", "ethtool")]) {
        return;
    }
    let image = image("bulk");
    for offloads in [true, false] {
        let ns = Netns::new("virtio-bulk");
        ns.add_tap("tap0");
        ns.address("tap0", "10.0.0.1/24", None);
        let mut print = ns.command(env!("CARGO_BIN_EXE_kiln"));
        print
            .env("KILN_TARGET_DIR", shared_target_dir())
            .env("NO_COLOR", "1")
            .args(["run", "-t", "virtio", "--print-command"])
            .arg(format!("--image={}", image.display()))
            .args(["--", "--net:service=tap0"]);
        let out = run_for(&mut print, RUN_TIMEOUT);
        assert!(out.status.success(), "{}", show(&out));
        let line = text(&out.stdout);
        // Up to `-kernel`; the kernel and its quoted command line follow.
        let mut words: Vec<String> = line
            .split_whitespace()
            .take_while(|w| *w != "-kernel")
            .map(|w| {
                if w.starts_with("virtio-net-device,") && !offloads {
                    format!("{w}{NO_OFFLOADS}")
                } else {
                    w.to_string()
                }
            })
            .collect();
        assert!(
            words.iter().any(|w| w.starts_with("virtio-net-device,")),
            "{line}"
        );
        words.extend([
            "-kernel".to_string(),
            image.display().to_string(),
            "-append".to_string(),
            format!("--ipv4={GUEST}/24 --no-slaac"),
        ]);
        let mut qemu = ns.command(&words[0]);
        qemu.args(&words[1..]);
        let mut server = Running::spawn(qemu, "virtio-bulk");
        server.wait_until("bulk.virtio", Duration::from_secs(60), |log| {
            log.contains("echo on port")
        });
        let mut ethtool = ns.command("ethtool");
        ethtool.args(["-k", "tap0"]);
        let features = text(&run_for(&mut ethtool, Duration::from_secs(10)).stdout);
        let tso = if offloads { "on" } else { "off" };
        assert!(
            features.contains(&format!("tcp-segmentation-offload: {tso}")),
            "offloads {offloads}: {features}"
        );
        let status = ns.run_test("bulk_echo_client_inside", Duration::from_secs(60));
        assert!(
            status.success(),
            "offloads {offloads}: the echo failed ({status})\n{}",
            server.log()
        );
        server.assert_running("bulk.virtio");
    }
}

/// The client of `bulk_on_virtio_with_and_without_offloads`, run inside
/// its namespace: [`BULK_BYTES`] of noise to the echo port while reading
/// them back, compared byte for byte.
#[test]
#[ignore = "run inside a network namespace by bulk_on_virtio_with_and_without_offloads"]
fn bulk_echo_client_inside() {
    use std::io::{Read, Write};
    if kiln_testsupport::netns::inside().is_none() {
        eprintln!("bulk_echo_client_inside: nothing to do outside the bulk test");
        return;
    }
    // The same noise on both sides: xorshift from one seed.
    fn noise(state: &mut u64, buf: &mut [u8]) {
        for b in buf {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *b = *state as u8;
        }
    }
    const SEED: u64 = 0x6b69_6c6e_7669_7274;
    let addr: std::net::SocketAddr = format!("{GUEST}:5202").parse().unwrap();
    let mut conn = (0..50)
        .find_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .inspect_err(|_| std::thread::sleep(Duration::from_millis(100)))
                .ok()
        })
        .unwrap_or_else(|| panic!("cannot connect to {addr}"));
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let (mut state, mut chunk) = (SEED, vec![0u8; 64 * 1024]);
        let mut left = BULK_BYTES;
        while left > 0 {
            let n = left.min(chunk.len());
            noise(&mut state, &mut chunk[..n]);
            writer.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let (mut state, mut buf, mut want) = (SEED, vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut got = 0;
    loop {
        let n = conn
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading the echo after {got} bytes: {e}"));
        if n == 0 {
            break;
        }
        assert!(got + n <= BULK_BYTES, "more bytes back than sent");
        noise(&mut state, &mut want[..n]);
        assert!(
            buf[..n] == want[..n],
            "the echo differs within bytes {got}..{}",
            got + n
        );
        got += n;
    }
    sender.join().expect("the sender failed");
    assert_eq!(got, BULK_BYTES, "bytes echoed");
}

/// Regression: virtio-drivers 0.13's `VirtQueue::should_notify` stops
/// notifying once a ring's 16-bit available index wraps while the device's
/// `avail_event` is still below it, and the device then waits forever;
/// kiln computes the event index itself (`kiln_virtio::notify`). 140,000
/// pings take both network queues' indices (a receive buffer reposted and
/// a reply sent per ping) past 65,535 twice: every one must be answered,
/// and www must still serve a page. About a minute on this host, so by
/// hand: `cargo test -p kiln --test virtio -- --ignored ring_indices_wrap`.
#[test]
#[ignore = "a minute of ping flood: run by hand"]
fn ring_indices_wrap_under_a_ping_flood() {
    let test = "ring_indices_wrap_under_a_ping_flood";
    if !can_boot(test)
        || !netns_or_skip(
            test,
            &[
                ("curl", "--version", "curl"),
                ("ping", "-V", "iputils-ping"),
            ],
        )
    {
        return;
    }
    let (ns, mut server) = serve(
        "virtio-wrap",
        &image("www"),
        Machine::Microvm,
        &["--port=8080"],
        "serving on port 8080",
    );
    let count = 140_000;
    let mut ping = ns.command("ping");
    ping.args([
        "-f",
        "-q",
        "-c",
        &count.to_string(),
        "-w",
        "240",
        "10.0.0.2",
    ])
    .stdin(Stdio::null());
    let out = run_for(&mut ping, Duration::from_secs(250));
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!("{count} packets transmitted, {count} received")),
        "{report}\n{}",
        server.log()
    );
    let (code, _) = curl(&ns, "", &[]);
    assert_eq!(code, "200", "{}", server.log());
    server.assert_running("www.virtio");
}

/// Bad input to `kiln run -t virtio`: one clear error each, exit 2, and no
/// VMM started (each is refused before QEMU would start).
#[test]
fn bad_input_is_refused_before_a_vmm_starts() {
    let tmp = temp_dir("virtio-bad");
    let dir = example("notes");
    let bytes = std::fs::read(image("notes")).unwrap();
    let truncated = tmp.path().join("truncated.virtio");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let image_flag = |p: &Path| format!("--image={}", p.display());
    let disk = tmp.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 16]).unwrap();
    let cases: Vec<(Vec<String>, Vec<String>, &str)> = vec![
        (
            vec![image_flag(&truncated)],
            vec![format!("--block:data={}", disk.display())],
            "truncated: a segment ends past the file's",
        ),
        (
            vec![image_flag(Path::new(env!("CARGO_BIN_EXE_kiln")))],
            vec![],
            "not an x86_64 executable",
        ),
        (
            vec![],
            vec![format!(
                "--block:data={}",
                tmp.path().join("absent.img").display()
            )],
            "absent.img: No such file or directory",
        ),
        (vec![], vec![], "the block device `data` is not attached"),
        (
            vec![],
            vec![
                format!("--block:data={}", disk.display()),
                "--net:nope=kiln-no-tap0".to_string(),
            ],
            "the image has no net device `nope`",
        ),
    ];
    for (extra, args, message) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&dir, &extra, &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{message}: {}", show(&out));
        assert_eq!(stderr.matches("error: ").count(), 1, "{}", show(&out));
        assert!(stderr.contains(message), "{message}: {}", show(&out));
        assert!(out.stdout.is_empty(), "a guest ran: {}", show(&out));
    }
    // A tap that does not exist: www's net device.
    let out = boot(
        &image("www"),
        Machine::Microvm,
        &[],
        &["--net:service=kiln-no-tap0"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("there is no network interface `kiln-no-tap0` here"),
        "{}",
        show(&out)
    );
    assert!(out.stdout.is_empty(), "a guest ran: {}", show(&out));
}

/// `--print-command` prints each VMM's command without running it.
#[test]
fn print_command_for_each_vmm() {
    let hello = image("hello");
    let print = |vmm: &str| {
        let extra = ["--print-command", "--vmm", vmm];
        let out = boot(&hello, Machine::Microvm, &extra, &["--times", "3"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        text(&out.stdout)
    };
    let qemu = print("qemu");
    assert!(qemu.starts_with("qemu-system-x86_64 -M microvm,"), "{qemu}");
    assert!(
        qemu.contains("-device isa-debug-exit,iobase=0xf4,iosize=4"),
        "{qemu}"
    );
    assert!(qemu.trim_end().ends_with("-append '--times 3'"), "{qemu}");
    let fc = print("firecracker");
    assert!(fc.contains("\"boot_args\": \"--times 3\""), "{fc}");
    let ch = print("cloud-hypervisor");
    assert!(ch.starts_with("cloud-hypervisor --kernel "), "{ch}");
}

/// q35: the same image finds its disk over PCI (virtio-blk-pci, through
/// SeaBIOS's PVH loader), and notes persist there too.
#[test]
fn notes_persist_on_q35_over_pci() {
    if !can_boot("notes_persist_on_q35_over_pci") {
        return;
    }
    let notes = image("notes");
    let tmp = temp_dir("virtio-q35");
    let disk = tmp.path().join("notes.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let block = format!("--block:data={}", disk.display());
    let out = boot(&notes, Machine::Q35, &[], &[&block, "--add", "over-pci"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = boot(&notes, Machine::Q35, &[], &[&block]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        text(&out.stdout),
        "1: over-pci\n1 notes\n",
        "{}",
        show(&out)
    );
}

/// The boot benchmark, by hand (`cargo test -p kiln --test virtio --
/// --ignored --nocapture boot_time`): `hello --times 0` against the floor
/// guest under the same QEMU command line (microvm, KVM), interleaved,
/// `KILN_BOOT_RUNS` runs each (41); prints both medians and the ratio.
#[test]
#[ignore = "a benchmark: run by hand"]
fn boot_time_against_the_floor_guest() {
    if !can_boot("boot_time_against_the_floor_guest") {
        return;
    }
    let runs: usize = std::env::var("KILN_BOOT_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(41);
    let hello = image("hello");
    let tmp = temp_dir("virtio-boot");
    let floor = tmp.path().join("floor.elf");
    std::fs::write(&floor, kiln_virtio::host::floor_image()).unwrap();
    // The command line kiln run uses, without devices.
    let out = boot(
        &hello,
        Machine::Microvm,
        &["--print-command"],
        &["--times", "0"],
    );
    let line = text(&out.stdout);
    let words: Vec<&str> = line.split_whitespace().collect();
    let kernel = words.iter().position(|w| *w == "-kernel").unwrap();
    let base = &words[1..kernel];
    let time = |image: &Path, append: &str| {
        let start = std::time::Instant::now();
        let status = Command::new(words[0])
            .args(base)
            .arg("-kernel")
            .arg(image)
            .args(["-append", append])
            .stdout(Stdio::null())
            .status()
            .expect("qemu runs");
        assert_eq!(
            status.code(),
            Some(1),
            "{} exited {status}",
            image.display()
        );
        start.elapsed()
    };
    let (mut f, mut h) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        f.push(time(&floor, ""));
        h.push(time(&hello, "--times 0"));
    }
    f.sort();
    h.sort();
    let (mf, mh) = (f[runs / 2], h[runs / 2]);
    println!(
        "boot on microvm+KVM, median of {runs}: floor {mf:?}, hello {mh:?}, ratio {:.3}",
        mh.as_secs_f64() / mf.as_secs_f64()
    );
}

/// notes' crash-test mode on microvm: QEMU is killed with SIGKILL while
/// the store changes, six times at different moments; after each restart
/// every acknowledged change is there (the change in flight may or may not
/// be).
#[test]
fn notes_lose_no_acknowledged_change_when_qemu_is_killed() {
    let test = "notes_lose_no_acknowledged_change_when_qemu_is_killed";
    if !can_boot(test) {
        return;
    }
    let notes = image("notes");
    let dir = example("notes");
    let tmp = temp_dir("virtio-crash");
    let disk = tmp.path().join("crash.img");
    std::fs::write(&disk, vec![0u8; 128 << 10]).unwrap();
    let block = format!("--block:data={}", disk.display());
    let mut model = Model::default();
    let mut last = 0u32;
    for i in 0..=6u64 {
        let churn = if i < 6 { "1000000" } else { "0" };
        let from = (last + 1).to_string();
        let mut cmd = kiln_in(&dir);
        cmd.args(["run", "-t", "virtio"])
            .arg(format!("--image={}", notes.display()))
            .args(["--", &block])
            .args(["--state", "--churn", churn, "--from", &from])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = process::ChildGuard(cmd.spawn().expect("start kiln"));
        // Whole lines only: the line being written when QEMU is killed is
        // cut short, and its number with it.
        let rx = line_reader(child.0.stdout.take().expect("piped stdout"));
        // What the restart found.
        let mut found = std::collections::BTreeMap::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("iteration {i}: no `ready` ({e})"));
            if line == "ready" {
                break;
            }
            if let Some((key, value)) = line.strip_prefix("have ").and_then(|r| r.split_once(' ')) {
                found.insert(key.to_string(), value.to_string());
            }
        }
        let problems = model.check(&found);
        assert!(problems.is_empty(), "iteration {i}: {problems:#?}");
        if i == 6 {
            break;
        }
        // Let the churn run a while, then kill QEMU.
        std::thread::sleep(Duration::from_millis(30 + 53 * i));
        let qemu = process::children(child.0.id())
            .into_iter()
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "qemu-system-x86")
            })
            .expect("QEMU runs under kiln");
        let _ = Command::new("kill")
            .args(["-KILL", &qemu.to_string()])
            .status();
        let _ = child.0.wait();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
            model.apply(&line, &mut last);
        }
    }
    assert!(last > 6, "the churn made only {last} changes");
    println!("{last} changes tried over 6 kills of QEMU");
}
