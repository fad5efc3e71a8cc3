//! What the hvt and spt end-to-end tests share: building a tender and the stand-in guests, running them bounded in time, their devices and the checks both targets pass.
#![allow(dead_code)] // each test file uses a different subset

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use kiln_testsupport::build::{cargo, target_dir, workspace_root};
use kiln_testsupport::process::{self, ProcessError};

/// Longest a guest may run before the test kills it.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// A Solo5 target and its stand-in guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Hvt,
    Spt,
}

impl Target {
    fn tender(self) -> &'static str {
        match self {
            Target::Hvt => "kiln-hvt",
            Target::Spt => "kiln-spt",
        }
    }

    fn stand_in(self) -> &'static str {
        match self {
            Target::Hvt => "hello-hvt-handmade",
            Target::Spt => "hello-spt-handmade",
        }
    }

    fn target_dir(self) -> PathBuf {
        let sub = match self {
            Target::Hvt => "kiln-solo5-e2e",
            Target::Spt => "kiln-solo5-e2e-spt",
        };
        target_dir(env!("CARGO_MANIFEST_DIR"), sub)
    }
}

/// The tender and the stand-in's two images: `hello` and `devices`.
pub struct Built {
    pub tender: PathBuf,
    pub image: PathBuf,
    pub devices: PathBuf,
}

fn build(target: Target) -> Result<Built, String> {
    let target_dir = target.target_dir();
    let root = workspace_root(env!("CARGO_MANIFEST_DIR"));
    cargo(
        &root,
        &target_dir,
        &["build", "--release", "-p", target.tender()],
    )
    .map_err(|e| e.to_string())?;
    let stand_in = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(target.stand_in());
    cargo(
        &stand_in,
        &target_dir,
        &["build", "--release", "--target", "x86_64-unknown-none"],
    )
    .map_err(|e| e.to_string())?;
    let images = target_dir.join("x86_64-unknown-none/release");
    Ok(Built {
        tender: target_dir.join("release").join(target.tender()),
        image: images.join(target.stand_in()),
        devices: images.join("devices"),
    })
}

/// The tender and images of `target`, built once for all tests.
pub fn built(target: Target) -> &'static Built {
    static HVT: OnceLock<Result<Built, String>> = OnceLock::new();
    static SPT: OnceLock<Result<Built, String>> = OnceLock::new();
    let cell = match target {
        Target::Hvt => &HVT,
        Target::Spt => &SPT,
    };
    match cell.get_or_init(|| build(target)) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

/// How a guest run ended.
pub struct Run {
    pub code: Option<i32>,
    /// The signal that ended the tender (kiln-spt ends by its guest's).
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts that the guest exited with `code`, showing its output and
    /// the tender's if not.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `command` to completion, or kills it after [`RUN_TIMEOUT`] and
/// fails the test.
pub fn wait(mut command: Command) -> Run {
    match process::run(&mut command, RUN_TIMEOUT) {
        Ok(out) => Run {
            code: out.status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Err(e @ ProcessError::TimedOut { .. }) => panic!("{command:?}: {e}"),
        Err(e) => panic!("{e}"),
    }
}

/// Runs `image` under `target`'s tender with 64 MiB, `flags` before the
/// image and guest arguments `args` after it.
pub fn run_image(target: Target, flags: &[String], image: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(&built(target).tender);
    command.arg("--mem=64").args(flags).arg(image).args(args);
    wait(command)
}

/// A file in the temporary directory, removed on drop (also when the
/// test fails).
pub type TempFile = tempfile::TempPath;

/// A new empty file `kiln-solo5-TAG-` and a random suffix.
pub fn temp_file(tag: &str) -> TempFile {
    tempfile::Builder::new()
        .prefix(&format!("kiln-solo5-{tag}-"))
        .tempfile()
        .expect("create a temporary file")
        .into_temp_path()
}

/// A disk of 8 sectors whose first bytes are `KILNDISK`, and one end of a
/// datagram socket pair for the net device (which keeps frame boundaries
/// as a tap does), inherited by the tender; the test holds the other end.
pub struct Devices {
    pub disk: TempFile,
    pub ours: UnixDatagram,
    pub theirs: UnixDatagram,
}

impl Devices {
    pub fn new(tag: &str) -> Devices {
        let disk = temp_file(tag);
        let mut content = vec![0u8; 8 * 512];
        content[..8].copy_from_slice(b"KILNDISK");
        std::fs::write(&disk, &content).expect("write the disk image");
        let (ours, theirs) = UnixDatagram::pair().expect("socketpair");
        ours.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        process::inheritable(&theirs).expect("clear FD_CLOEXEC on the tender's end");
        Devices { disk, ours, theirs }
    }

    /// The tender's flags that attach them.
    pub fn flags(&self) -> Vec<String> {
        use std::os::fd::AsRawFd;
        vec![
            format!("--net:service=@{}", self.theirs.as_raw_fd()),
            "--net-mac:service=02:00:00:00:00:01".into(),
            format!("--block:disk={}", self.disk.display()),
        ]
    }
}

/// The `devices` image with 8 sectors of disk and a socket-pair net
/// device, its tender run with the environment `env`: its report (saying
/// how the net device moves frames: kiln's NET_EXCHANGE, Solo5's net ring
/// or the hypercalls, as `path` expects), the two frames it echoes with their addresses swapped, and
/// the sectors it writes as the host sees them.
pub fn check_net_and_block(target: Target, env: &[(&str, &str)], path: &str, exits: u32) {
    check_net_and_block_burst(target, env, path, exits, None);
}

/// [`check_net_and_block`], first queueing `burst.0` frames of 60 bytes
/// for the guest before it starts, which it must receive in `burst.1`
/// exits.
pub fn check_net_and_block_burst(
    target: Target,
    env: &[(&str, &str)],
    path: &str,
    exits: u32,
    burst: Option<(u32, u32)>,
) {
    let b = built(target);
    let d = Devices::new("disk");
    let mut command = Command::new(&b.tender);
    command
        .envs(env.iter().copied())
        .arg("--mem=64")
        .args(d.flags())
        .arg(&b.devices)
        .args(["--frames", "2"]);
    let mut report = String::new();
    if let Some((count, took)) = burst {
        command.args(["--burst", &count.to_string()]);
        // Queued before the tender starts: the guest finds them all
        // waiting at its first exchange.
        for i in 0..count {
            let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5];
            frame.resize(60, i as u8);
            d.ours.send(&frame).expect("queue a frame of the burst");
        }
        report = format!("net: a burst of {count} frames took {took} exits\n");
    }
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
    r.assert_code(0);
    assert_eq!(
        r.stdout,
        format!(
            "{report}block: 8 sectors of 512 bytes\n\
             sector 0: [4b, 49, 4c, 4e, 44, 49, 53, 4b]\n\
             block: write and read back ok\n\
             block: 6-sector write and read back ok\n\
             past the end: sectors 8..+1 are outside the device's 8 sectors\n\
             block: 8 reads issued together took {exits} exits\n\
             net: mac 02:00:00:00:00:01 mtu 1500\n\
             net: frames by {path}\n\
             net: echoed frame 1 of 21 bytes\n\
             net: echoed frame 2 of 21 bytes\n"
        )
    );
    for (i, echo) in echoes.iter().enumerate() {
        let mut expected = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5];
        expected.extend_from_slice(format!("frame {i}").as_bytes());
        assert_eq!(echo, &expected);
    }
    let written = std::fs::read(&*d.disk).expect("read the disk image");
    let pattern: Vec<u8> = (0..512).map(|i| (i as u8) ^ 0x5a).collect();
    assert_eq!(&written[512..1024], &pattern[..], "sector 1 on the host");
    let many: Vec<u8> = (0..6 * 512).map(|i| (i as u8) ^ 0xa5).collect();
    assert_eq!(&written[1024..], &many[..], "sectors 2 to 7 on the host");
    assert_eq!(&written[..8], b"KILNDISK");
}

/// The hello image's `--devices` report: a wall clock in this decade, a
/// 50 ms sleep that took at least 50 ms, random bytes.
pub fn check_clocks_sleep_and_random(target: Target) {
    let r = run_image(target, &[], &built(target).image, &["--devices"]);
    r.assert_code(0);
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
    assert!(
        slept >= 50,
        "a 50 ms sleep took {slept} ms of the monotonic clock"
    );
    assert_eq!(field("random: "), "ok");
}

/// A guest that sleeps for a second exits 0 after at least that long and
/// uses under half a second of CPU (guest time counts as the tender's, or
/// as its reaped children's). The bound is loose on purpose; a spinning
/// guest would use the whole second.
pub fn check_idle_guest_blocks(target: Target) {
    let b = built(target);
    let child = Command::new(&b.tender)
        .arg("--mem=64")
        .arg(&b.image)
        .args(["--times", "1", "--pause", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", target.tender()));
    let start = std::time::Instant::now();
    let usage = process::wait_with_usage(child, RUN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let wall = start.elapsed();
    assert_eq!(usage.code, Some(0), "{usage:?}");
    assert!(
        wall >= Duration::from_millis(1000),
        "the guest slept only {wall:?}"
    );
    assert!(
        usage.cpu < Duration::from_millis(500),
        "the guest used {:?} of CPU while sleeping for a second: it spins",
        usage.cpu
    );
}

/// The `devices` image waiting for its one frame, which comes after a
/// second: it exits 0 after echoing it and uses under half a second of CPU
/// meanwhile, so its wait (POLL, or NET_EXCHANGE under kiln-hvt) blocks
/// instead of spinning.
pub fn check_idle_net_guest_blocks(target: Target) {
    let b = built(target);
    let d = Devices::new("idle-disk");
    let child = Command::new(&b.tender)
        .arg("--mem=64")
        .args(d.flags())
        .arg(&b.devices)
        .args(["--frames", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", target.tender()));
    let ours = d.ours.try_clone().expect("clone the socket");
    let peer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        let frame = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5, b'!'];
        ours.send(&frame).expect("send a frame");
        let mut buf = [0u8; 2048];
        ours.recv(&mut buf).expect("the guest echoes the frame")
    });
    let usage = process::wait_with_usage(child, RUN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(peer.join().expect("peer thread"), 15);
    assert_eq!(usage.code, Some(0), "{usage:?}");
    assert!(
        usage.cpu < Duration::from_millis(500),
        "the guest used {:?} of CPU while waiting a second for a frame: it spins",
        usage.cpu
    );
}
