//! kiln-hvt benchmarks (`harness = false`): boot time beside the bare KVM
//! baseline, the cost of one exit, POLL timeouts, and network frames
//! through an echo guest.
//!
//! ```text
//! cargo build --release -p kiln-hvt --example bare-kvm
//! cargo bench -p kiln-hvt --bench hvt                      # boot, exits, net
//! cargo bench -p kiln-hvt --bench hvt -- boot [IMAGE [ARGS...]]
//! cargo bench -p kiln-hvt --bench hvt -- cmds 'CMD ARGS' ...  # beside bare-kvm
//! cargo bench -p kiln-hvt --bench hvt -- exits
//! cargo bench -p kiln-hvt --bench hvt -- net
//! cargo bench -p kiln-hvt --bench hvt -- write-guests DIR  # for hyperfine
//! ```
//!
//! `boot` runs, interleaved so that they share the machine's load, the
//! `bare-kvm` example (open /dev/kvm, one VM, one vCPU, two instructions),
//! `kiln-hvt --mem=512` on a guest that halts at once, and IMAGE with ARGS
//! if given (e.g. a hello image); `cmds` does the same for any commands.
//! Each prints the median wall and CPU (user + system) times and their
//! ratios to the baseline's. `exits` times one exit (a guest making 20000
//! POLL hypercalls with a zero timeout against one making a single one)
//! and a POLL with a 100 us timeout. `net` attaches an echo guest to one
//! end of a datagram socket pair (`--net:service=@FD`) and times frames
//! sent from the other end: one in flight (round-trip latency) and a
//! window of 8 (frames per second), with the tender's CPU time per frame.
//!
//! Environment: `KILN_BENCH_RUNS` (boot runs, default 30),
//! `KILN_BENCH_FRAMES` (frames per net case, default 20000),
//! `KILN_BENCH_TENDER` (another `kiln-hvt` to measure, e.g. an older one),
//! `KILN_BENCH_WRAP` (a command the tender runs under in `net`, such as
//! `strace -f -c -o /tmp/net.strace`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use kiln_abi::MftEntry;
use support::Guest;

/// Hypercall numbers (`hvt_abi.h`).
const HC_POLL: u16 = 3;
const HC_NETWRITE: u16 = 6;
const HC_NETREAD: u16 = 7;
/// The echo guest's receive buffer.
const BUF_LEN: i32 = 1514;
/// Frames in flight in the throughput case (below the default
/// `net.unix.max_dgram_qlen` of 10, so no frame is dropped).
const WINDOW: usize = 8;

type BenchResult<T> = Result<T, String>;

/// The tender under test: `KILN_BENCH_TENDER`, or the one cargo built.
fn tender() -> PathBuf {
    std::env::var_os("KILN_BENCH_TENDER").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_kiln-hvt")),
        PathBuf::from,
    )
}

/// The `bare-kvm` example beside this benchmark's executable.
fn bare_kvm() -> BenchResult<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("examples/bare-kvm"))
        .ok_or("cannot find the target directory")?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing; hint: cargo build --release -p kiln-hvt --example bare-kvm",
            path.display()
        ))
    }
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A guest that halts with status 0 at once.
fn halt_guest() -> Guest {
    let mut g = Guest::new();
    g.halt(0);
    g
}

/// A guest that echoes every frame on net device 1 and halts on a 1-byte
/// frame. It reads until NETREAD says AGAIN and only then polls, so a
/// frame costs NETREAD + NETWRITE exits when frames queue up, and POLL +
/// NETREAD + NETWRITE (+ the AGAIN read) when they arrive one at a time.
fn echo_guest() -> Guest {
    let mut g = Guest::with_devices([MftEntry::net("service")]);
    let buf = g.data(&[0u8; BUF_LEN as usize]);
    let arg = |g: &mut Guest, words: [u64; 4]| {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        g.data(&bytes)
    };
    // handle, data, len, ret
    let read = arg(&mut g, [1, buf, BUF_LEN as u64, 0]);
    let write = arg(&mut g, [1, buf, 0, 0]);
    // timeout (5 s), ready_set, ret
    let poll = arg(&mut g, [5_000_000_000, 0, 0, 0]);

    let top = g.here();
    g.store_imm(read + 16, BUF_LEN)
        .hypercall(HC_NETREAD, read)
        .cmp_dword(read + 24, 0);
    let to_poll = g.jump(&[0x0f, 0x85]);
    g.load_rax(read + 16).cmp_rax(1);
    let to_halt = g.jump(&[0x0f, 0x84]);
    g.store_rax(write + 16).hypercall(HC_NETWRITE, write);
    let back = g.jump(&[0xe9]);
    g.patch(back, top);
    let poll_at = g.here();
    g.patch(to_poll, poll_at).hypercall(HC_POLL, poll);
    let back = g.jump(&[0xe9]);
    g.patch(back, top);
    let halt_at = g.here();
    g.patch(to_halt, halt_at).halt(0);
    g
}

/// A guest that makes `count` POLL hypercalls with a timeout of
/// `timeout_nsecs` (no devices) in a loop, then halts.
fn poll_guest(count: u64, timeout_nsecs: u64) -> Guest {
    let mut g = Guest::new();
    let counter = g.data(&count.to_le_bytes());
    let mut poll = timeout_nsecs.to_le_bytes().to_vec();
    poll.extend_from_slice(&[0u8; 16]);
    let poll = g.data(&poll);
    let top = g.here();
    g.hypercall(HC_POLL, poll).dec(counter);
    let back = g.jump(&[0x0f, 0x85]);
    g.patch(back, top).halt(0);
    g
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU time (user + system) of all waited-for children so far.
fn children_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `struct rusage` to a pointer to room
    // for one; a zeroed rusage is valid should it fail.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One run's wall time and CPU time.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

/// Runs `argv` once and returns its wall and CPU time, or why it failed.
fn time_once(argv: &[String]) -> BenchResult<Sample> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let cpu = children_cpu();
    let start = Instant::now();
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    let wall = start.elapsed();
    let cpu = children_cpu().saturating_sub(cpu);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Sample { wall, cpu })
}

fn boot(extra: &[String]) -> BenchResult<()> {
    let dir = support::TempDir::new();
    let halt = dir.write("halt.hvt", &halt_guest().build());
    let tender = tender().display().to_string();
    let mut cases: Vec<(String, Vec<String>)> = vec![(
        "kiln-hvt --mem=512 halt.hvt".into(),
        vec![
            tender.clone(),
            "--mem=512".into(),
            halt.display().to_string(),
        ],
    )];
    if let Some((image, args)) = extra.split_first() {
        let mut argv = vec![tender, "--mem=512".into(), image.clone()];
        argv.extend(args.iter().cloned());
        cases.push((format!("kiln-hvt --mem=512 {}", extra.join(" ")), argv));
    }
    interleaved(cases)
}

/// `cmds CMD...`: each CMD (split at spaces) timed beside the baseline.
fn cmds(list: &[String]) -> BenchResult<()> {
    if list.is_empty() {
        return Err("cmds needs commands, e.g. 'kiln-hvt --mem=512 hello.hvt'".into());
    }
    let cases = list
        .iter()
        .map(|c| (c.clone(), c.split_whitespace().map(String::from).collect()))
        .collect();
    interleaved(cases)
}

/// Runs the baseline and `cases` in turn, `KILN_BENCH_RUNS` rounds, and
/// prints each one's medians beside the baseline's.
fn interleaved(cases: Vec<(String, Vec<String>)>) -> BenchResult<()> {
    let mut cases = cases;
    cases.insert(
        0,
        ("bare-kvm".into(), vec![bare_kvm()?.display().to_string()]),
    );
    let runs = env_count("KILN_BENCH_RUNS", 30).max(1);
    // Warm the page cache and KVM once per case.
    for (_, argv) in &cases {
        time_once(argv)?;
    }
    let mut samples = vec![Vec::with_capacity(runs); cases.len()];
    for _ in 0..runs {
        for (i, (_, argv)) in cases.iter().enumerate() {
            samples[i].push(time_once(argv)?);
        }
    }
    println!(
        "boot: whole-process wall time and CPU time (user + system), {runs} interleaved runs each"
    );
    let mut base = None;
    for ((name, _), s) in cases.iter().zip(samples.iter_mut()) {
        let mut wall: Vec<Duration> = s.iter().map(|x| x.wall).collect();
        let mut cpu: Vec<Duration> = s.iter().map(|x| x.cpu).collect();
        let (wall, min) = (median(&mut wall), wall.first().copied().unwrap_or_default());
        let cpu = median(&mut cpu);
        let ratio = base.map_or(String::new(), |(w, c): (Duration, Duration)| {
            format!(
                "  ({:.2}x / {:.2}x bare-kvm)",
                wall.as_secs_f64() / w.as_secs_f64(),
                cpu.as_secs_f64() / c.as_secs_f64().max(1e-9)
            )
        });
        base.get_or_insert((wall, cpu));
        println!(
            "  {name}\n      wall median {:7.2} ms  min {:7.2} ms  cpu median {:7.2} ms{ratio}",
            ms(wall),
            ms(min),
            ms(cpu)
        );
    }
    Ok(())
}

/// The host end of the echo guest's network, and the running tender.
struct Echo {
    host: UnixDatagram,
    child: std::process::Child,
}

impl Echo {
    fn start(image: &Path) -> BenchResult<Self> {
        let (host, guest_end) = UnixDatagram::pair().map_err(|e| format!("socketpair: {e}"))?;
        host.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        // SAFETY: F_SETFD on a descriptor this process owns only clears
        // FD_CLOEXEC, so that the tender inherits it by number.
        if unsafe { libc::fcntl(guest_end.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
            return Err(format!("fcntl: {}", std::io::Error::last_os_error()));
        }
        let mut argv: Vec<String> = std::env::var("KILN_BENCH_WRAP")
            .map(|w| w.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        argv.push(tender().display().to_string());
        argv.push(format!("--net:service=@{}", guest_end.as_raw_fd()));
        argv.push("--mem=8".into());
        argv.push(image.display().to_string());
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
        drop(guest_end);
        Ok(Self { host, child })
    }

    /// Sends `frames` frames of `size` bytes with up to `window` in flight
    /// and returns the time from the first send to the last echo.
    fn run(&self, frames: usize, size: usize, window: usize) -> BenchResult<Duration> {
        let mut frame = vec![0x5au8; size];
        let mut got = vec![0u8; 2048];
        let (mut sent, mut received) = (0usize, 0usize);
        let start = Instant::now();
        while received < frames {
            while sent < frames && sent - received < window {
                frame[..8].copy_from_slice(&(sent as u64).to_le_bytes());
                self.host
                    .send(&frame)
                    .map_err(|e| format!("send frame {sent}: {e}"))?;
                sent += 1;
            }
            let n = self
                .host
                .recv(&mut got)
                .map_err(|e| format!("echo {received} of {frames}: {e}"))?;
            if n != size || got[..8] != (received as u64).to_le_bytes() {
                return Err(format!("echo {received}: wrong frame ({n} bytes)"));
            }
            received += 1;
        }
        Ok(start.elapsed())
    }

    fn stop(mut self) -> BenchResult<()> {
        self.host.send(&[0]).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("echo guest exited with {status}"))
                };
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("echo guest did not halt within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The cost of one exit: POLL with a zero timeout, which the tender serves
/// with one `epoll_pwait2` and no other system call.
fn exits() -> BenchResult<()> {
    const POLLS: u64 = 20_000;
    let dir = support::TempDir::new();
    let few = dir.write("poll-1.hvt", &poll_guest(1, 0).build());
    let many = dir.write("poll-n.hvt", &poll_guest(POLLS, 0).build());
    let runs = env_count("KILN_BENCH_RUNS", 30).clamp(1, 10);
    let tender = tender().display().to_string();
    let argv = |p: &Path| vec![tender.clone(), "--mem=8".into(), p.display().to_string()];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(time_once(&argv(&few))?);
        b.push(time_once(&argv(&many))?);
    }
    let per = |f: fn(&Sample) -> Duration| {
        let mut x: Vec<Duration> = a.iter().map(f).collect();
        let mut y: Vec<Duration> = b.iter().map(f).collect();
        median(&mut y).saturating_sub(median(&mut x)).as_secs_f64() / POLLS as f64 * 1e6
    };
    println!(
        "exits: POLL with a zero timeout, {POLLS} in a loop (median of {runs} runs): {:.1} us wall, {:.1} us CPU per exit",
        per(|s| s.wall),
        per(|s| s.cpu)
    );

    // Timed waits: how long a POLL with a 100 us timeout takes, all told.
    const SLEEPS: u64 = 2_000;
    let timed = dir.write("poll-t.hvt", &poll_guest(SLEEPS, 100_000).build());
    let mut c = Vec::new();
    for _ in 0..runs {
        c.push(time_once(&argv(&timed))?);
    }
    let mut x: Vec<Duration> = a.iter().map(|s| s.wall).collect();
    let mut y: Vec<Duration> = c.iter().map(|s| s.wall).collect();
    let per = median(&mut y).saturating_sub(median(&mut x)).as_secs_f64() / SLEEPS as f64;
    println!(
        "exits: POLL with a 100 us timeout, {SLEEPS} in a loop: {:.1} us wall per call",
        per * 1e6
    );
    Ok(())
}

fn net() -> BenchResult<()> {
    let dir = support::TempDir::new();
    let image = dir.write("echo.hvt", &echo_guest().build());
    let frames = env_count("KILN_BENCH_FRAMES", 20_000).max(1);
    println!("net: echo guest over a datagram socket pair, {frames} frames per case");
    for (size, window) in [(60, 1), (1514, 1), (60, WINDOW), (1514, WINDOW)] {
        let cpu = children_cpu();
        let echo = Echo::start(&image)?;
        // Warm up: boot the guest and get the first frames through.
        let warm = 100.min(frames);
        echo.run(warm, size, window)?;
        let took = echo.run(frames, size, window)?;
        echo.stop()?;
        // The tender's CPU time, boot included, over every frame it echoed.
        let cpu = children_cpu().saturating_sub(cpu).as_secs_f64() / (warm + frames) as f64;
        let per = took.as_secs_f64() / frames as f64;
        println!(
            "  {size:4}-byte frames, window {window}: {:8.0} frames/s  {:6.1} us wall per frame{}  tender CPU {:5.1} us per frame",
            1.0 / per,
            per * 1e6,
            if window == 1 { " (round trip)" } else { "" },
            cpu * 1e6
        );
    }
    Ok(())
}

fn write_guests(dir: &str) -> BenchResult<()> {
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, guest) in [
        ("halt.hvt", halt_guest()),
        ("echo.hvt", echo_guest()),
        ("poll.hvt", poll_guest(20_000, 0)),
        ("sleep.hvt", poll_guest(2_000, 100_000)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, guest.build()).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if !support::kvm_available() {
        return ExitCode::SUCCESS;
    }
    let result = match args.first().map(String::as_str) {
        None => boot(&[]).and_then(|()| exits()).and_then(|()| net()),
        Some("boot") => boot(&args[1..]),
        Some("exits") => exits(),
        Some("cmds") => cmds(&args[1..]),
        Some("net") => net(),
        Some("write-guests") => match args.get(1) {
            Some(dir) => write_guests(dir),
            None => Err("write-guests needs a directory".into()),
        },
        Some(other) => Err(format!(
            "unknown benchmark {other}; hint: boot, cmds, exits, net or write-guests DIR"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hvt bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
