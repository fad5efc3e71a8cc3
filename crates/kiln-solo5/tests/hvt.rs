//! End to end on KVM: builds the hand-written hello stand-in
//! (`tests/hello-hvt-handmade`) for `x86_64-unknown-none` and the
//! `kiln-hvt` tender, then runs the image under the tender and checks its
//! output and exit status, including deliberate panics and faults.
//!
//! Needs `/dev/kvm`: without it each test says loudly that it is skipped,
//! and fails instead when `CI=true`.

use std::fs::OpenOptions;
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

/// Builds the tender and the image once for all tests.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace().join("target"), PathBuf::from)
            .join("kiln-solo5-e2e");
        let root = workspace();
        cargo(
            &root,
            &target_dir,
            &["build", "--release", "-p", "kiln-hvt"],
        )?;
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hello-hvt-handmade");
        cargo(
            &example,
            &target_dir,
            &["build", "--release", "--target", "x86_64-unknown-none"],
        )?;
        Ok(Built {
            tender: target_dir.join("release/kiln-hvt"),
            image: target_dir.join("x86_64-unknown-none/release/hello-hvt-handmade"),
            devices: target_dir.join("x86_64-unknown-none/release/devices"),
        })
    });
    match built {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

/// Whether KVM can be used; if not, says so loudly, and fails under CI.
fn kvm_or_skip(test: &str) -> bool {
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: /dev/kvm is not usable ({e}) and CI=true: KVM tests must run in CI"
            );
            eprintln!("SKIPPED {test}: /dev/kvm is not usable ({e}); hint: run on a host with KVM");
            false
        }
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the hello image under the tender with guest arguments `args`.
fn run(args: &[&str]) -> Run {
    let b = built();
    let mut command = Command::new(&b.tender);
    command.arg("--mem=64").arg(&b.image).args(args);
    wait(command, args)
}

/// Runs `command` to completion, or kills it after [`RUN_TIMEOUT`].
fn wait(mut command: Command, args: &[&str]) -> Run {
    let b = built();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", b.tender.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for kiln-hvt") {
            break status;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("guest {args:?} still running after {RUN_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
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

/// Asserts that `run` aborted (255) after an exception report whose first
/// line contains `headline`, followed by a register dump.
fn assert_exception(run: &Run, headline: &str) {
    assert_eq!(
        run.code,
        Some(255),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let mut lines = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("kiln: exception"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no exception report in:\n{}", run.stdout));
    assert!(first.contains(headline), "{first}");
    // The headline also reaches the tender, as the abort message.
    let mnemonic = first.split_whitespace().nth(2).unwrap_or("?");
    assert!(
        run.stderr.contains(&format!("exception {mnemonic} (")),
        "the tender did not get the abort message:\n{}",
        run.stderr
    );
    let dump: Vec<&str> = lines.take(8).collect();
    for register in ["rax", "rsp", "rip", "rflags", "cr2", "error"] {
        assert!(
            dump.iter()
                .any(|l| l.split_whitespace().any(|w| w == register)),
            "register {register} missing from the dump:\n{}",
            dump.join("\n")
        );
    }
}

#[test]
fn hello_prints_and_exits_zero() {
    if !kvm_or_skip("hello_prints_and_exits_zero") {
        return;
    }
    let r = run(&["--times", "2"]);
    assert_eq!(
        r.stdout, "hello from kiln on hvt (1/2)\nhello from kiln on hvt (2/2)\n",
        "stderr:\n{}",
        r.stderr
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
}

#[test]
fn the_exit_code_is_the_unikernels() {
    if !kvm_or_skip("the_exit_code_is_the_unikernels") {
        return;
    }
    assert_eq!(run(&["--exit", "7"]).code, Some(7));
    assert_eq!(run(&["--exit", "0"]).code, Some(0));
    let r = run(&["--fail"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stdout, "error: disk on fire\n");
    let r = run(&["--no-such-flag"]);
    assert_eq!(r.code, Some(2));
    assert_eq!(r.stdout, "error: unknown argument '--no-such-flag'\n");
}

#[test]
fn a_panic_aborts_with_its_message_and_location() {
    if !kvm_or_skip("a_panic_aborts_with_its_message_and_location") {
        return;
    }
    let r = run(&["--panic"]);
    assert_eq!(r.code, Some(255), "stderr:\n{}", r.stderr);
    assert!(
        r.stdout.starts_with("kiln: panicked at src/main.rs:")
            && r.stdout.contains(": deliberate panic, times = 3\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("panicked at src/main.rs:"),
        "the tender did not get the abort message:\n{}",
        r.stderr
    );
}

#[test]
fn a_null_page_write_aborts_with_a_register_dump() {
    if !kvm_or_skip("a_null_page_write_aborts_with_a_register_dump") {
        return;
    }
    let r = run(&["--null-write"]);
    assert_exception(&r, "#PF (page fault, vector 14) at rip 0x0000000000");
    assert!(
        r.stdout.contains(
            "write of address 0x0, page not present; hint: this is a null pointer dereference"
        ),
        "{}",
        r.stdout
    );
}

#[test]
fn a_write_to_read_only_memory_aborts_with_a_register_dump() {
    if !kvm_or_skip("a_write_to_read_only_memory_aborts_with_a_register_dump") {
        return;
    }
    let r = run(&["--ro-write"]);
    assert_exception(&r, "error code 0x3: write of address 0x");
    assert!(
        r.stdout.contains(", protection violation\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn executing_data_and_overflowing_the_stack_fault() {
    if !kvm_or_skip("executing_data_and_overflowing_the_stack_fault") {
        return;
    }
    let r = run(&["--exec-data"]);
    assert_exception(&r, "error code 0x11: instruction fetch of address");
    let r = run(&["--stack-overflow"]);
    assert_exception(&r, "page not present; hint: this is a stack overflow");
}

#[test]
fn running_out_of_memory_aborts_with_a_message() {
    if !kvm_or_skip("running_out_of_memory_aborts_with_a_message") {
        return;
    }
    let r = run(&["--oom"]);
    assert_eq!(r.code, Some(255), "stderr:\n{}", r.stderr);
    assert!(
        r.stdout
            .starts_with("kiln: out of memory: cannot allocate 16777216 bytes (align 1)"),
        "{}",
        r.stdout
    );
}

#[test]
fn clocks_sleep_and_random_work() {
    if !kvm_or_skip("clocks_sleep_and_random_work") {
        return;
    }
    let r = run(&["--devices"]);
    assert_eq!(
        r.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
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

/// Removes a file when dropped, even if the test fails.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn net_and_block_devices_work() {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    if !kvm_or_skip("net_and_block_devices_work") {
        return;
    }
    let b = built();
    // An 8-sector disk whose first bytes are known.
    let disk =
        TempFile(std::env::temp_dir().join(format!("kiln-solo5-disk-{}.img", std::process::id())));
    let mut content = vec![0u8; 8 * 512];
    content[..8].copy_from_slice(b"KILNDISK");
    std::fs::write(&disk.0, &content).expect("write the disk image");

    // The network interface is one end of a datagram socket pair, which
    // keeps frame boundaries as a tap does; the test holds the other end.
    let (ours, theirs) = UnixDatagram::pair().expect("socketpair");
    ours.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let fd = theirs.as_raw_fd();
    // SAFETY: fcntl on a descriptor this test owns; clears FD_CLOEXEC so
    // the tender inherits it.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    assert_eq!(rc, 0, "cannot clear FD_CLOEXEC");

    let mut command = Command::new(&b.tender);
    command
        .arg("--mem=64")
        .arg(format!("--net:service=@{fd}"))
        .arg("--net-mac:service=02:00:00:00:00:01")
        .arg(format!("--block:disk={}", disk.0.display()))
        .arg(&b.devices)
        .args(["--frames", "2"]);
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
    let r = wait(command, &["devices"]);
    drop(theirs);
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
    let written = std::fs::read(&disk.0).expect("read the disk image");
    let pattern: Vec<u8> = (0..512).map(|i| (i as u8) ^ 0x5a).collect();
    assert_eq!(&written[512..1024], &pattern[..], "sector 1 on the host");
    let many: Vec<u8> = (0..6 * 512).map(|i| (i as u8) ^ 0xa5).collect();
    assert_eq!(&written[1024..], &many[..], "sectors 2 to 7 on the host");
    assert_eq!(&written[..8], b"KILNDISK");
}

/// An idle unikernel is blocked in the POLL hypercall, not spinning: a
/// guest that sleeps for a second uses a small fraction of a second of CPU
/// (guest time counts as the tender's user time). The bound is loose on
/// purpose; a spinning guest would use the whole second.
#[test]
fn an_idle_guest_blocks_instead_of_spinning() {
    if !kvm_or_skip("an_idle_guest_blocks_instead_of_spinning") {
        return;
    }
    let b = built();
    // Reaped with wait4 below, which also gives its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(&b.tender)
        .arg("--mem=64")
        .arg(&b.image)
        .args(["--times", "1", "--pause", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kiln-hvt");
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
    assert!(
        wall >= Duration::from_millis(1000),
        "the guest slept only {wall:?}"
    );
    assert!(
        used < Duration::from_millis(500),
        "the guest used {used:?} of CPU while sleeping for a second: it spins"
    );
}
