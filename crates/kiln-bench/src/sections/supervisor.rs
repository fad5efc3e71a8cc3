//! supervisor: the daemon (`kiln daemon`, docs/supervisor.md) against
//! `kiln run`. On each target (unix, hvt, spt, and virtio when QEMU and KVM
//! are here): the time from the command's start to hello's first console
//! line, for `kiln up NAME DIR` (hello's line in the unit's `console.log`)
//! and `kiln up NAME IMAGE` against `kiln run DIR` (the line on its
//! stdout), interleaved in rounds; then 100 `kiln up` of hello, one after
//! another, left running: the wall time, and the daemon's RSS with them
//! against its RSS when it started. The daemon runs with its state and socket in
//! a temporary directory of its own, removed at the end with everything it
//! started.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Prepared, progress, runnable};
use crate::error::{BenchError, tail};
use crate::exec::{self, Context, Service, argv};
use crate::report::{Baseline, Row, Status, Summary, ms};
use crate::setup::kvm_missing;

const SECTION: &str = "supervisor";
/// Longest one start may take to its first line.
const LIMIT: Duration = Duration::from_secs(60);
/// How many unikernels the second measurement starts.
const MANY: usize = 100;

/// A daemon of this section's own, in a temporary directory; on drop it,
/// its unikernels and the directory are gone.
struct Daemon {
    dir: PathBuf,
    service: Option<Service>,
    kiln: PathBuf,
    target: PathBuf,
    /// The daemon's RSS once it listens, before any unikernel (KiB).
    rss_at_start: u64,
}

impl Daemon {
    fn start(p: &Prepared) -> Result<Daemon, BenchError> {
        let dir = std::env::temp_dir().join(format!("kiln-bench-daemon-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("create", &dir, e))?;
        let mut d = Daemon {
            service: None,
            kiln: p.env.kiln.clone(),
            target: p.env.unikernel_target(),
            rss_at_start: 0,
            dir,
        };
        let a = argv([
            d.kiln.as_os_str(),
            "daemon".as_ref(),
            "--state".as_ref(),
            d.dir.join("state").as_os_str(),
            "--socket".as_ref(),
            d.socket().as_os_str(),
        ]);
        d.service = Some(Service::start(
            &a,
            &p.env.work.join("supervisor-daemon.log"),
        )?);
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(d.socket()).is_err() {
            if let Some(s) = d.service.as_mut()
                && let Some(status) = s.exited()
            {
                return Err(s.died(status));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(BenchError::Setup(
                    "the daemon did not listen within 10 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        d.rss_at_start = d.rss_kib()?;
        Ok(d)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("kiln.sock")
    }

    fn console(&self, name: &str) -> PathBuf {
        self.dir.join("state/units").join(name).join("console.log")
    }

    /// `kiln ARGS` against this daemon, with the unikernels' target
    /// directory (so that `kiln up DIR` finds hello built).
    fn command(&self, args: &[&std::ffi::OsStr]) -> Command {
        let mut c = Command::new(&self.kiln);
        c.args(args)
            .env("KILN_SOCKET", self.socket())
            .env("KILN_TARGET_DIR", &self.target)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// `kiln ARGS`, which must succeed within [`LIMIT`]; its stdout.
    fn ok(&self, args: &[&str]) -> Result<String, BenchError> {
        let mut a = argv([self.kiln.as_os_str()]);
        a.extend(argv(args));
        let socket = self.socket();
        let env = [
            ("KILN_SOCKET", Some(socket.as_os_str())),
            ("KILN_TARGET_DIR", Some(self.target.as_os_str())),
        ];
        let f = exec::run_ok(
            &a,
            Context {
                dir: None,
                env: &env,
            },
            LIMIT,
        )?;
        Ok(f.stdout)
    }

    /// The daemon's own resident set, in KiB.
    fn rss_kib(&self) -> Result<u64, BenchError> {
        let pid = self.service.as_ref().map_or(0, Service::pid);
        let path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&path).map_err(|e| BenchError::io("read", path.clone(), e))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| BenchError::Parse {
                what: "VmRSS",
                program: "/proc/PID/status",
                output: tail(&status, 200),
            })
    }

    /// The units `kiln ps` lists, by name, with their states.
    fn ps(&self) -> Result<Vec<(String, String)>, BenchError> {
        let out = self.ok(&["ps", "--json"])?;
        let rows: serde_json::Value =
            serde_json::from_str(&out).map_err(|_| BenchError::Parse {
                what: "a JSON array",
                program: "kiln ps --json",
                output: tail(&out, 200),
            })?;
        Ok(rows
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                        (s("name"), s("state"))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Each unikernel through the daemon (its taps and files go too);
        // then the daemon and whatever is left of its tree.
        if let Ok(units) = self.ps() {
            for (name, _) in units {
                let _ = self.ok(&["rm", "-f", &name]);
            }
        }
        drop(self.service.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads `child`'s stdout until the line `hello`; the time since `started`.
fn first_line_of(mut cmd: Command, started: Instant) -> Result<Duration, BenchError> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BenchError::Spawn {
            program: "kiln".into(),
            source,
            hint: "the section runs the kiln it built",
        })?;
    // Killed if it has not ended within the limit (checked while unreaped,
    // so the pid is still this child's).
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    std::thread::spawn(move || {
        while started.elapsed() < LIMIT {
            if flag.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !flag.load(Ordering::Acquire) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    });
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut took = None;
    for line in lines.by_ref() {
        match line {
            Ok(l) if l.trim_end() == "hello" => {
                took = Some(started.elapsed());
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // The rest (QEMU's last words) is drained so that it can exit.
    for _ in lines {}
    let status = child.wait();
    done.store(true, Ordering::Release);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    match (took, status) {
        (Some(t), Ok(s)) if s.success() => Ok(t),
        (_, s) => Err(BenchError::Failed {
            command: format!("{cmd:?}"),
            status: s.map_or_else(|e| e.to_string(), |s| s.to_string()),
            stderr: tail(&stderr, 400),
        }),
    }
}

/// Whether `path` holds the line `hello`.
fn has_hello(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|l| l.split(|b| *b == b'\n').any(|l| l == b"hello"))
}

/// One target's figures: the project directory and image, and the
/// samples of each way of starting it.
struct Case {
    target: &'static str,
    dir: PathBuf,
    image: PathBuf,
    run: Vec<f64>,
    up_dir: Vec<f64>,
    up_image: Vec<f64>,
    failed: Option<String>,
}

impl Case {
    fn new(target: &'static str, image: &Path) -> Case {
        let dir = image
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Case {
            target,
            dir,
            image: image.to_owned(),
            run: Vec::new(),
            up_dir: Vec::new(),
            up_image: Vec::new(),
            failed: None,
        }
    }

    /// One round: `kiln run DIR`, `kiln up NAME DIR`, `kiln up NAME IMAGE`.
    fn round(&mut self, d: &Daemon, i: usize) {
        if self.failed.is_some() {
            return;
        }
        let once = || -> Result<(f64, f64, f64), BenchError> {
            let t = self.target;
            let mut c = d.command(&[
                "run".as_ref(),
                "-t".as_ref(),
                t.as_ref(),
                self.dir.as_os_str(),
                "--".as_ref(),
                "--times".as_ref(),
                "1".as_ref(),
            ]);
            c.env_remove("KILN_SOCKET");
            let run = first_line_of(c, Instant::now())?;
            let up = |name: &str, what: &Path| -> Result<Duration, BenchError> {
                let started = Instant::now();
                let out = d
                    .command(&[
                        "up".as_ref(),
                        "-t".as_ref(),
                        t.as_ref(),
                        "--restart".as_ref(),
                        "never".as_ref(),
                        name.as_ref(),
                        what.as_os_str(),
                        "--".as_ref(),
                        "--times".as_ref(),
                        "1".as_ref(),
                    ])
                    .output()
                    .map_err(|source| BenchError::Spawn {
                        program: "kiln".into(),
                        source,
                        hint: "the section runs the kiln it built",
                    })?;
                if !out.status.success() {
                    return Err(BenchError::Failed {
                        command: format!("kiln up {name} {}", what.display()),
                        status: out.status.to_string(),
                        stderr: tail(&String::from_utf8_lossy(&out.stderr), 400),
                    });
                }
                let log = d.console(name);
                while !has_hello(&log) {
                    if started.elapsed() > LIMIT {
                        return Err(BenchError::Timeout {
                            command: format!("kiln up {name}: first console line"),
                            secs: LIMIT.as_secs(),
                        });
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                let took = started.elapsed();
                d.ok(&["rm", "-f", name])?;
                Ok(took)
            };
            let up_dir = up(&format!("d-{t}-{i}"), &self.dir)?;
            let up_image = up(&format!("i-{t}-{i}"), &self.image)?;
            Ok((ms(run), ms(up_dir), ms(up_image)))
        };
        match once() {
            Ok((r, d, i)) => {
                self.run.push(r);
                self.up_dir.push(d);
                self.up_image.push(i);
            }
            Err(e) => self.failed = Some(e.to_string()),
        }
    }

    fn rows(self, note: &str) -> Vec<Row> {
        let names = [
            format!("kiln run DIR, first console line{note}"),
            format!("kiln up NAME DIR, first console line{note}"),
            format!("kiln up NAME IMAGE, first console line{note}"),
        ];
        if let Some(why) = self.failed {
            return names
                .iter()
                .map(|n| Row::missing(SECTION, n, self.target, "ms", Status::Failed(why.clone())))
                .collect();
        }
        let base = Baseline {
            name: "kiln run DIR".into(),
            value: Summary::of(&self.run).median,
        };
        vec![
            Row::samples(SECTION, &names[0], self.target, &self.run, "ms"),
            Row::samples(SECTION, &names[1], self.target, &self.up_dir, "ms")
                .against(Some(base.clone())),
            Row::samples(SECTION, &names[2], self.target, &self.up_image, "ms").against(Some(base)),
        ]
    }
}

/// `kiln up` of [`MANY`] hellos of `image` (each prints once a second,
/// for days), one after another; the wall time and the daemon's RSS
/// once all run, against its RSS when it started (before any unikernel:
/// the rounds before and earlier targets' units leave it higher). The
/// units are removed after.
fn many(d: &Daemon, target: &str, image: &Path, note: &str) -> Vec<Row> {
    let wall = format!("{MANY} x kiln up NAME IMAGE, one after another{note}");
    let rss = format!("daemon RSS with {MANY} running{note}");
    let measure = || -> Result<(f64, f64, f64), BenchError> {
        let before = d.rss_at_start;
        let image = image.display().to_string();
        let started = Instant::now();
        for i in 0..MANY {
            let name = format!("m-{target}-{i}");
            d.ok(&[
                "up",
                "--restart",
                "never",
                &name,
                &image,
                "--",
                "--times",
                "4000000000",
            ])?;
        }
        let wall = started.elapsed();
        let running = d.ps()?.iter().filter(|(_, s)| s == "running").count();
        let after = d.rss_kib()?;
        for i in 0..MANY {
            d.ok(&["rm", "-f", &format!("m-{target}-{i}")])?;
        }
        if running != MANY {
            return Err(BenchError::Setup(format!(
                "{running} of {MANY} unikernels running after the last kiln up"
            )));
        }
        Ok((
            wall.as_secs_f64(),
            before as f64 / 1024.0,
            after as f64 / 1024.0,
        ))
    };
    match measure() {
        Ok((secs, before, after)) => vec![
            Row::ok(SECTION, &wall, target, secs, "s"),
            Row::ok(SECTION, &rss, target, after, "MB").against(Some(Baseline {
                name: "daemon RSS at start".into(),
                value: before,
            })),
        ],
        Err(e) => vec![
            Row::missing(SECTION, &wall, target, "s", Status::Failed(e.to_string())),
            Row::missing(SECTION, &rss, target, "MB", Status::Failed(e.to_string())),
        ],
    }
}

/// Runs the supervisor section.
pub fn run(p: &Prepared) -> Vec<Row> {
    let note = p.env.profile.note();
    let rounds = if p.counts.quick { 3 } else { 11 };
    progress(&format!(
        "supervisor: kiln up against kiln run to hello's first line, {rounds} interleaved rounds"
    ));
    let mut rows = Vec::new();
    let mut cases = Vec::new();
    for (variant, a) in &p.hello {
        match runnable(
            a,
            SECTION,
            "kiln up NAME DIR, first console line",
            *variant,
            "ms",
        ) {
            Ok(b) => cases.push(Case::new(variant.target(), &b.image)),
            Err(row) => rows.push(*row),
        }
    }
    match virtio_hello(p) {
        Ok(image) => cases.push(Case::new("virtio", &image)),
        Err(status) => rows.push(Row::missing(
            SECTION,
            &format!("kiln up NAME DIR, first console line{note}"),
            "virtio",
            "ms",
            status,
        )),
    }
    let d = match Daemon::start(p) {
        Ok(d) => d,
        Err(e) => {
            rows.push(Row::missing(
                SECTION,
                "kiln daemon",
                "-",
                "ms",
                Status::Failed(e.to_string()),
            ));
            return rows;
        }
    };
    // One round to warm the page cache and cargo's view of the builds.
    for c in &mut cases {
        c.round(&d, 0);
        c.run.clear();
        c.up_dir.clear();
        c.up_image.clear();
    }
    for i in 1..=rounds {
        for c in &mut cases {
            c.round(&d, i);
        }
    }
    let images: Vec<(&'static str, PathBuf)> = cases
        .iter()
        .filter(|c| matches!(c.target, "unix" | "spt"))
        .map(|c| (c.target, c.image.clone()))
        .collect();
    for c in cases {
        rows.extend(c.rows(note));
    }
    // Many at once: unix (and spt in a full run); the hvt and virtio guests
    // would hold 100 VMs' memory on a shared machine.
    for (target, image) in images {
        if p.counts.quick && target != "unix" {
            continue;
        }
        progress(&format!(
            "supervisor: {MANY} x kiln up of hello on {target}"
        ));
        rows.extend(many(&d, target, &image, note));
    }
    drop(d);
    rows
}

/// hello built for virtio, or why it cannot run here.
fn virtio_hello(p: &Prepared) -> Result<PathBuf, Status> {
    if let Some(why) = kvm_missing() {
        return Err(Status::NotAvailable(why));
    }
    if let Some(why) = super::virtio::qemu_missing() {
        return Err(Status::Failed(why));
    }
    progress("supervisor: building hello for virtio");
    super::virtio::build(&p.env, "hello").map_err(|e| Status::Failed(format!("build: {e}")))
}
