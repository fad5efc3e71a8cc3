//! Debugging on hvt with Debian's gdb: `kiln run -t hvt --gdb` stops a
//! unikernel at its entry point and `gdb -batch` breaks on the entry
//! function, shows a backtrace with the crate's function names and the
//! registers, steps and continues to the exit, and Ctrl-C stops a running
//! guest; `kiln run -t hvt --dumpcore DIR` writes a core for a unikernel
//! that faults, which `gdb -batch -ex bt IMAGE CORE` opens with the
//! faulting function on top, and under gdb the same fault stops the guest
//! with SIGSEGV at that function.
//!
//! Needs `/dev/kvm` and `gdb` (scripts/test installs it): without them each
//! test says loudly that it is skipped, and fails instead when `CI=true`.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ARGUMENT_ERROR, kiln_in, run_for, temp_dir, text};
use kiln_testsupport::process::ChildGuard;
use kiln_testsupport::skip::{kvm_or_skip, skip};

/// Longest a build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest gdb or a unikernel may run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn gdb_or_skip(test: &str) -> bool {
    match Command::new("gdb").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            skip(
                test,
                "gdb is not installed; hint: apt-get install gdb (scripts/test does)",
            );
            false
        }
    }
}

/// The `times` argument of the hello unikernels.
const TIMES: Option<(&str, u32, &str)> = Some(("times", 1, "How many times to say hello"));

/// A unikernel crate `name` in `dir` with `lib_rs`: its entry `start`
/// takes a console and, when `arg` names one, a `u32` argument (name,
/// default, doc).
fn write_unikernel(dir: &Path, name: &str, arg: Option<(&str, u32, &str)>, lib_rs: &str) {
    let mut toml = format!(
        "[unikernel]\nname = \"{name}\"\nentry = \"start\"\n\n[devices.console]\ntype = \"console\"\n"
    );
    if let Some((arg, default, doc)) = arg {
        toml.push_str(&format!(
            "\n[arguments.{arg}]\ntype = \"u32\"\ndefault = {default}\ndoc = \"{doc}\"\n"
        ));
    }
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let devices = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-devices");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\nkiln-devices = {{ path = {:?} }}\n\n[workspace]\n",
            devices.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("unikernel.toml"), toml).unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib_rs).unwrap();
}

/// Reads `child`'s stderr (on a thread of its own) until a line gives
/// `found` a value, at most `limit`: the value and the lines read. Fails
/// the test with `never` and those lines otherwise.
fn await_stderr<T>(
    child: &mut ChildGuard,
    limit: Duration,
    never: &str,
    mut found: impl FnMut(&str) -> Option<T>,
) -> (T, String) {
    let (tx, rx) = mpsc::channel();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let start = Instant::now();
    let mut log = String::new();
    loop {
        let left = limit.saturating_sub(start.elapsed());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("{never}:\n{log}");
        };
        log.push_str(&line);
        log.push('\n');
        if let Some(value) = found(&line) {
            return (value, log);
        }
    }
}

/// `gdb -batch ARGS`, at most [`RUN_TIMEOUT`]: its stdout and stderr.
fn gdb_batch(args: &[&dyn AsRef<OsStr>]) -> String {
    let out = run_for(
        Command::new("gdb")
            .arg("-batch")
            .args(args.iter().map(|a| a.as_ref())),
        RUN_TIMEOUT,
    );
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// The innermost frame (`#0 ...`) of a backtrace in gdb's output.
fn top_frame(gdb: &str) -> &str {
    gdb.lines()
        .find(|l| l.starts_with("#0"))
        .unwrap_or_else(|| panic!("no backtrace:\n{gdb}"))
}

/// What the finished `child` wrote to its stdout.
fn rest_of_stdout(child: &mut ChildGuard) -> String {
    let mut stdout = String::new();
    if let Some(mut pipe) = child.0.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stdout);
    }
    stdout
}

/// The one core file `--dumpcore` wrote in `cores` for a guest of 8 MiB
/// under `tender`: named `core.TENDER.*`, announced on the tender's
/// `stderr`, no larger than guest memory plus headers.
fn the_core(cores: &Path, tender: &str, stderr: &str) -> PathBuf {
    let files: Vec<_> = std::fs::read_dir(cores)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}\n{stderr}");
    let core = files[0].clone();
    let name = core.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("core.{tender}.")), "{name}");
    assert!(
        stderr.contains(&format!("core file written to {}", core.display())),
        "{stderr}"
    );
    assert!(std::fs::metadata(&core).unwrap().len() <= (8 << 20) + 4096 * 4);
    core
}

/// `kiln run -t hvt --gdb=ADDR ARGS` in `dir`, once it waits for gdb
/// (after building): the running kiln, ADDR and what it printed.
fn kiln_run_gdb(dir: &Path, args: &[&str]) -> (ChildGuard, String, String) {
    let port = kiln_testsupport::ports::free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let child = kiln_in(dir)
        .args(["run", "-t", "hvt", &format!("--gdb={addr}")])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln run");
    let mut guard = ChildGuard(child);
    let ((), log) = await_stderr(
        &mut guard,
        BUILD_TIMEOUT,
        "kiln run --gdb never waited for gdb",
        |line| line.contains("waiting for gdb on").then_some(()),
    );
    (guard, addr, log)
}

const HELLO_RS: &str = r#"#![no_std]
use kiln_devices::{Console, ConsoleError};

pub async fn start(console: impl Console, times: u32) -> Result<(), ConsoleError> {
    for _ in 0..times {
        console.log("hello")?;
    }
    Ok(())
}
"#;

/// The entry function as gdb names it: the body of the async `start`,
/// monomorphised for the hvt console.
const HELLO_ENTRY: &str = "hello::start::{async_fn#0}<kiln_solo5::console::device::Console>";

#[test]
fn gdb_breaks_steps_and_continues_on_hvt() {
    let test = "gdb_breaks_steps_and_continues_on_hvt";
    if !kvm_or_skip(test) || !gdb_or_skip(test) {
        return;
    }
    let tmp = temp_dir("gdb");
    let dir = tmp.path().join("hello");
    write_unikernel(&dir, "hello", TIMES, HELLO_RS);
    let (mut guard, addr, log) = kiln_run_gdb(&dir, &["--", "--times=2"]);
    let image = dir.join("dist/hello.hvt");
    let script = format!(
        "set pagination off\nset confirm off\ntarget remote {addr}\n\
         break '{HELLO_ENTRY}'\ncontinue\nbt\ninfo registers rip rsp cs\n\
         stepi\ninfo registers rip\ndelete\ncontinue\n"
    );
    let script_path = tmp.path().join("script.gdb");
    std::fs::write(&script_path, script).unwrap();
    let gdb = gdb_batch(&[&"-x", &script_path, &image]);
    let status = guard.wait_for(RUN_TIMEOUT).expect("wait for kiln run");
    let stdout = rest_of_stdout(&mut guard);
    for needle in [
        // Stopped at the entry point, before any guest instruction.
        "in _start ()",
        // The breakpoint on the entry function, hit at CPL 3.
        "Breakpoint 1, hello::start::{async_fn#0}",
        // The backtrace names the crate's functions down to the boot.
        "kiln_rt::executor::block_on",
        "hello::__kiln_solo5_main",
        "kiln_solo5::sys::boot::kiln_solo5_boot",
        // Registers at the breakpoint: user code segment (CPL 3).
        "cs             0x33",
        "[Inferior 1 (process 1) exited normally]",
    ] {
        assert!(gdb.contains(needle), "gdb output lacks {needle:?}:\n{gdb}");
    }
    // The step moved %rip past the breakpoint's address.
    let rips: Vec<u64> = gdb
        .lines()
        .filter(|l| l.starts_with("rip "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .collect();
    assert_eq!(rips.len(), 2, "{gdb}");
    assert!(rips[1] > rips[0], "stepi did not advance: {rips:x?}\n{gdb}");
    assert!(stdout.ends_with("hello\nhello\n"), "{stdout}\n{gdb}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{gdb}\n{log}");

    // Ctrl-C: the same image and tender, saying hello about forever; gdb
    // is interrupted while the guest runs, stops it, then kills it.
    let tender = dir.join("dist/kiln-hvt-gdb");
    let port = kiln_testsupport::ports::free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(&tender)
        .arg(format!("--gdb={addr}"))
        .arg(&image)
        .arg("--times=4000000000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln-hvt-gdb");
    let mut tender_guard = ChildGuard(child);
    let mut stderr = BufReader::new(tender_guard.0.stderr.take().unwrap());
    let mut line = String::new();
    let _ = stderr.read_line(&mut line);
    assert!(line.contains("waiting for gdb"), "{line}");
    let script = format!(
        "set pagination off\nset confirm off\ntarget remote {addr}\ncontinue\n\
         info registers cs\nbt\nkill\n"
    );
    std::fs::write(&script_path, script).unwrap();
    let gdb_child = Command::new("gdb")
        .arg("-batch")
        .arg("-x")
        .arg(&script_path)
        .arg(&image)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gdb");
    let gdb_pid = gdb_child.id();
    let gdb_guard = ChildGuard(gdb_child);
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-INT", &gdb_pid.to_string()])
        .status();
    let out = kiln_testsupport::process::finish(gdb_guard, RUN_TIMEOUT).expect("gdb");
    let gdb = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        gdb.contains("Program received signal SIGINT"),
        "gdb was not interrupted:\n{gdb}"
    );
    assert!(gdb.contains("hello::__kiln_solo5_main"), "{gdb}");
    let status = tender_guard
        .wait_for(RUN_TIMEOUT)
        .expect("wait for the tender");
    assert_eq!(status.and_then(|s| s.code()), Some(255), "{gdb}");
}

const CRASH_RS: &str = r#"#![no_std]
use kiln_devices::{Console, ConsoleError};

/// Writes a byte at `addr`: at 0, a page fault.
#[inline(never)]
pub fn write_through(addr: usize) {
    // SAFETY: none: the fault is the point.
    unsafe { core::ptr::write_volatile(addr as *mut u8, 1) }
}

pub async fn start(console: impl Console) -> Result<(), ConsoleError> {
    console.log("about to fault")?;
    write_through(core::hint::black_box(0));
    Ok(())
}
"#;

#[test]
fn a_fault_writes_a_core_gdb_reads() {
    let test = "a_fault_writes_a_core_gdb_reads";
    if !kvm_or_skip(test) || !gdb_or_skip(test) {
        return;
    }
    let tmp = temp_dir("dumpcore");
    let dir = tmp.path().join("crash");
    write_unikernel(&dir, "crash", None, CRASH_RS);
    let cores = tmp.path().join("cores");
    std::fs::create_dir(&cores).unwrap();
    let out = run_for(
        kiln_in(&dir)
            .args(["run", "-t", "hvt", "--mem=8", "--dumpcore"])
            .arg(&cores),
        BUILD_TIMEOUT,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    let core = the_core(&cores, "kiln-hvt", &stderr);
    let image = dir.join("dist/crash.hvt");

    let gdb = gdb_batch(&[&"-ex", &"bt", &"-ex", &"info registers rip", &image, &core]);
    assert!(
        gdb.contains("Program terminated with signal SIGSEGV"),
        "{gdb}"
    );
    // The image has its symbols (no debug information without --gdb).
    assert!(top_frame(&gdb).contains("crash::write_through"), "{gdb}");

    // Under gdb, the fault stops the guest at the faulting instruction.
    let (mut guard, addr, log) = kiln_run_gdb(&dir, &["--mem=8"]);
    let gdb = gdb_batch(&[
        &"-ex",
        &"set pagination off",
        &"-ex",
        &format!("target remote {addr}"),
        &"-ex",
        &"continue",
        &"-ex",
        &"bt 1",
        &"-ex",
        &"kill",
        &image,
    ]);
    assert!(
        gdb.contains("Program received signal SIGSEGV"),
        "{gdb}\n{log}"
    );
    assert!(top_frame(&gdb).contains("crash::write_through"), "{gdb}");
    let status = guard.wait_for(RUN_TIMEOUT).expect("wait for kiln run");
    assert_eq!(status.and_then(|s| s.code()), Some(255), "{gdb}");
}

/// The spt test's unikernel: says hello through a function that is not
/// inlined, for a breakpoint reached after gdb attaches.
const GREET_RS: &str = r#"#![no_std]
use kiln_devices::{Console, ConsoleError};

/// Says hello once.
#[inline(never)]
pub fn greet(console: &impl Console, n: u32) -> Result<(), ConsoleError> {
    console.log(if core::hint::black_box(n) % 2 == 0 { "hello" } else { "hello again" })
}

pub async fn start(console: impl Console, times: u32) -> Result<(), ConsoleError> {
    for n in 0..times {
        greet(&console, n)?;
    }
    Ok(())
}
"#;

/// Waits for `tender`'s line that the spt guest waits for gdb: its pid.
fn spt_guest_pid(tender: &mut ChildGuard, limit: Duration) -> (u32, String) {
    await_stderr(
        tender,
        limit,
        "the spt guest never waited for gdb",
        |line| {
            let rest = line.strip_prefix("kiln-spt: guest process ")?;
            if !line.contains("waits for gdb") {
                return None;
            }
            let pid = rest.split_whitespace().next().unwrap().parse().unwrap();
            assert!(
                line.contains(&format!("attach with: gdb -p {pid} ")),
                "{line}"
            );
            Some(pid)
        },
    )
}

/// gdb's output for `script` run attached to process `pid` of `image`.
fn gdb_attach(script: &str, pid: u32, image: &Path, tmp: &Path) -> String {
    let script_path = tmp.join("attach.gdb");
    std::fs::write(&script_path, script).unwrap();
    gdb_batch(&[&"-x", &script_path, &"-p", &pid.to_string(), &image])
}

#[test]
fn gdb_attaches_to_an_spt_guest() {
    let test = "gdb_attaches_to_an_spt_guest";
    if !gdb_or_skip(test) {
        return;
    }
    let tmp = temp_dir("sptgdb");
    let dir = tmp.path().join("greet");
    write_unikernel(&dir, "greet", TIMES, GREET_RS);
    let image = dir.join("dist/greet.spt");

    // `kiln run -t spt --gdb` builds with debug information and the guest
    // waits, before its first instruction, for gdb to attach; a breakpoint
    // set then is hit, `bt` names the crate's functions, and the guest runs
    // on to its exit under gdb, its output and status intact.
    let child = kiln_in(&dir)
        .args(["run", "-t", "spt", "--gdb", "--", "--times=3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln run");
    let mut guard = ChildGuard(child);
    let (pid, log) = spt_guest_pid(&mut guard, BUILD_TIMEOUT);
    let gdb = gdb_attach(
        "set pagination off\nset confirm off\nbreak 'greet::greet<kiln_solo5::console::device::Console>'\ncontinue\nbt\n\
         info registers rip cs\ncontinue\nbt 1\ndelete\ncontinue\n",
        pid,
        &image,
        tmp.path(),
    );
    let status = guard.wait_for(RUN_TIMEOUT).expect("wait for kiln run");
    let stdout = rest_of_stdout(&mut guard);
    for needle in [
        "Breakpoint 1, greet::greet",
        // The backtrace from the breakpoint names the crate's functions
        // down to the image's entry point.
        "greet::start::{async_fn#0}",
        "greet::__kiln_solo5_main",
        "kiln_solo5::sys::spt_boot::kiln_solo5_boot",
        "in _start ()",
        // A user code segment: the guest is a plain process.
        "cs             0x33",
        &format!("[Inferior 1 (process {pid}) exited normally]"),
    ] {
        assert!(gdb.contains(needle), "gdb output lacks {needle:?}:\n{gdb}");
    }
    assert_eq!(
        gdb.matches("Breakpoint 1, greet::greet").count(),
        2,
        "{gdb}"
    );
    assert!(
        stdout.ends_with("hello\nhello again\nhello\n"),
        "{stdout}\n{gdb}"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{gdb}\n{log}");

    // Detach: the same tender and image, the guest failing on its
    // arguments (`--times=x`: [`ARGUMENT_ERROR`]); gdb stops it at a
    // breakpoint and detaches, and the guest carries on to that exit, the
    // tender reporting its status.
    let child = Command::new(dir.join("dist/kiln-spt"))
        .arg("--gdb")
        .arg(&image)
        .arg("--times=x")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln-spt");
    let mut tender = ChildGuard(child);
    let (pid, log) = spt_guest_pid(&mut tender, RUN_TIMEOUT);
    let gdb = gdb_attach(
        "set pagination off\nset confirm off\nbreak 'greet::fail<kiln_args::ArgsError>'\ncontinue\nbt 1\ndetach\n",
        pid,
        &image,
        tmp.path(),
    );
    assert!(gdb.contains("greet::fail"), "{gdb}");
    assert!(
        gdb.contains(&format!("[Inferior 1 (process {pid}) detached]")),
        "{gdb}"
    );
    let status = tender.wait_for(RUN_TIMEOUT).expect("wait for the tender");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(ARGUMENT_ERROR),
        "{gdb}\n{log}"
    );
}

/// The spt core test's unikernel: fails as its argument says, each way in
/// a function of its own, not inlined.
const FAIL_RS: &str = r#"#![no_std]
use kiln_devices::{Console, ConsoleError};

/// Writes a byte at `addr`: at 0, a page fault.
#[inline(never)]
pub fn write_through(addr: usize) {
    // SAFETY: none: the fault is the point.
    unsafe { core::ptr::write_volatile(addr as *mut u8, 1) }
}

/// Panics: the unikernel aborts (exit status 255).
#[inline(never)]
pub fn give_up() {
    panic!("giving up on purpose");
}

/// getpid, which no unikernel may call.
#[inline(never)]
pub fn forbidden() {
    // SAFETY: none: the filter's refusal is the point.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") 39u64 => _, lateout("rcx") _, lateout("r11") _)
    }
}

pub async fn start(console: impl Console, how: u32) -> Result<(), ConsoleError> {
    console.log("about to fail")?;
    match core::hint::black_box(how) {
        0 => write_through(core::hint::black_box(0)),
        1 => give_up(),
        _ => forbidden(),
    }
    Ok(())
}
"#;

/// `kiln run -t spt --dumpcore DIR` writes a core for a guest that faults,
/// aborts or makes a forbidden system call, which `gdb -batch -ex bt IMAGE
/// CORE` opens with the failing function on top (the image keeps its
/// symbols; no debug information is needed).
#[test]
fn spt_failures_write_cores_gdb_reads() {
    let test = "spt_failures_write_cores_gdb_reads";
    if !gdb_or_skip(test) {
        return;
    }
    let tmp = temp_dir("sptcore");
    let dir = tmp.path().join("fail");
    write_unikernel(
        &dir,
        "fail",
        Some((
            "how",
            0,
            "0: write through a null pointer, 1: panic, 2: a forbidden system call",
        )),
        FAIL_RS,
    );
    let image = dir.join("dist/fail.spt");
    for (how, signal, status, top) in [
        ("0", "SIGSEGV", None, "fail::write_through"),
        // The abort's system call, in kiln-solo5's abort or the halt it
        // calls (which one holds the call depends on inlining).
        (
            "1",
            "SIGABRT",
            Some(255),
            "kiln_solo5::sys::spt::abort|kiln_solo5::sys::spt::halt",
        ),
        ("2", "SIGSYS", None, "fail::forbidden"),
    ] {
        let cores = tmp.path().join(format!("cores-{how}"));
        std::fs::create_dir(&cores).unwrap();
        let out = run_for(
            kiln_in(&dir)
                .args(["run", "-t", "spt", "--mem=8", "--dumpcore"])
                .arg(&cores)
                .args(["--", &format!("--how={how}")]),
            BUILD_TIMEOUT,
        );
        let stderr = text(&out.stderr);
        assert!(text(&out.stdout).contains("about to fail"), "{stderr}");
        assert_eq!(
            out.status.code(),
            status,
            "how={how}: {:?} {stderr}",
            out.status
        );
        let core = the_core(&cores, "kiln-spt", &stderr);
        let gdb = gdb_batch(&[
            &"-ex",
            &"bt",
            &"-ex",
            &"info registers rip cs",
            &image,
            &core,
        ]);
        assert!(
            gdb.contains(&format!("Program terminated with signal {signal}")),
            "how={how}:\n{gdb}"
        );
        let first = top_frame(&gdb);
        assert!(
            top.split('|').any(|t| first.contains(t)),
            "how={how}, expected {top} on top:\n{gdb}"
        );
        assert!(gdb.contains("cs             0x33"), "how={how}:\n{gdb}");
    }
}
