//! Children killed on drop, waits bounded in time, captured output, a child's CPU time, signals.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::sys;

/// Why running a child failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// It could not be started.
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("cannot wait for {program}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// It ran and failed; its stderr follows.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// It ran past its time and was killed.
    #[error("{program} still running after {limit:?}; killed")]
    TimedOut { program: String, limit: Duration },
}

/// A child process, killed and reaped on drop if it is still running
/// (also when the test that started it panics).
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Waits at most `limit` for the child to exit; its status, or `None`
    /// if it still runs (it is not killed: dropping the guard does that).
    pub fn wait_for(&mut self, limit: Duration) -> Result<Option<ExitStatus>, std::io::Error> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(Some(status));
            }
            if start.elapsed() >= limit {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// `cmd` and its arguments, as a shell would show them (unquoted).
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion with its output captured; its stdout if it
/// exits 0, else its status and stderr. Not bounded in time: give the
/// program its own limit (`curl --max-time`, `ping -W`).
pub fn stdout_of(cmd: &mut Command) -> Result<Vec<u8>, ProcessError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ProcessError::Spawn {
            program: program(cmd),
            source,
        })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(ProcessError::Failed {
            command: command_line(cmd),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        })
    }
}

/// Runs `cmd` with stdin empty and stdout and stderr captured (read while
/// it runs, so a chatty child never blocks on a full pipe), killing it
/// after `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Result<Output, ProcessError> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            program: program(cmd),
            source,
        })?;
    finish(ChildGuard(child), limit).map_err(|e| match e {
        ProcessError::Wait { source, .. } => ProcessError::Wait {
            program: program(cmd),
            source,
        },
        ProcessError::TimedOut { limit, .. } => ProcessError::TimedOut {
            program: program(cmd),
            limit,
        },
        other => other,
    })
}

/// Sends `signal` (`libc::SIGTERM`, ...) to process `pid` (a child's
/// [`Child::id`]); fails the test if it cannot be sent.
pub fn signal(pid: u32, signal: libc::c_int) {
    sys::kill(pid, signal).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// The children of process `pid`: every thread's
/// `/proc/PID/task/TID/children` (each lists the children that thread
/// started); empty when `pid` is gone.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

/// Waits at most `limit` (in steps of 10 ms) until process `pid`, which
/// need not be a child, has ended: gone, or a zombie (its descriptors
/// closed). Whether it has.
pub fn ended(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
            });
        if !matches!(state.as_deref(), Some(s) if s != "Z" && s != "X") {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits at most `limit` for `guard`'s child, then reads the rest of its
/// stdout through `out` (which may hold the part already read) and its
/// piped stderr: its exit status, that stdout and that stderr. `None` if
/// it runs longer (dropping the guard then kills it).
pub fn ended_within(
    mut guard: ChildGuard,
    mut out: impl Read,
    limit: Duration,
) -> Result<Option<(ExitStatus, String, String)>, std::io::Error> {
    let Some(status) = guard.wait_for(limit)? else {
        return Ok(None);
    };
    let mut rest = String::new();
    out.read_to_string(&mut rest)?;
    let mut err = String::new();
    if let Some(mut pipe) = guard.0.stderr.take() {
        pipe.read_to_string(&mut err)?;
    }
    Ok(Some((status, rest, err)))
}

/// Collects the output of a guarded child started with piped stdout and
/// stderr, waiting at most `limit` for it to exit (then killing it).
pub fn finish(mut guard: ChildGuard, limit: Duration) -> Result<Output, ProcessError> {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(guard.0.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(guard.0.stderr.take().map(|p| Box::new(p) as _));
    let program = "the child".to_string();
    let status = guard.wait_for(limit).map_err(|source| ProcessError::Wait {
        program: program.clone(),
        source,
    })?;
    // Dropping the guard kills a child still running, which closes its
    // pipes and so ends the readers.
    drop(guard);
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    let status = status.ok_or(ProcessError::TimedOut { program, limit })?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Re-runs the ignored test `test` of this test binary as user and group
/// `nobody` (65534, no supplementary groups) with `envs` set, for checks
/// of what root may do and others may not; its exit status. Needs root
/// and `setpriv`; fails the test if it cannot be started.
pub fn rerun_as_nobody(test: &str, envs: &[(&str, &std::ffi::OsStr)]) -> ExitStatus {
    let exe = std::env::current_exe().expect("the test binary's path");
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(exe)
        .args(["--exact", test, "--ignored", "--nocapture"])
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {test} as nobody with setpriv: {e}"))
}

/// Lets the children started from now on inherit `fd` (clears its
/// `FD_CLOEXEC`), to hand them one end of a socket pair by number.
pub fn inheritable(fd: impl std::os::fd::AsFd) -> Result<(), std::io::Error> {
    sys::clear_cloexec(fd)
}

/// How a child ended and the CPU time it and the children it reaped used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Its exit code, or `None` if a signal ended it.
    pub code: Option<i32>,
    /// User plus system time.
    pub cpu: Duration,
}

/// Waits at most `limit` for `child` to exit and reaps it; how it ended
/// and the CPU time it used. A child still running at `limit` is killed.
pub fn wait_with_usage(child: Child, limit: Duration) -> Result<Usage, ProcessError> {
    let mut guard = ChildGuard(child);
    let pid = guard.0.id();
    let start = Instant::now();
    loop {
        match sys::wait4_nohang(pid) {
            Ok(Some(usage)) => {
                // Reaped: the guard must not wait for it again.
                std::mem::forget(guard);
                return Ok(usage);
            }
            Ok(None) => {}
            Err(source) => {
                return Err(ProcessError::Wait {
                    program: format!("process {pid}"),
                    source,
                });
            }
        }
        if start.elapsed() > limit {
            let _ = guard.0.kill();
            return Err(ProcessError::TimedOut {
                program: format!("process {pid}"),
                limit,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_both_streams_past_a_pipe_buffer() {
        let out = run(
            Command::new("sh").args(["-c", "head -c 200000 /dev/zero; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout.len(), 200_000);
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn stdout_of_gives_stdout_or_the_failure() {
        let out = stdout_of(Command::new("sh").args(["-c", "echo hi"])).unwrap();
        assert_eq!(out, b"hi\n");
        let err = stdout_of(Command::new("sh").args(["-c", "echo bad >&2; exit 2"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sh -c echo bad >&2; exit 2 failed (exit status: 2): bad"
        );
    }

    #[test]
    fn run_kills_a_child_past_its_limit() {
        let started = Instant::now();
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn usage_counts_cpu_time_and_exit_code() {
        let child = Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 4",
            ])
            .spawn()
            .unwrap();
        let usage = wait_with_usage(child, Duration::from_secs(30)).unwrap();
        assert_eq!(usage.code, Some(4));
        assert!(usage.cpu > Duration::ZERO, "{usage:?}");
    }
}
