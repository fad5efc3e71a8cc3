//! Running programs: bounded in time, timed from spawn to wait, and
//! long-running services killed (with their children) on drop.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{BenchError, tail};

/// A command line, as arguments.
pub type Argv = Vec<OsString>;

/// `argv` as one line for messages.
pub fn show(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds an argv from anything string-like.
pub fn argv<I, S>(items: I) -> Argv
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    items.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

fn command(argv: &[OsString]) -> Result<Command, BenchError> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| BenchError::Setup("an empty command line".into()))?;
    let mut cmd = Command::new(prog);
    cmd.args(args).stdin(Stdio::null()).env("NO_COLOR", "1");
    Ok(cmd)
}

fn spawn(cmd: &mut Command, argv: &[OsString]) -> Result<Child, BenchError> {
    cmd.spawn().map_err(|source| BenchError::Spawn {
        program: argv
            .first()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source,
        hint: "check that it is installed and on PATH (as root the command installs wrk, nginx and ping with apt)",
    })
}

/// Kills `pid` with SIGKILL through kill(1) (this crate has no unsafe code).
fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills `pid` after `limit` unless `done` is set first.
fn watchdog(pid: u32, limit: Duration) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if flag.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !flag.load(Ordering::Acquire) {
            kill_pid(pid);
        }
    });
    done
}

/// What a finished program did.
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Where and with what environment a program runs: `env` entries with
/// `None` are removed.
#[derive(Default, Clone, Copy)]
pub struct Context<'a> {
    /// The working directory.
    pub dir: Option<&'a Path>,
    /// Environment changes.
    pub env: &'a [(&'a str, Option<&'a OsStr>)],
}

/// Runs `argv` with its output captured, killed after `limit`; an exit
/// status other than success is returned, not an error.
pub fn run(argv: &[OsString], ctx: Context<'_>, limit: Duration) -> Result<Finished, BenchError> {
    let mut cmd = command(argv)?;
    if let Some(dir) = ctx.dir {
        cmd.current_dir(dir);
    }
    for (key, value) in ctx.env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let child = spawn(&mut cmd, argv)?;
    let done = watchdog(child.id(), limit);
    let out = child.wait_with_output();
    let timed_out = !done.swap(true, Ordering::AcqRel) && start.elapsed() >= limit;
    let out = out.map_err(|e| BenchError::Setup(format!("waiting for `{}`: {e}", show(argv))))?;
    if timed_out {
        return Err(BenchError::Timeout {
            command: show(argv),
            secs: limit.as_secs(),
        });
    }
    Ok(Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Like [`run`], but a failure exit status is an error.
pub fn run_ok(
    argv: &[OsString],
    ctx: Context<'_>,
    limit: Duration,
) -> Result<Finished, BenchError> {
    let f = run(argv, ctx, limit)?;
    if f.status.success() {
        Ok(f)
    } else {
        Err(BenchError::Failed {
            command: show(argv),
            status: f.status.to_string(),
            stderr: tail(&format!("{}\n{}", f.stdout, f.stderr), 600),
        })
    }
}

/// Wall time of one run of `argv` from spawn to wait, its output thrown
/// away; it must succeed within `limit`.
pub fn time_once(argv: &[OsString], limit: Duration) -> Result<Duration, BenchError> {
    let mut cmd = command(argv)?;
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = spawn(&mut cmd, argv)?;
    let done = watchdog(child.id(), limit);
    let status = child.wait();
    let took = start.elapsed();
    done.store(true, Ordering::Release);
    let status =
        status.map_err(|e| BenchError::Setup(format!("waiting for `{}`: {e}", show(argv))))?;
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        return Err(BenchError::Failed {
            command: show(argv),
            status: status.to_string(),
            stderr: tail(&stderr, 600),
        });
    }
    Ok(took)
}

/// A long-running program (a server, a unikernel), killed with its
/// descendants on drop.
pub struct Service {
    child: Child,
    name: String,
    log: std::path::PathBuf,
}

impl Service {
    /// Starts `argv` with stdout and stderr going to `log`.
    pub fn start(argv: &[OsString], log: &Path) -> Result<Self, BenchError> {
        let file = std::fs::File::create(log).map_err(|e| BenchError::io("create", log, e))?;
        let err = file
            .try_clone()
            .map_err(|e| BenchError::io("reopen", log, e))?;
        let mut cmd = command(argv)?;
        cmd.stdout(Stdio::from(file)).stderr(Stdio::from(err));
        let child = spawn(&mut cmd, argv)?;
        Ok(Service {
            child,
            name: show(argv),
            log: log.to_owned(),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// An error saying it exited, with the end of its log.
    pub fn died(&mut self, status: ExitStatus) -> BenchError {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        BenchError::Failed {
            command: self.name.clone(),
            status: status.to_string(),
            stderr: tail(&log, 600),
        }
    }

    /// Sets the CPU affinity of every thread of the process and its
    /// descendants to `cpus` (a `taskset` list such as `0` or `0-1`).
    pub fn pin(&self, cpus: &str) -> Result<(), BenchError> {
        for pid in tree(self.child.id()) {
            let argv: Vec<OsString> = ["taskset", "-a", "-p", "-c", cpus, &pid.to_string()]
                .iter()
                .map(OsString::from)
                .collect();
            run(&argv, Context::default(), Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Peak resident set size (VmHWM) of the process and its descendants,
    /// in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64, BenchError> {
        let mut total = 0;
        for pid in tree(self.child.id()) {
            let path = format!("/proc/{pid}/status");
            let status = std::fs::read_to_string(&path)
                .map_err(|e| BenchError::io("read", path.clone(), e))?;
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            total += kib.ok_or_else(|| BenchError::Parse {
                what: "VmHWM",
                program: "/proc/PID/status",
                output: tail(&status, 200),
            })?;
        }
        Ok(total)
    }
}

impl Service {
    /// Resident set size (VmRSS) of the process and its descendants, in
    /// KiB.
    pub fn rss_kib(&self) -> Result<u64, BenchError> {
        let mut total = 0;
        for pid in tree(self.child.id()) {
            let path = format!("/proc/{pid}/status");
            let status = std::fs::read_to_string(&path)
                .map_err(|e| BenchError::io("read", path.clone(), e))?;
            // Kernel threads and zombies have no VmRSS line.
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// CPU time the process and its descendants have run so far (every
    /// thread's first `schedstat` field), in nanoseconds.
    pub fn cpu_nanos(&self) -> u64 {
        let mut total = 0;
        for pid in tree(self.child.id()) {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let stat =
                    std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
                total += stat
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        total
    }
}

/// `pid` and all its descendants, parents first.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() && all.len() < 1024 {
        let p = all[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    all
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            for pid in tree(self.child.id()).into_iter().rev() {
                if pid != self.child.id() {
                    kill_pid(pid);
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
