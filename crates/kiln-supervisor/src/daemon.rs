//! The daemon: the state of every unikernel behind one lock, the threads
//! that watch processes and read consoles, the restart scheduler, and the
//! start, stop and re-adoption of processes.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::pipe::SpliceFlags;
use rustix::process::{Pid, PidfdFlags, Signal};

use crate::console::{self, Console};
use crate::net;
use crate::policy::{self, Backoff, Exit};
use crate::procfs;
use crate::proto::{Spec, Target};
use crate::state::{Phase, State, Unit};
use crate::virtio;

/// The daemon's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the state file and each unikernel's console live.
    pub state_dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// The group allowed on the socket besides root (and the daemon's user).
    pub group: Option<u32>,
    /// Console bounds.
    pub console: console::Limits,
    /// Restart backoff.
    pub backoff: Backoff,
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long `kiln stop` waits by default, and a stop interrupted by a
    /// daemon restart is given.
    pub default_stop_timeout: Duration,
}

impl Config {
    /// The defaults for `state_dir` and `socket`.
    pub fn new(state_dir: PathBuf, socket: PathBuf) -> Config {
        Config {
            state_dir,
            socket,
            group: None,
            console: console::Limits::default(),
            backoff: Backoff::default(),
            max_connections: 64,
            default_stop_timeout: Duration::from_secs(10),
        }
    }
}

/// A process the daemon watches.
pub(crate) struct Proc {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub started: Instant,
    pub instance: u64,
}

/// What the daemon holds for one unit besides its saved state.
pub(crate) struct Live {
    pub console: Arc<Console>,
    pub proc: Option<Proc>,
    pub restart_at: Option<Instant>,
    pub taps: Vec<String>,
}

/// The daemon's state behind its lock.
pub(crate) struct Inner {
    pub state: State,
    pub live: HashMap<String, Live>,
}

/// What every thread shares.
pub(crate) struct Shared {
    pub config: Config,
    pub inner: Mutex<Inner>,
    pub changed: Condvar,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state_path(&self) -> PathBuf {
        self.config.state_dir.join("state.json")
    }

    /// The directory of unit `name`.
    pub fn unit_dir(&self, name: &str) -> PathBuf {
        self.config.state_dir.join("units").join(name)
    }

    /// Saves the state durably; a failure is logged (the daemon keeps
    /// serving with the state in memory, and the next change tries again).
    pub fn save(&self, inner: &Inner) {
        if let Err(e) = inner.state.save(&self.state_path(), true) {
            log(&format!("{e}: {}", error_chain(&e)));
        }
    }

    /// Saves a change that only describes running processes (a pid, a
    /// start time): atomically, without fsync.
    pub fn save_runtime(&self, inner: &Inner) {
        if let Err(e) = inner.state.save(&self.state_path(), false) {
            log(&format!("{e}: {}", error_chain(&e)));
        }
    }
}

pub(crate) fn log(message: &str) {
    eprintln!("kiln daemon: {message}");
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = String::new();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Setting up a file or the socket failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another daemon holds the state directory.
    #[error("another kiln daemon uses {}", .0.display())]
    Busy(PathBuf),
    /// The state file is unreadable.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs the daemon until it is killed.
pub fn run(config: Config) -> Result<(), DaemonError> {
    let dir = config.state_dir.clone();
    fs::create_dir_all(dir.join("units")).map_err(io_err("create", &dir))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(io_err("set the mode of", &dir))?;
    let lock_path = dir.join("daemon.lock");
    let lock = File::create(&lock_path).map_err(io_err("create", &lock_path))?;
    if lock.try_lock().is_err() {
        return Err(DaemonError::Busy(dir));
    }
    let state = State::load(&dir.join("state.json"))?;
    // Each unikernel holds a few descriptors (its console pipe, a scratch
    // pipe, a pidfd): the soft limit is raised to the hard one.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let shared = Arc::new(Shared {
        config,
        inner: Mutex::new(Inner {
            state,
            live: HashMap::new(),
        }),
        changed: Condvar::new(),
    });
    recover(&shared);
    let listener =
        crate::server::bind(&shared.config).map_err(|(action, path, e)| DaemonError::Io {
            action,
            path,
            source: e,
        })?;
    {
        let shared = Arc::clone(&shared);
        spawn_thread("kiln-scheduler", move || scheduler(&shared));
    }
    log(&format!(
        "serving {} with state in {}",
        shared.config.socket.display(),
        dir.display()
    ));
    crate::server::serve(&shared, listener);
    drop(lock);
    Ok(())
}

pub(crate) fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(256 * 1024)
        .spawn(f)
    {
        log(&format!("cannot start a thread: {e}"));
    }
}

/// Brings the saved state and the running processes together after a
/// start: adopts the processes of units that should run, kills processes
/// it marked but no unit claims, restarts per policy those that died
/// meanwhile, and finishes stops that were interrupted.
fn recover(shared: &Arc<Shared>) {
    let mut guard = shared.lock();
    let inner = &mut *guard;
    let marked = procfs::marked(&inner.state.daemon_id);
    let mut claimed: HashMap<String, i32> = HashMap::new();
    for (pid, name, instance) in marked {
        let owner = inner
            .state
            .units
            .get(&name)
            .filter(|u| u.instance == instance);
        match owner {
            Some(u) if u.pid.is_none_or(|p| p == pid) && !claimed.contains_key(&name) => {
                claimed.insert(name, pid);
            }
            _ => {
                log(&format!(
                    "killing process {pid} ({name}, instance {instance}): no unit claims it"
                ));
                let _ = rustix::process::kill_process(pid_of(pid), Signal::KILL);
            }
        }
    }
    // A unit whose directory was removed gets an empty console; one whose
    // console cannot be opened at all (an unusable state directory) is
    // dropped, and its process killed rather than left unsupervised.
    let names: Vec<String> = inner.state.units.keys().cloned().collect();
    for name in &names {
        let dir = shared.unit_dir(name);
        let console =
            fs::create_dir_all(&dir).and_then(|()| Console::open(&dir, shared.config.console));
        let console = match console {
            Ok(c) => c,
            Err(e) => {
                log(&format!(
                    "cannot open the console of {name}: {e}; dropping it"
                ));
                if let Some(pid) = claimed.remove(name) {
                    let _ = rustix::process::kill_process(pid_of(pid), Signal::KILL);
                }
                inner.state.units.remove(name);
                continue;
            }
        };
        inner.live.insert(
            name.clone(),
            Live {
                console,
                proc: None,
                restart_at: None,
                taps: Vec::new(),
            },
        );
    }
    for name in names {
        let Some(unit) = inner.state.units.get(&name).cloned() else {
            continue;
        };
        let adopted = claimed
            .get(&name)
            .and_then(|&pid| adopt(shared, inner, &name, &unit, pid));
        let taps: Vec<String> = (0..unit.spec.net.len())
            .map(|i| net::tap_name(unit.id, i))
            .collect();
        match (adopted, unit.phase.wants_process()) {
            (Some(()), true) => {
                if let Some(live) = inner.live.get_mut(&name) {
                    live.taps = taps;
                }
                let pid = claimed.get(&name).copied().unwrap_or_default();
                log(&format!("adopted {name} (pid {pid})"));
            }
            (Some(()), false) => {
                // A stop was under way when the daemon died: finish it.
                if let Some(live) = inner.live.get_mut(&name) {
                    live.taps = taps;
                }
                log(&format!("finishing the stop of {name}"));
                let shared2 = Arc::clone(shared);
                let timeout = shared.config.default_stop_timeout;
                spawn_thread("kiln-stop", move || {
                    let _ = stop(&shared2, &name, timeout, false);
                });
            }
            (None, wants) => {
                // A marked process that could not be taken over (its start
                // time differs, no pidfd) must not run beside a new one.
                if let Some(&pid) = claimed.get(&name) {
                    log(&format!("killing process {pid} of {name}: cannot adopt it"));
                    let _ = rustix::process::kill_process(pid_of(pid), Signal::KILL);
                }
                for tap in &taps {
                    net::delete_tap(tap);
                }
                if let Some(u) = inner.state.units.get_mut(&name) {
                    u.pid = None;
                    u.start_ticks = None;
                }
                if wants {
                    // It ended while the daemon was away: its status is lost.
                    log(&format!("{name} ended while the daemon was not running"));
                    exited(shared, inner, &name, Exit::Unknown, None);
                }
            }
        }
    }
    // Directories of units the state does not name are left-overs of `rm`.
    if let Ok(entries) = fs::read_dir(shared.config.state_dir.join("units")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !inner.state.units.contains_key(&name) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    shared.save(inner);
}

fn pid_of(pid: i32) -> Pid {
    Pid::from_raw(pid).unwrap_or(Pid::INIT)
}

/// Takes over process `pid` of unit `name` after a daemon restart: checks
/// it is the same process (start time), holds it by pidfd, reopens its
/// console pipe and watches it.
fn adopt(shared: &Arc<Shared>, inner: &mut Inner, name: &str, unit: &Unit, pid: i32) -> Option<()> {
    let st = procfs::stat(pid)?;
    if unit.start_ticks.is_some_and(|t| t != st.start) {
        return None;
    }
    let pidfd = rustix::process::pidfd_open(pid_of(pid), PidfdFlags::empty()).ok()?;
    // The pid could have been reused between the check and the open.
    if !procfs::is_same(pid, st.start) {
        return None;
    }
    let fifo = shared
        .unit_dir(name)
        .join(format!("console-{}.fifo", unit.instance));
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(nonblock_flag())
        .open(&fifo)
        .ok();
    let live = inner.live.get_mut(name)?;
    let watch_fd = pidfd.try_clone().ok()?;
    let started = Instant::now()
        .checked_sub(Duration::from_millis(
            now_ms().saturating_sub(unit.started_at_ms.unwrap_or_else(now_ms)),
        ))
        .unwrap_or_else(Instant::now);
    live.proc = Some(Proc {
        pid,
        pidfd,
        started,
        instance: unit.instance,
    });
    if let Some(u) = inner.state.units.get_mut(name) {
        u.pid = Some(pid);
        u.start_ticks = Some(st.start);
    }
    if let Some(reader) = reader {
        start_reader(Arc::clone(&live.console), reader, fifo);
    }
    let shared = Arc::clone(shared);
    let name = name.to_string();
    let instance = unit.instance;
    spawn_thread("kiln-watch", move || {
        // Not our child: all the daemon can learn is that it ended.
        let mut fds = [rustix::event::PollFd::new(
            &watch_fd,
            rustix::event::PollFlags::IN,
        )];
        loop {
            match rustix::event::poll(&mut fds, None) {
                Ok(n) if n > 0 => break,
                Ok(_) | Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
        }
        let mut inner = shared.lock();
        exited(&shared, &mut inner, &name, Exit::Unknown, Some(instance));
    });
    Some(())
}

/// O_NONBLOCK for `OpenOptions::custom_flags`.
fn nonblock_flag() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

/// Reads a console pipe until every writer is gone, into `console`, then
/// removes the pipe. Each chunk is copied out of the pipe with `tee(2)`,
/// which leaves it there, appended to the console, and only then consumed:
/// a daemon killed in between loses nothing (the next one reads the chunk
/// again, so it may appear twice).
fn start_reader(console: Arc<Console>, file: File, fifo: PathBuf) {
    spawn_thread("kiln-console", move || {
        // Blocking from here on.
        let _ = rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty());
        let (scratch_r, scratch_w) = match rustix::pipe::pipe() {
            Ok(p) => p,
            Err(e) => {
                log(&format!("cannot make a pipe for {}: {e}", fifo.display()));
                return;
            }
        };
        let mut file = file;
        let mut scratch = File::from(scratch_r);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match rustix::pipe::tee(&file, &scratch_w, buf.len(), SpliceFlags::empty()) {
                Ok(0) => break,
                Ok(n) => n.min(buf.len()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) => {
                    log(&format!("cannot read {}: {e}", fifo.display()));
                    break;
                }
            };
            let Some(chunk) = buf.get_mut(..n) else { break };
            if scratch.read_exact(chunk).is_err() {
                break;
            }
            console.append(chunk);
            // Consumed: the same bytes, as only this thread reads the pipe.
            if file.read_exact(chunk).is_err() {
                break;
            }
        }
        let _ = fs::remove_file(fifo);
    });
}

/// Starts unit `name`'s next instance.
pub(crate) fn start(shared: &Arc<Shared>, inner: &mut Inner, name: &str) -> Result<(), String> {
    let daemon_id = inner.state.daemon_id.clone();
    let unit = inner
        .state
        .units
        .get_mut(name)
        .ok_or_else(|| format!("no unikernel {name}"))?;
    unit.instance += 1;
    unit.pid = None;
    unit.start_ticks = None;
    let unit = unit.clone();
    // The instance is saved before the process exists: a daemon killed
    // right after the spawn finds the process by its mark.
    shared.save(inner);
    let dir = shared.unit_dir(name);
    let live = inner
        .live
        .get_mut(name)
        .ok_or_else(|| format!("no unikernel {name}"))?;
    check_files(&unit.spec)?;

    let mut taps: Vec<String> = Vec::new();
    for (i, n) in unit.spec.net.iter().enumerate() {
        let tap = net::tap_name(unit.id, i);
        if let Err(e) = net::create_tap(&tap, &n.bridge) {
            for t in &taps {
                net::delete_tap(t);
            }
            return Err(e);
        }
        taps.push(tap);
    }
    let cleanup = |taps: &[String]| {
        for t in taps {
            net::delete_tap(t);
        }
    };

    let fifo = dir.join(format!("console-{}.fifo", unit.instance));
    let _ = fs::remove_file(&fifo);
    let opened = rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(io::Error::from)
    .and_then(|()| {
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(nonblock_flag())
            .open(&fifo)?;
        // Read-write for the unikernel: it holds a reader itself, so its
        // console writes never fail while the daemon is away; they wait
        // when the pipe is full, and the next daemon reads them.
        let writer = OpenOptions::new().read(true).write(true).open(&fifo)?;
        let _ = rustix::pipe::fcntl_setpipe_size(&writer, 1024 * 1024);
        Ok((reader, writer))
    });
    let (reader, writer) = match opened {
        Ok(x) => x,
        Err(e) => {
            cleanup(&taps);
            return Err(format!(
                "cannot make the console pipe {}: {e}",
                fifo.display()
            ));
        }
    };
    let mut command = match command(&unit.spec, &taps) {
        Ok(c) => c,
        Err(e) => {
            cleanup(&taps);
            return Err(e);
        }
    };
    let stderr = match writer.try_clone() {
        Ok(f) => f,
        Err(e) => {
            cleanup(&taps);
            return Err(format!("cannot duplicate the console pipe: {e}"));
        }
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(stderr))
        .env(
            procfs::MARK,
            format!("{daemon_id}/{name}/{}", unit.instance),
        )
        .process_group(0);
    if let Some(cpu) = unit.spec.cpu {
        crate::sys::pin(&mut command, cpu);
    }
    let child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            cleanup(&taps);
            let _ = fs::remove_file(&fifo);
            return Err(format!(
                "cannot start {}: {e}",
                command.get_program().to_string_lossy()
            ));
        }
    };
    // The command (and its copies of the pipe) is gone: the reader sees
    // the end of the pipe when the unikernel's last writer closes.
    drop(command);
    let pid = child.id() as i32;
    let start_ticks = procfs::stat(pid).map(|s| s.start);
    let pidfd = match rustix::process::pidfd_open(pid_of(pid), PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            log(&format!("cannot open a pidfd for {pid}: {e}"));
            // Still signalled by pid, which is safe while unreaped.
            match fs::File::open("/dev/null") {
                Ok(f) => OwnedFd::from(f),
                Err(_) => return Err("cannot open /dev/null".into()),
            }
        }
    };
    start_reader(Arc::clone(&live.console), reader, fifo);
    live.proc = Some(Proc {
        pid,
        pidfd,
        started: Instant::now(),
        instance: unit.instance,
    });
    live.taps = taps;
    live.restart_at = None;
    if let Some(u) = inner.state.units.get_mut(name) {
        u.pid = Some(pid);
        u.start_ticks = start_ticks;
        u.started_at_ms = Some(now_ms());
        u.phase = Phase::Running;
    }
    // The instance and the phase were saved durably before the spawn; a
    // daemon that dies before this write finds the process by its mark.
    shared.save_runtime(inner);
    shared.changed.notify_all();
    let virtio = unit.spec.target == Target::Virtio;
    watch_child(shared, name.to_string(), unit.instance, child, virtio);
    Ok(())
}

fn watch_child(shared: &Arc<Shared>, name: String, instance: u64, mut child: Child, virtio: bool) {
    let shared = Arc::clone(shared);
    spawn_thread("kiln-watch", move || {
        let exit = match child.wait() {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Unknown,
            },
            Err(_) => Exit::Unknown,
        };
        let mut inner = shared.lock();
        let exit = if virtio {
            let stopping = inner
                .state
                .units
                .get(&name)
                .is_some_and(|u| u.phase == Phase::Stopped);
            virtio::guest_exit(exit, stopping)
        } else {
            exit
        };
        exited(&shared, &mut inner, &name, exit, Some(instance));
    });
}

/// Checks that the files `spec` names exist and are what they should be.
pub(crate) fn check_files(spec: &Spec) -> Result<(), String> {
    let executable = |what: &str, p: &Path| -> Result<(), String> {
        let m =
            fs::metadata(p).map_err(|e| format!("cannot use the {what} {}: {e}", p.display()))?;
        if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
            return Err(format!(
                "the {what} {} is not an executable file",
                p.display()
            ));
        }
        Ok(())
    };
    match spec.target {
        Target::Unix => executable("image", &spec.image)?,
        Target::Hvt | Target::Spt | Target::Virtio => {
            let m = fs::metadata(&spec.image)
                .map_err(|e| format!("cannot use the image {}: {e}", spec.image.display()))?;
            if !m.is_file() {
                return Err(format!("the image {} is not a file", spec.image.display()));
            }
            if let Some(t) = &spec.tender {
                executable("tender", t)?;
            }
        }
    }
    for b in &spec.block {
        let m = fs::metadata(&b.path)
            .map_err(|e| format!("cannot use block file {}: {e}", b.path.display()))?;
        if !m.is_file() {
            return Err(format!(
                "block file {} is not a regular file",
                b.path.display()
            ));
        }
    }
    for n in &spec.net {
        if !net::is_bridge(&n.bridge) {
            return Err(format!("there is no bridge {}", n.bridge));
        }
    }
    Ok(())
}

/// The command that runs `spec` with its taps.
fn command(spec: &Spec, taps: &[String]) -> Result<Command, String> {
    let devices: Vec<String> = spec
        .net
        .iter()
        .zip(taps)
        .map(|(n, tap)| format!("--net:{}={tap}", n.device))
        .chain(
            spec.block
                .iter()
                .map(|b| format!("--block:{}={}", b.device, b.path.display())),
        )
        .collect();
    Ok(match &spec.tender {
        None => {
            let mut c = Command::new(&spec.image);
            c.args(&devices).args(&spec.args);
            c
        }
        Some(vmm) if spec.target == Target::Virtio => {
            let mut c = Command::new(vmm);
            c.args(virtio::qemu_args(spec, &devices)?);
            c
        }
        Some(tender) => {
            let mut c = Command::new(tender);
            if let Some(mb) = spec.mem {
                c.arg(format!("--mem={mb}"));
            }
            // Quoted for the guest's MirageOS-style splitting of the
            // command line the tender joins with spaces.
            c.args(&devices).arg("--").arg(&spec.image).args(
                spec.args
                    .iter()
                    .map(|a| kiln_args::cmdline::quote(a).into_owned()),
            );
            c
        }
    })
}

/// Records that instance `instance` of `name` ended with `exit`, and
/// decides what next by policy. `instance` is `None` for a process found
/// dead at recovery.
pub(crate) fn exited(
    shared: &Arc<Shared>,
    inner: &mut Inner,
    name: &str,
    exit: Exit,
    instance: Option<u64>,
) {
    let Some(live) = inner.live.get_mut(name) else {
        return;
    };
    let ran = match (&live.proc, instance) {
        (Some(p), Some(i)) if p.instance == i => Some(p.started.elapsed()),
        (None, None) => None,
        // A stale report of an older instance.
        _ => return,
    };
    live.proc = None;
    for tap in live.taps.drain(..) {
        net::delete_tap(&tap);
    }
    let Some(unit) = inner.state.units.get_mut(name) else {
        return;
    };
    unit.pid = None;
    unit.start_ticks = None;
    unit.last_exit = Some(exit);
    let backoff = shared.config.backoff;
    if unit.phase.wants_process() {
        if policy::should_restart(unit.spec.restart, exit) {
            if ran.is_some_and(|r| r >= backoff.healthy) {
                unit.failures_in_row = 0;
            }
            unit.failures_in_row += 1;
            if unit.failures_in_row > backoff.limit {
                log(&format!(
                    "{name} ended with {exit}, {} failures in a row; giving up",
                    unit.failures_in_row - 1
                ));
                unit.phase = Phase::Failed;
            } else {
                let delay = backoff.delay(unit.failures_in_row);
                log(&format!(
                    "{name} ended with {exit}; restarting in {delay:?}"
                ));
                unit.phase = Phase::Restarting;
                live.restart_at = Some(Instant::now() + delay);
            }
        } else {
            log(&format!("{name} ended with {exit}; not restarting"));
            unit.phase = Phase::Exited;
        }
    }
    shared.save(inner);
    shared.changed.notify_all();
}

/// Starts the units whose backoff is over.
fn scheduler(shared: &Arc<Shared>) {
    let mut inner = shared.lock();
    loop {
        let now = Instant::now();
        let due: Vec<String> = inner
            .live
            .iter()
            .filter(|(_, l)| l.proc.is_none() && l.restart_at.is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(live) = inner.live.get_mut(&name) else {
                continue;
            };
            live.restart_at = None;
            let restarting = inner
                .state
                .units
                .get(&name)
                .is_some_and(|u| u.phase == Phase::Restarting);
            if !restarting {
                continue;
            }
            if let Some(u) = inner.state.units.get_mut(&name) {
                u.restarts += 1;
            }
            if let Err(e) = start(shared, &mut inner, &name) {
                log(&format!("cannot restart {name}: {e}"));
                if let Some(u) = inner.state.units.get_mut(&name) {
                    u.phase = Phase::Restarting;
                }
                exited(shared, &mut inner, &name, Exit::Code(1), None);
            }
        }
        let next = inner
            .live
            .values()
            .filter_map(|l| l.restart_at)
            .min()
            .map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(Instant::now())
            });
        inner = shared
            .changed
            .wait_timeout(inner, next.min(Duration::from_secs(1)))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Sends `signal` to `name`'s process. SIGKILL also goes to the rest of
/// its process group (each unikernel leads its own): nothing it forked
/// survives a forced stop.
fn signal(inner: &Inner, name: &str, signal: Signal) {
    let Some(p) = inner.live.get(name).and_then(|l| l.proc.as_ref()) else {
        return;
    };
    let sent = match rustix::process::pidfd_send_signal(p.pidfd.as_fd(), signal) {
        Ok(()) => true,
        // Gone (reaped): its pid may already be another process's.
        Err(rustix::io::Errno::SRCH) => false,
        // Not a pidfd (pidfd_open failed at start, a kernel before 5.3):
        // by pid, as other supervisors do, with the window that leaves
        // between the watcher reaping it and taking the lock.
        Err(_) => rustix::process::kill_process(pid_of(p.pid), signal).is_ok(),
    };
    // Signalled means not yet reaped: the group is still the unikernel's.
    if sent && signal == Signal::KILL {
        let _ = rustix::process::kill_process_group(pid_of(p.pid), Signal::KILL);
    }
}

/// How a stop went.
pub(crate) struct Stopped {
    pub was_running: bool,
    pub forced: bool,
    pub exit: Option<Exit>,
}

/// Stops `name`: marks it stopped (saved first), sends SIGTERM (or SIGKILL
/// when `kill`), waits `timeout`, then sends SIGKILL and waits for the end.
pub(crate) fn stop(
    shared: &Arc<Shared>,
    name: &str,
    timeout: Duration,
    kill: bool,
) -> Result<Stopped, String> {
    let mut inner = shared.lock();
    let unit = inner
        .state
        .units
        .get_mut(name)
        .ok_or_else(|| format!("no unikernel {name}"))?;
    unit.phase = Phase::Stopped;
    let live = inner
        .live
        .get_mut(name)
        .ok_or_else(|| format!("no unikernel {name}"))?;
    live.restart_at = None;
    let Some(instance) = live.proc.as_ref().map(|p| p.instance) else {
        shared.save(&inner);
        return Ok(Stopped {
            was_running: false,
            forced: false,
            exit: None,
        });
    };
    shared.save(&inner);
    let running = |inner: &Inner| {
        inner
            .live
            .get(name)
            .and_then(|l| l.proc.as_ref())
            .is_some_and(|p| p.instance == instance)
    };
    signal(&inner, name, if kill { Signal::KILL } else { Signal::TERM });
    let deadline = Instant::now() + timeout;
    let mut forced = kill;
    loop {
        if !running(&inner) {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            if !forced {
                forced = true;
                signal(&inner, name, Signal::KILL);
            }
            // After SIGKILL the end is prompt; wait for the watcher.
            inner = shared
                .changed
                .wait_timeout(inner, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if now >= deadline + Duration::from_secs(10) {
                return Err(format!("{name} did not end 10 s after SIGKILL"));
            }
            continue;
        }
        inner = shared
            .changed
            .wait_timeout(inner, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    let exit = inner.state.units.get(name).and_then(|u| u.last_exit);
    Ok(Stopped {
        was_running: true,
        forced,
        exit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Restart;

    fn spec(target: Target, tender: Option<&str>, args: &[&str]) -> Spec {
        Spec {
            target,
            image: PathBuf::from("/srv/a.img"),
            tender: tender.map(PathBuf::from),
            mem: None,
            net: Vec::new(),
            block: Vec::new(),
            restart: Restart::Never,
            cpu: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn argv(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// A tender joins the guest's words with spaces into one command line:
    /// each argument is quoted for the guest's MirageOS-style splitting. A
    /// unix unikernel gets its arguments as they are.
    #[test]
    fn guest_arguments_are_quoted_for_a_tender_only() {
        let args = ["--msg", "hello \"world\"", "", "plain"];
        let c = command(&spec(Target::Spt, Some("/srv/kiln-spt"), &args), &[]).unwrap();
        assert_eq!(
            argv(&c),
            [
                "--",
                "/srv/a.img",
                "--msg",
                r#""hello \"world\"""#,
                r#""""#,
                "plain"
            ]
        );
        let c = command(&spec(Target::Unix, None, &args), &[]).unwrap();
        assert_eq!(argv(&c), args);
    }
}
