//! The control socket: binding it (mode 0660, root and the configured
//! group), checking each peer's credentials, reading length-limited request
//! lines, and answering them.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::console::{Console, Next};
use crate::daemon::{self, Config, Live, Shared, log, now_ms};
use crate::net;
use crate::procfs;
use crate::proto::{self, MAX_REQUEST, Request, Response, Spec};
use crate::state::{Phase, Unit};

/// The protocol version in the greeting.
pub const PROTOCOL: u32 = 1;

/// How long a client may take to send a request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type BindError = (&'static str, PathBuf, io::Error);

/// Binds the control socket, replacing a stale one (the daemon holds the
/// state lock, so no other daemon serves it).
pub(crate) fn bind(config: &Config) -> Result<UnixListener, BindError> {
    let path = &config.socket;
    let err = |action: &'static str| move |e: io::Error| (action, path.clone(), e);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err("create the directory of"))?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("remove the old socket")(e)),
    }
    let listener = UnixListener::bind(path).map_err(err("bind"))?;
    if let Some(gid) = config.group {
        rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))
            .map_err(|e| err("change the group of")(e.into()))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(err("set the mode of"))?;
    Ok(listener)
}

/// Accepts connections forever, one thread each, at most
/// `max_connections` at once.
pub(crate) fn serve(shared: &Arc<Shared>, listener: UnixListener) {
    let active = Arc::new(AtomicUsize::new(0));
    let refused = AtomicUsize::new(0);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if active.load(Ordering::Relaxed) >= shared.config.max_connections {
            let n = refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log(&format!("{n} connections refused: too many at once"));
            }
            let _ = respond(
                &mut stream,
                &Response::error(
                    "the daemon is serving too many connections",
                    Some("try again; `kiln logs -f` readers each hold one".into()),
                ),
            );
            continue;
        }
        if let Err(why) = authorize(&stream, shared.config.group) {
            log(&why);
            let _ = respond(
                &mut stream,
                &Response::error(
                    "permission denied",
                    Some("run kiln as root or as a member of the daemon's group".into()),
                ),
            );
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(shared);
        let active = Arc::clone(&active);
        daemon::spawn_thread("kiln-conn", move || {
            connection(&shared, stream);
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Checks the peer's credentials (SO_PEERCRED): root, the daemon's own
/// user, or a member of the configured group.
fn authorize(stream: &UnixStream, group: Option<u32>) -> Result<(), String> {
    let cred = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("refused a client: cannot read its credentials: {e}"))?;
    let uid = cred.uid.as_raw();
    let gid = cred.gid.as_raw();
    if uid == 0 || uid == rustix::process::geteuid().as_raw() {
        return Ok(());
    }
    if let Some(g) = group {
        let pid = cred.pid.as_raw_nonzero().get();
        if gid == g || procfs::groups(pid).contains(&g) {
            return Ok(());
        }
    }
    Err(format!(
        "refused a client: uid {uid} gid {gid} (pid {}) is neither root nor in the daemon's group",
        cred.pid.as_raw_nonzero()
    ))
}

fn respond(stream: &mut UnixStream, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Reads one request line of at most [`MAX_REQUEST`] bytes within
/// [`REQUEST_TIMEOUT`] in all (a client trickling bytes does not hold a
/// connection longer). `Ok(None)` at the end of the stream, `Err(())` for a
/// line too long or cut short.
fn read_line(reader: &mut BufReader<UnixStream>) -> io::Result<Option<Result<Vec<u8>, ()>>> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        reader.get_ref().set_read_timeout(Some(left))?;
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then_some(Err(())));
        }
        let room = MAX_REQUEST - line.len();
        let window = buf.get(..buf.len().min(room)).unwrap_or_default();
        if let Some(end) = window.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(window.get(..end).unwrap_or_default());
            reader.consume(end + 1);
            return Ok(Some(Ok(line)));
        }
        let n = window.len();
        line.extend_from_slice(window);
        reader.consume(n);
        if line.len() >= MAX_REQUEST {
            return Ok(Some(Err(())));
        }
    }
}

/// Serves requests on one connection until it closes, an oversized or
/// timed-out request, or a `logs` stream that ends.
fn connection(shared: &Arc<Shared>, stream: UnixStream) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    // The daemon speaks first: a client reads this greeting (or the
    // refusal sent instead) before it writes, so a refusal always arrives.
    if respond(&mut writer, &Response::ok(json!({ "protocol": PROTOCOL }))).is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    loop {
        let line = match read_line(&mut reader) {
            Ok(None) | Err(_) => return,
            Ok(Some(Err(()))) => {
                let _ = respond(
                    &mut writer,
                    &Response::error(
                        format!("request longer than {MAX_REQUEST} bytes or without a newline"),
                        Some("send one JSON object per line".into()),
                    ),
                );
                return;
            }
            Ok(Some(Ok(line))) => line,
        };
        let request = match proto::parse(&line) {
            Ok(r) => r,
            Err(e) => {
                if respond(&mut writer, &Response::error(e.message, Some(e.hint))).is_err() {
                    return;
                }
                continue;
            }
        };
        if let Request::Logs { name, follow, tail } = request {
            logs(shared, &mut writer, &name, follow, tail);
            return;
        }
        let response = handle(shared, request);
        if respond(&mut writer, &response).is_err() {
            return;
        }
    }
}

fn not_found(name: &str) -> Response {
    Response::error(
        format!("no unikernel {name}"),
        Some("`kiln ps` lists them".into()),
    )
}

fn handle(shared: &Arc<Shared>, request: Request) -> Response {
    match request {
        Request::Up { name, spec } => up(shared, &name, spec),
        Request::Ps {} => ps(shared),
        Request::Start { name } => {
            let mut inner = shared.lock();
            let Some(live) = inner.live.get(&name) else {
                return not_found(&name);
            };
            if let Some(p) = &live.proc {
                return Response::error(
                    format!("{name} is already running (pid {})", p.pid),
                    Some(format!("`kiln restart {name}` stops it first")),
                );
            }
            if let Some(u) = inner.state.units.get_mut(&name) {
                u.phase = Phase::Running;
                u.failures_in_row = 0;
            }
            match daemon::start(shared, &mut inner, &name) {
                Ok(()) => Response::ok(describe(shared, &inner, &name)),
                Err(e) => failed_start(shared, &mut inner, &name, e),
            }
        }
        Request::Stop { name, timeout_s } => {
            match daemon::stop(shared, &name, Duration::from_secs(timeout_s), false) {
                Ok(s) => Response::ok(json!({
                    "name": name,
                    "was_running": s.was_running,
                    "forced": s.forced,
                    "exit": s.exit,
                })),
                Err(e) => Response::error(e, None),
            }
        }
        Request::Restart { name, timeout_s } => {
            if let Err(e) = daemon::stop(shared, &name, Duration::from_secs(timeout_s), false) {
                return Response::error(e, None);
            }
            handle(shared, Request::Start { name })
        }
        Request::Rm { name, force } => rm(shared, &name, force),
        Request::Stats { name } => stats(shared, &name),
        Request::Inspect { name } => {
            let (mut described, running) = {
                let inner = shared.lock();
                if !inner.live.contains_key(&name) {
                    return not_found(&name);
                }
                let running = inner
                    .live
                    .get(&name)
                    .is_some_and(|l| l.proc.is_some())
                    .then(|| inner.state.units.get(&name).map(|u| u.spec.clone()))
                    .flatten();
                (describe(shared, &inner, &name), running)
            };
            // The counters are read without the lock (QMP takes a round
            // trip to QEMU).
            if let Some(spec) = running {
                described["block"] = crate::block::counters(&spec, &shared.unit_dir(&name));
            }
            Response::ok(described)
        }
        Request::Logs { .. } => Response::error("logs is served as a stream", None),
    }
}

fn failed_start(
    shared: &Arc<Shared>,
    inner: &mut daemon::Inner,
    name: &str,
    e: String,
) -> Response {
    if let Some(u) = inner.state.units.get_mut(name) {
        u.phase = Phase::Exited;
    }
    shared.save(inner);
    Response::error(e, None)
}

fn up(shared: &Arc<Shared>, name: &str, spec: Spec) -> Response {
    if let Err(e) = daemon::check_files(&spec) {
        return Response::error(e, None);
    }
    let mut inner = shared.lock();
    if inner.state.units.contains_key(name) {
        return Response::error(
            format!("a unikernel named {name} exists"),
            Some(format!(
                "`kiln start {name}` starts it again, `kiln rm -f {name}` removes it"
            )),
        );
    }
    let dir = shared.unit_dir(name);
    let _ = fs::remove_dir_all(&dir);
    let console = match fs::create_dir_all(&dir)
        .and_then(|()| Console::open(&dir, shared.config.console))
    {
        Ok(c) => c,
        Err(e) => return Response::error(format!("cannot create {}: {e}", dir.display()), None),
    };
    let id = inner.state.next_id;
    inner.state.next_id += 1;
    inner.state.units.insert(
        name.to_string(),
        Unit {
            id,
            spec,
            phase: Phase::Running,
            instance: 0,
            pid: None,
            start_ticks: None,
            started_at_ms: None,
            restarts: 0,
            failures_in_row: 0,
            last_exit: None,
            created_at_ms: now_ms(),
        },
    );
    inner.live.insert(
        name.to_string(),
        Live {
            console,
            proc: None,
            restart_at: None,
            taps: Vec::new(),
        },
    );
    match daemon::start(shared, &mut inner, name) {
        Ok(()) => Response::ok(describe(shared, &inner, name)),
        Err(e) => {
            // Nothing of a unikernel that never started is kept.
            inner.state.units.remove(name);
            inner.live.remove(name);
            shared.save(&inner);
            let _ = fs::remove_dir_all(&dir);
            Response::error(e, None)
        }
    }
}

fn rm(shared: &Arc<Shared>, name: &str, force: bool) -> Response {
    {
        let inner = shared.lock();
        let Some(live) = inner.live.get(name) else {
            return not_found(name);
        };
        if live.proc.is_some() && !force {
            return Response::error(
                format!("{name} is running"),
                Some(format!("`kiln stop {name}` first, or `kiln rm -f {name}`")),
            );
        }
    }
    if let Err(e) = daemon::stop(shared, name, Duration::ZERO, true) {
        return Response::error(e, None);
    }
    let mut inner = shared.lock();
    if inner.live.get(name).is_some_and(|l| l.proc.is_some()) {
        return Response::error(format!("{name} was started again meanwhile"), None);
    }
    inner.state.units.remove(name);
    inner.live.remove(name);
    shared.save(&inner);
    shared.changed.notify_all();
    drop(inner);
    let _ = fs::remove_dir_all(shared.unit_dir(name));
    Response::ok(json!({ "name": name, "removed": true }))
}

/// The state shown by `ps`: the saved phase, or `stopping` while a stop
/// waits.
fn state_word(unit: &Unit, live: &Live) -> &'static str {
    match (unit.phase, live.proc.is_some()) {
        (Phase::Running, true) => "running",
        (Phase::Running, false) => "starting",
        (Phase::Restarting, _) => "restarting",
        (Phase::Exited, _) => "exited",
        (Phase::Failed, _) => "failed",
        (Phase::Stopped, true) => "stopping",
        (Phase::Stopped, false) => "stopped",
    }
}

fn describe(shared: &Shared, inner: &daemon::Inner, name: &str) -> Value {
    let (Some(unit), Some(live)) = (inner.state.units.get(name), inner.live.get(name)) else {
        return Value::Null;
    };
    let pid = live.proc.as_ref().map(|p| p.pid);
    json!({
        "name": name,
        "state": state_word(unit, live),
        "target": unit.spec.target,
        "pid": pid,
        "uptime_s": live.proc.as_ref().map(|p| p.started.elapsed().as_secs()),
        "restarts": unit.restarts,
        "failures_in_row": unit.failures_in_row,
        "last_exit": unit.last_exit,
        "instance": unit.instance,
        "start_ticks": unit.start_ticks,
        "started_at_ms": unit.started_at_ms,
        "created_at_ms": unit.created_at_ms,
        "next_restart_in_ms": live.restart_at.map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64),
        "taps": live.taps,
        "spec": unit.spec,
        "console_log": shared.unit_dir(name).join("console.log"),
    })
}

fn ps(shared: &Arc<Shared>) -> Response {
    let pids: Vec<(String, Option<i32>)> = {
        let inner = shared.lock();
        inner
            .live
            .iter()
            .map(|(n, l)| (n.clone(), l.proc.as_ref().map(|p| p.pid)))
            .collect()
    };
    // /proc is read without the lock.
    let rss: std::collections::HashMap<String, u64> = pids
        .iter()
        .filter_map(|(n, p)| p.map(|p| (n.clone(), procfs::usage(p).rss_bytes)))
        .collect();
    let inner = shared.lock();
    let rows: Vec<Value> = inner
        .state
        .units
        .iter()
        .filter_map(|(name, unit)| {
            let live = inner.live.get(name)?;
            let pid = live.proc.as_ref().map(|p| p.pid);
            Some(json!({
                "name": name,
                "target": unit.spec.target,
                "state": state_word(unit, live),
                "pid": pid,
                "uptime_s": live.proc.as_ref().map(|p| p.started.elapsed().as_secs()),
                "restarts": unit.restarts,
                "rss_bytes": pid.and_then(|_| rss.get(name).copied()),
                "last_exit": unit.last_exit,
            }))
        })
        .collect();
    Response::ok(Value::Array(rows))
}

fn stats(shared: &Arc<Shared>, name: &str) -> Response {
    let (pid, taps, console, uptime, spec) = {
        let inner = shared.lock();
        let (Some(live), Some(unit)) = (inner.live.get(name), inner.state.units.get(name)) else {
            return not_found(name);
        };
        (
            live.proc.as_ref().map(|p| p.pid),
            live.taps.clone(),
            Arc::clone(&live.console),
            live.proc
                .as_ref()
                .map(|p| p.started.elapsed().as_secs_f64()),
            unit.spec.clone(),
        )
    };
    let Some(pid) = pid else {
        return Response::error(
            format!("{name} is not running"),
            Some(format!("`kiln inspect {name}` shows how it ended")),
        );
    };
    let usage = procfs::usage(pid);
    let nets: Vec<Value> = taps
        .iter()
        .filter_map(|t| net::tap_stats(t))
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .collect();
    Response::ok(json!({
        "name": name,
        "pid": pid,
        "uptime_s": uptime,
        "process": usage,
        "net": nets,
        "block": crate::block::counters(&spec, &shared.unit_dir(name)),
        "console_write_errors_bytes": console.write_errors(),
    }))
}

/// Streams the console: the tail, then (with `follow`) live output until
/// the unikernel is stopped or removed, or the client goes away.
fn logs(
    shared: &Arc<Shared>,
    writer: &mut UnixStream,
    name: &str,
    follow: bool,
    tail: Option<u32>,
) {
    let console = {
        let inner = shared.lock();
        match inner.live.get(name) {
            Some(l) => Arc::clone(&l.console),
            None => {
                let _ = respond(writer, &not_found(name));
                return;
            }
        }
    };
    if !follow {
        if respond(writer, &Response::ok(Value::Null)).is_ok() {
            let _ = writer.write_all(&console.tail(tail));
        }
        return;
    }
    let (head, mut follower) = match console.follow(tail) {
        Ok(x) => x,
        Err(e) => {
            let _ = respond(
                writer,
                &Response::error(format!("cannot read the console: {e}"), None),
            );
            return;
        }
    };
    if respond(writer, &Response::ok(Value::Null)).is_err() || writer.write_all(&head).is_err() {
        return;
    }
    let _ = writer.set_write_timeout(Some(Duration::from_secs(60)));
    let mut idle_since_stop = 0;
    loop {
        match follower.next(Duration::from_millis(200)) {
            Ok(Next::Data(d)) => {
                if writer.write_all(&d).is_err() {
                    return;
                }
            }
            Ok(Next::Idle) => {
                if client_gone(writer) {
                    return;
                }
                let inner = shared.lock();
                let done = match (inner.state.units.get(name), inner.live.get(name)) {
                    (Some(u), Some(l)) => l.proc.is_none() && !u.phase.wants_process(),
                    _ => true,
                };
                drop(inner);
                // One more idle round after the end, for the reader thread
                // to pass on the last bytes of the pipe.
                if done {
                    idle_since_stop += 1;
                    if idle_since_stop > 1 {
                        return;
                    }
                }
            }
            Err(_) => return,
        }
    }
}

/// Whether the client closed its end (a `logs -f` client sends nothing).
fn client_gone(stream: &UnixStream) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        stream,
        rustix::event::PollFlags::IN | rustix::event::PollFlags::HUP,
    )];
    match rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())) {
        Ok(n) if n > 0 => {
            let mut b = [0u8; 1];
            let peeked = rustix::net::recv(
                stream,
                &mut b,
                rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
            );
            matches!(peeked, Ok((0, _)) | Err(_))
        }
        _ => false,
    }
}
