//! End to end on spt: builds the spt stand-in (`tests/hello-spt-handmade`,
//! the hvt stand-in's sources with kiln-solo5's `spt` feature) for
//! `x86_64-unknown-none` and the `kiln-spt` tender, then runs the image
//! under the tender and checks its output and exit status: hello and exit
//! codes, a forbidden system call killed by the filter, faults, malformed
//! images refused, a block write past the device's end killed by the
//! filter, net and block devices over an inherited descriptor, and an idle
//! guest that blocks.
//!
//! spt needs no special device: only seccomp and ptrace, which every Linux
//! host kiln supports has.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest a guest may run before the test kills it.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

struct Built {
    tender: PathBuf,
    image: PathBuf,
    devices: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs cargo with `args` in `dir`, into `target_dir`, or returns why not.
fn cargo(dir: &Path, target_dir: &Path, args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo {} failed in {}:\n{}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Builds the tender and the images once for all tests.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace().join("target"), PathBuf::from)
            .join("kiln-solo5-e2e-spt");
        cargo(
            &workspace(),
            &target_dir,
            &["build", "--release", "-p", "kiln-spt"],
        )?;
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hello-spt-handmade");
        cargo(
            &example,
            &target_dir,
            &["build", "--release", "--target", "x86_64-unknown-none"],
        )?;
        let images = target_dir.join("x86_64-unknown-none/release");
        Ok(Built {
            tender: target_dir.join("release/kiln-spt"),
            image: images.join("hello-spt-handmade"),
            devices: images.join("devices"),
        })
    });
    match built {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `image` under the tender with `flags` before it and guest
/// arguments `args` after it.
fn run_image(flags: &[String], image: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(&built().tender);
    command.arg("--mem=64").args(flags).arg(image).args(args);
    wait(command)
}

/// Runs the hello image with guest arguments `args`.
fn run(args: &[&str]) -> Run {
    run_image(&[], &built().image, args)
}

/// Runs `command` to completion, or kills it after [`RUN_TIMEOUT`].
fn wait(mut command: Command) -> Run {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for kiln-spt") {
            break status;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {RUN_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut stdout).expect("read guest output");
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut stderr).expect("read tender output");
    }
    Run {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Removes a file when dropped, even if the test fails.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!(
            "kiln-spt-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn hello_prints_and_exits_zero() {
    let r = run(&["--times", "2"]);
    assert_eq!(
        r.stdout, "hello from kiln on spt (1/2)\nhello from kiln on spt (2/2)\n",
        "stderr:\n{}",
        r.stderr
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(r.stderr, "");
}

#[test]
fn the_exit_code_is_the_unikernels() {
    let r = run(&["--exit", "7"]);
    assert_eq!(r.code, Some(7), "stderr:\n{}", r.stderr);
    let r = run(&["--fail"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stdout, "error: disk on fire\n");
    let r = run(&["--panic"]);
    assert_eq!(r.code, Some(255));
    assert!(
        r.stdout
            .contains("kiln: panicked at ../hello-hvt-handmade/src/main.rs:"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("deliberate panic, times = 3"));
}

#[test]
fn a_forbidden_system_call_kills_the_guest_and_is_reported() {
    let r = run(&["--getpid"]);
    assert_eq!(r.code, Some(255), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr.contains(
            "kiln-spt: guest killed by seccomp: forbidden system call 39 (getpid) at rip 0x"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn faults_kill_the_guest_and_are_reported() {
    let r = run(&["--null-write"]);
    assert_eq!(r.code, Some(255), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr
            .contains("kiln-spt: guest crashed: SIGSEGV at 0x0 (rip 0x"),
        "{}",
        r.stderr
    );
    // Executing data: the fault is at the instruction pointer itself.
    let r = run(&["--exec-data"]);
    assert_eq!(r.code, Some(255), "stderr:\n{}", r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("guest crashed: SIGSEGV at "))
        .unwrap_or_else(|| panic!("no crash report in:\n{}", r.stderr));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words[words.len() - 3];
    let rip = words[words.len() - 1].trim_end_matches(')');
    assert_eq!(at, rip, "{line}");
    // Writing read-only data.
    let r = run(&["--ro-write"]);
    assert_eq!(r.code, Some(255));
    assert!(
        r.stderr.contains("guest crashed: SIGSEGV at 0x1"),
        "{}",
        r.stderr
    );
}

/// Finds `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The program headers of `elf`: (offset of each, its p_type).
fn phdrs(elf: &[u8]) -> Vec<(usize, u32)> {
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let (off, size, num) = (
        u64_at(32) as usize,
        u16_at(54) as usize,
        u16_at(56) as usize,
    );
    (0..num)
        .map(|i| {
            let at = off + i * size;
            (at, u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()))
        })
        .collect()
}

#[test]
fn malformed_images_are_refused() {
    let good = std::fs::read(&built().image).expect("read the image");
    let abi_note = kiln_abi::AbiNote::spt().to_bytes();
    let abi_at = find(&good, &abi_note).expect("the spt ABI note is in the image");

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push((
        "truncated",
        good[..good.len() / 2].to_vec(),
        "outside the file",
    ));
    cases.push(("empty", Vec::new(), "not a 64-bit little-endian ELF file"));

    // An hvt image: the same bytes with the hvt ABI note.
    let mut hvt = good.clone();
    hvt[abi_at..abi_at + abi_note.len()].copy_from_slice(&kiln_abi::AbiNote::hvt().to_bytes());
    cases.push((
        "hvt",
        hvt,
        "image is built for the hvt target, not spt; hint: run it with kiln-hvt",
    ));

    let mut old = good.clone();
    // The version follows the target in the descriptor (20 bytes in).
    old[abi_at + 24..abi_at + 28].copy_from_slice(&1u32.to_le_bytes());
    cases.push(("old ABI", old, "spt ABI version 1"));

    // No notes: every PT_NOTE header becomes PT_NULL.
    let mut none = good.clone();
    for (at, kind) in phdrs(&good) {
        if kind == 4 {
            none[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
        }
    }
    cases.push(("no notes", none, "no Solo5 ABI note"));

    // A bad manifest: its version (the first word of `struct mft`, 24
    // bytes into the note) changed.
    let namesz = 6u32.to_le_bytes();
    let mft_type = kiln_abi::note::MFT_NOTE_TYPE.to_le_bytes();
    let mut bad_mft = good.clone();
    let mft_at = (0..good.len() - 20)
        .find(|&i| {
            good[i..i + 4] == namesz
                && good[i + 8..i + 12] == mft_type
                && &good[i + 12..i + 17] == b"Solo5"
        })
        .expect("the manifest note is in the image");
    bad_mft[mft_at + 24..mft_at + 28].copy_from_slice(&9u32.to_le_bytes());
    cases.push(("bad manifest", bad_mft, "invalid manifest"));

    // A segment outside guest memory: the last PT_LOAD moved to 1 GiB.
    let mut outside = good.clone();
    let (last_load, _) = *phdrs(&good)
        .iter()
        .rfind(|(_, kind)| *kind == 1)
        .expect("a PT_LOAD");
    outside[last_load + 16..last_load + 24].copy_from_slice(&(1u64 << 30).to_le_bytes());
    cases.push(("outside", outside, "does not fit in guest memory"));

    for (name, bytes, expected) in cases {
        let file = TempFile::new(&name.replace(' ', "-"));
        std::fs::write(&file.0, &bytes).expect("write the image");
        let r = run_image(&[], &file.0, &[]);
        assert_eq!(r.code, Some(1), "{name}: stderr:\n{}", r.stderr);
        assert!(r.stdout.is_empty(), "{name}: the guest ran:\n{}", r.stdout);
        assert!(
            r.stderr.contains("invalid spt image") && r.stderr.contains(expected),
            "{name}: expected '{expected}' in:\n{}",
            r.stderr
        );
    }
}

/// A disk of 8 sectors whose first bytes are known, and one end of a
/// datagram socket pair for the net device (which keeps frame boundaries as
/// a tap does), inherited by the tender.
struct Devices {
    disk: TempFile,
    ours: std::os::unix::net::UnixDatagram,
    theirs: std::os::unix::net::UnixDatagram,
}

impl Devices {
    fn new(tag: &str) -> Devices {
        use std::os::fd::AsRawFd;
        let disk = TempFile::new(tag);
        let mut content = vec![0u8; 8 * 512];
        content[..8].copy_from_slice(b"KILNDISK");
        std::fs::write(&disk.0, &content).expect("write the disk image");
        let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().expect("socketpair");
        ours.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        // SAFETY: fcntl on a descriptor this test owns; clears FD_CLOEXEC so
        // the tender inherits it.
        let rc = unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) };
        assert_eq!(rc, 0, "cannot clear FD_CLOEXEC");
        Devices { disk, ours, theirs }
    }

    fn flags(&self) -> Vec<String> {
        use std::os::fd::AsRawFd;
        vec![
            format!("--net:service=@{}", self.theirs.as_raw_fd()),
            "--net-mac:service=02:00:00:00:00:01".into(),
            format!("--block:disk={}", self.disk.0.display()),
        ]
    }
}

#[test]
fn a_block_write_past_the_end_is_killed_by_the_filter() {
    let d = Devices::new("disk-hostile");
    let r = run_image(&d.flags(), &built().devices, &["--pwrite-past-end"]);
    assert_eq!(
        r.code,
        Some(255),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stderr
            .contains("guest killed by seccomp: forbidden system call 18 (pwrite64)"),
        "{}",
        r.stderr
    );
    let after = std::fs::read(&d.disk.0).expect("read the disk image");
    assert_eq!(after.len(), 8 * 512, "the disk grew");
    assert!(after[8..].iter().all(|&b| b == 0), "the disk was written");
}

#[test]
fn net_and_block_devices_work() {
    let d = Devices::new("disk");
    let mut command = Command::new(&built().tender);
    command
        .arg("--mem=64")
        .args(d.flags())
        .arg(&built().devices)
        .args(["--frames", "2"]);
    let ours = d.ours.try_clone().expect("clone the socket");
    let peer = std::thread::spawn(move || {
        let mut echoes = Vec::new();
        for i in 0..2u8 {
            let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5];
            frame.extend_from_slice(b"frame ");
            frame.push(b'0' + i);
            ours.send(&frame).expect("send a frame");
            let mut buf = [0u8; 2048];
            let n = ours.recv(&mut buf).expect("the guest echoes the frame");
            echoes.push(buf[..n].to_vec());
        }
        echoes
    });
    let r = wait(command);
    let echoes = peer.join().expect("peer thread");
    assert_eq!(
        r.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        r.stdout,
        "block: 8 sectors of 512 bytes\n\
         sector 0: [4b, 49, 4c, 4e, 44, 49, 53, 4b]\n\
         block: write and read back ok\n\
         block: 6-sector write and read back ok\n\
         past the end: sectors 8..+1 are outside the device's 8 sectors\n\
         net: mac 02:00:00:00:00:01 mtu 1500\n\
         net: echoed frame 1 of 21 bytes\n\
         net: echoed frame 2 of 21 bytes\n"
    );
    for (i, echo) in echoes.iter().enumerate() {
        let mut expected = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5];
        expected.extend_from_slice(format!("frame {i}").as_bytes());
        assert_eq!(echo, &expected);
    }
    let written = std::fs::read(&d.disk.0).expect("read the disk image");
    let pattern: Vec<u8> = (0..512).map(|i| (i as u8) ^ 0x5a).collect();
    assert_eq!(&written[512..1024], &pattern[..], "sector 1 on the host");
    let many: Vec<u8> = (0..6 * 512).map(|i| (i as u8) ^ 0xa5).collect();
    assert_eq!(&written[1024..], &many[..], "sectors 2 to 7 on the host");
    assert_eq!(&written[..8], b"KILNDISK");
}

#[test]
fn an_unattached_or_unknown_device_is_refused() {
    let r = run_image(&[], &built().devices, &[]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("hint: add --net:service=TAP"),
        "{}",
        r.stderr
    );
    let r = run_image(&["--block:nope=/dev/null".into()], &built().image, &[]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("declares no BLOCK_BASIC device named 'nope'"),
        "{}",
        r.stderr
    );
}

#[test]
fn clocks_sleep_and_random_work() {
    let r = run(&["--devices"]);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let field = |name: &str| -> String {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{}", r.stdout))
            .to_string()
    };
    let year: u32 = field("wall clock: ")[..4].parse().expect("a year");
    assert!(year >= 2024, "wall clock year {year}");
    let slept: u64 = field("slept: ")
        .trim_end_matches(" ms")
        .parse()
        .expect("milliseconds");
    assert!(slept >= 50, "a 50 ms sleep took {slept} ms");
    assert_eq!(field("random: "), "ok");
}

/// An idle unikernel is blocked in `epoll_pwait`, not spinning: a guest
/// that sleeps for a second uses a small fraction of a second of CPU. The
/// bound is loose on purpose; a spinning guest would use the whole second.
#[test]
fn an_idle_guest_blocks_instead_of_spinning() {
    let b = built();
    // Reaped with wait4 below, which also gives its resource usage; on
    // Linux that includes the children it reaped (the guest).
    #[allow(clippy::zombie_processes)]
    let child = Command::new(&b.tender)
        .arg("--mem=64")
        .arg(&b.image)
        .args(["--times", "1", "--pause", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kiln-spt");
    let pid = i32::try_from(child.id()).expect("pid");
    let start = Instant::now();
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child without blocking; both pointers
        // are valid for writes.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(rc >= 0, "wait4: {}", std::io::Error::last_os_error());
        if rc == pid {
            break (status, usage);
        }
        if start.elapsed() > RUN_TIMEOUT {
            // SAFETY: kills our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("guest still running after {RUN_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = start.elapsed();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status:#x}"
    );
    let cpu = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    let used = cpu(usage.ru_utime) + cpu(usage.ru_stime);
    assert!(wall >= Duration::from_millis(1000), "slept only {wall:?}");
    assert!(
        used < Duration::from_millis(500),
        "{used:?} of CPU while sleeping for a second: the guest spins"
    );
}

/// A network namespace with tap `ktap0` (down) inside, deleted on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn ip(args: &[&str]) -> bool {
        Command::new("ip")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `kiln-spt-PID` with tap `ktap0`, or `None` (skips loudly, fails
    /// under CI=true) when namespaces cannot be made here.
    fn with_tap() -> Option<Self> {
        let name = format!("kiln-spt-{}", std::process::id());
        if !Self::ip(&["netns", "add", &name]) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cannot create a network namespace and CI=true"
            );
            eprintln!("SKIPPED: cannot create a network namespace (needs root and iproute2)");
            return None;
        }
        let ns = Self { name };
        assert!(
            Self::ip(&[
                "-n", &ns.name, "tuntap", "add", "dev", "ktap0", "mode", "tap"
            ]),
            "cannot create tap ktap0 in {}",
            ns.name
        );
        Some(ns)
    }

    fn exec(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    fn rx_packets(&self) -> u64 {
        let out = self
            .exec(&["cat", "/sys/class/net/ktap0/statistics/rx_packets"])
            .output()
            .expect("read the tap's counters");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        Self::ip(&["netns", "del", &self.name]);
    }
}

/// Kills and reaps a child when dropped, even if the test fails.
struct ChildGuard(Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Collects a guarded child's output and status, or kills it after
/// [`RUN_TIMEOUT`].
fn finish(mut guard: ChildGuard) -> Run {
    let mut child = guard.0.take().expect("a child");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {RUN_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut stderr);
    }
    Run {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// The guest echoes a frame the host kernel sends over a real tap
/// interface (an ARP request for a neighbour on the tap's subnet), all
/// inside a network namespace.
#[test]
fn a_tap_interface_in_a_namespace_carries_frames() {
    let b = built();
    let Some(ns) = NetNs::with_tap() else {
        return;
    };
    let disk = TempFile::new("tap-disk");
    std::fs::write(&disk.0, vec![0u8; 8 * 512]).expect("write the disk image");
    let before = ns.rx_packets();
    let guest = ChildGuard(Some(
        ns.exec(&[
            &b.tender.display().to_string(),
            "--mem=64",
            "--net:service=ktap0",
            "--net-mac:service=02:00:00:00:00:07",
            &format!("--block:disk={}", disk.0.display()),
            &b.devices.display().to_string(),
            "--frames",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln-spt in the namespace"),
    ));
    // Give the guest its address's neighbour to resolve: the kernel sends
    // ARP requests on the tap, the guest echoes the first frame it gets.
    assert!(NetNs::ip(&[
        "-n",
        &ns.name,
        "addr",
        "add",
        "10.77.0.1/24",
        "dev",
        "ktap0"
    ]));
    assert!(NetNs::ip(&["-n", &ns.name, "link", "set", "ktap0", "up"]));
    let mut guest = guest;
    // Bounded: at most 20 one-second pings, until the guest has exited.
    for _ in 0..20 {
        let exited = guest
            .0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if exited {
            break;
        }
        let _ = ns
            .exec(&["ping", "-c", "1", "-W", "1", "10.77.0.2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let r = finish(guest);
    assert_eq!(
        r.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.contains("net: mac 02:00:00:00:00:07 mtu 1500")
            && r.stdout.contains("net: echoed frame 1 of"),
        "{}",
        r.stdout
    );
    assert!(
        ns.rx_packets() > before,
        "the tap received nothing from the guest"
    );
}

/// The guest process runs under the filter (seccomp mode 2) while it
/// sleeps; the tender (its parent) does not need one.
#[test]
fn the_guest_runs_under_the_seccomp_filter() {
    let b = built();
    let tender = ChildGuard(Some(
        Command::new(&b.tender)
            .arg("--mem=64")
            .arg(&b.image)
            .args(["--times", "1", "--pause", "1500"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kiln-spt"),
    ));
    let pid = tender.0.as_ref().map(|c| c.id()).expect("pid");
    let children = format!("/proc/{pid}/task/{pid}/children");
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut mode = String::new();
    while Instant::now() < deadline {
        let guest = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(guest) = guest.split_whitespace().next() {
            let status =
                std::fs::read_to_string(format!("/proc/{guest}/status")).unwrap_or_default();
            mode = status
                .lines()
                .find(|l| l.starts_with("Seccomp:"))
                .unwrap_or("")
                .to_string();
            if mode.ends_with('2') {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = finish(tender);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(mode, "Seccomp:\t2", "no seccomp filter while the guest ran");
}
