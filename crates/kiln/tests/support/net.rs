//! Helpers for the network tests: example images built once per stack
//! through the CLI, running unikernels that clean up after themselves, and
//! a small HTTP/1.1 client (namespaces, skips and free ports come from
//! kiln-testsupport).
#![allow(dead_code)] // each test file uses a different subset

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{TempDir, kiln, temp_dir};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// The htdocs of `examples/www`.
pub fn htdocs() -> PathBuf {
    workspace().join("examples/www/htdocs")
}

/// Every file under `dir`, as (`/`-separated path relative to `dir`, bytes),
/// in path order.
pub fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under the root");
                let key = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(key, std::fs::read(&path).expect("read a file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

pub use crate::common::{shared_target_dir, text};

/// The stack a unikernel is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Net {
    /// The host's sockets.
    Socket,
    /// kiln's own stack over a tap.
    Direct,
}

impl Net {
    pub fn name(self) -> &'static str {
        match self {
            Net::Socket => "socket",
            Net::Direct => "direct",
        }
    }
}

/// Copies `from` to `to` (files and directories), writing only files whose
/// bytes changed so that cargo does not rebuild what did not change, and
/// removing what `from` does not have unless it is in `keep`.
fn sync_dir(from: &Path, to: &Path, keep: &[PathBuf]) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let mut wanted = Vec::new();
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()))
    {
        let entry = entry.expect("a directory entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        wanted.push(entry.file_name());
        if src.is_dir() {
            sync_dir(&src, &dst, keep);
        } else {
            sync_file(&std::fs::read(&src).expect("read a source file"), &dst);
        }
    }
    for entry in std::fs::read_dir(to).expect("read the copy") {
        let entry = entry.expect("a directory entry");
        let path = entry.path();
        if !wanted.contains(&entry.file_name()) && !keep.contains(&path) {
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// Writes `bytes` to `path` unless it already holds them.
fn sync_file(bytes: &[u8], path: &Path) {
    if std::fs::read(path).ok().as_deref() != Some(bytes) {
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// The `Cargo.toml` of an example, made to build outside the workspace:
/// path dependencies made absolute; only `[package]` and `[dependencies]`
/// kept (no lints inherited from the workspace, no tests or benches).
fn standalone_manifest(manifest: &str) -> String {
    let crates = workspace().join("crates");
    let mut out = String::new();
    let mut keep = true;
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            keep = trimmed == "[package]" || trimmed == "[dependencies]";
        }
        if keep {
            out.push_str(&line.replace(
                "path = \"../../crates/",
                &format!("path = \"{}/", crates.display()),
            ));
            out.push('\n');
        }
    }
    out
}

/// Copies `examples/NAME` (its manifest, `unikernel.toml`, `src/` and
/// every directory a baked store may read) into `dest`, ready to build
/// outside the workspace, with `extra` files added (path relative to the
/// example, bytes).
pub fn copy_example(name: &str, dest: &Path, extra: &[(&str, &[u8])]) {
    let keep: Vec<PathBuf> = extra.iter().map(|(p, _)| dest.join(p)).collect();
    let src = workspace().join("examples").join(name);
    std::fs::create_dir_all(dest).unwrap();
    let manifest = std::fs::read_to_string(src.join("Cargo.toml")).expect("read Cargo.toml");
    sync_file(
        standalone_manifest(&manifest).as_bytes(),
        &dest.join("Cargo.toml"),
    );
    sync_file(
        &std::fs::read(src.join("unikernel.toml")).expect("read unikernel.toml"),
        &dest.join("unikernel.toml"),
    );
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let file_name = entry.file_name();
        let skip = ["_build", "dist", "tests", "benches", "target"];
        if entry.path().is_dir() && !skip.iter().any(|s| file_name == *s) {
            sync_dir(&entry.path(), &dest.join(&file_name), &keep);
        }
    }
    for (path, bytes) in extra {
        let path = dest.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a directory for an extra file");
        }
        sync_file(bytes, &path);
    }
}

/// `kiln` with the shared target directory, in `dir`.
pub fn kiln_in(dir: &Path) -> Command {
    let mut cmd = kiln();
    cmd.env("KILN_TARGET_DIR", shared_target_dir())
        .current_dir(dir);
    cmd
}

/// Configures the unikernel in `dir` with `--net NET` and builds it with
/// `kiln build`; returns the image. Builds are one at a time: they share a
/// target directory, where every variant of one example leaves its binary
/// under the same name until `kiln build` copies it out.
pub fn kiln_build(dir: &Path, net: Net) -> Result<PathBuf, String> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = |args: &[&str]| -> Result<Output, String> {
        let out = kiln_in(dir)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run kiln: {e}"))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(format!(
                "kiln {} in {} failed ({})\n--- stderr\n{}",
                args.join(" "),
                dir.display(),
                out.status,
                text(&out.stderr)
            ))
        }
    };
    run(&["configure", "--net", net.name()])?;
    let started = Instant::now();
    let out = run(&["build"])?;
    eprintln!(
        "kiln build {} ({}) took {:?}",
        dir.display(),
        net.name(),
        started.elapsed()
    );
    let stderr = text(&out.stderr);
    let built = stderr
        .lines()
        .find_map(|l| l.strip_prefix("built "))
        .ok_or_else(|| format!("kiln build did not say what it built:\n{stderr}"))?;
    Ok(PathBuf::from(built))
}

/// Where the copies of the examples are built: kept between runs so that
/// rebuilding is incremental.
fn build_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-net")
}

/// The image of `examples/EXAMPLE` built with `net`, built once per test
/// process (a copy of the example per stack, so that stacks do not
/// overwrite each other's `dist/`).
pub fn example_image(example: &str, net: Net) -> PathBuf {
    variant_image(example, net, "", &[])
}

/// The image of `examples/EXAMPLE` built with `net` from a copy that has
/// `extra` files added (path relative to the example, bytes), under the
/// name `EXAMPLE-NET-TAG`; built once per test process.
pub fn variant_image(example: &str, net: Net, tag: &str, extra: &[(&str, &[u8])]) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    let key = match tag {
        "" => format!("{example}-{}", net.name()),
        tag => format!("{example}-{}-{tag}", net.name()),
    };
    // Held through the build: a second caller of the same variant waits
    // for it, and builds are one at a time anyway.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(key.clone())
        .or_insert_with(|| {
            let dir = build_root().join(&key);
            copy_example(example, &dir, extra);
            kiln_build(&dir, net)
        })
        .clone()
        .unwrap_or_else(|e| panic!("building {key}: {e}"))
}

/// A running process, killed on drop; its stdout and stderr go to a log
/// file shown by [`Running::log`].
pub struct Running {
    child: Child,
    log: PathBuf,
    _tmp: TempDir,
}

impl Running {
    /// Starts `cmd` with its output in a log.
    pub fn spawn(mut cmd: Command, tag: &str) -> Running {
        let tmp = temp_dir(tag);
        let log = tmp.path().join("log");
        let file = std::fs::File::create(&log).expect("create the log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        Running {
            child,
            log,
            _tmp: tmp,
        }
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics, with its log, if it has exited.
    pub fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.exited() {
            panic!("{what} exited ({status})\n--- its output\n{}", self.log());
        }
    }

    /// Waits until `ready` holds of its output so far, checking every
    /// 20 ms, for at most `limit`; panics with the output if the process
    /// exits or time runs out.
    pub fn wait_until(&mut self, what: &str, limit: Duration, mut ready: impl FnMut(&str) -> bool) {
        let start = Instant::now();
        loop {
            if ready(&self.log()) {
                return;
            }
            self.assert_running(what);
            assert!(
                start.elapsed() < limit,
                "{what}: not ready after {limit:?}\n--- its output\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit within `limit`; its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One HTTP response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header fields in order, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header field `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How long a test client waits for any one read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection with a buffered reader, every operation bounded by
/// [`IO_TIMEOUT`].
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads one response; `head` says it answers a HEAD request (no
    /// body whatever Content-Length says).
    pub fn response(&mut self, head: bool) -> Result<Response, String> {
        let mut lines = Vec::new();
        let mut size = 0;
        loop {
            let mut line = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("reading a response head: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "the connection closed inside a response head after {:?}",
                    text(&lines.concat::<u8>())
                ));
            }
            size += n;
            if size > 64 * 1024 {
                return Err("response head over 64 KiB".into());
            }
            if line == b"\r\n" {
                break;
            }
            if !line.ends_with(b"\r\n") {
                return Err(format!("a head line without CRLF: {:?}", text(&line)));
            }
            lines.push(line);
        }
        let status_line = text(lines.first().ok_or("an empty response head")?);
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        for line in &lines[1..] {
            let line = text(line);
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line {line:?}"))?;
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if !head && status != 304 {
            let length: usize = response
                .header("content-length")
                .ok_or_else(|| format!("no Content-Length in {response:?}"))?
                .parse()
                .map_err(|e| format!("bad Content-Length: {e}"))?;
            response.body = vec![0; length];
            self.reader
                .read_exact(&mut response.body)
                .map_err(|e| format!("reading a body of {length} bytes: {e}"))?;
        }
        Ok(response)
    }

    /// Whether the peer closes the connection (end of stream or reset)
    /// with nothing more to read, within [`IO_TIMEOUT`].
    pub fn closed(&mut self) -> Result<(), String> {
        let rest = self.rest()?;
        if rest.is_empty() {
            Ok(())
        } else {
            Err(format!("more bytes before the close: {:?}", text(&rest)))
        }
    }

    /// Everything up to the peer's close (end of stream or reset), within
    /// [`IO_TIMEOUT`].
    pub fn rest(&mut self) -> Result<Vec<u8>, String> {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => Ok(rest),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(rest),
            Err(e) => Err(format!("the connection did not close: {e}")),
        }
    }

    /// Half-closes the sending side.
    pub fn shutdown_write(&self) {
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Write);
    }
}

/// A `GET` (or any `method`) of `path` on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
) -> Result<Response, String> {
    let mut conn = Conn::open(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    conn.send(
        format!("{method} {path} HTTP/1.1\r\nHost: kiln\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    conn.response(method == "HEAD")
}

/// Whether something accepts TCP connections at `addr`.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Runs `curl -sS --max-time 20 ARGS` through `cmd` (plain `curl`, or
/// `ip netns exec NS curl`); its stdout.
pub fn curl(mut cmd: Command, args: &[&str]) -> Result<Vec<u8>, String> {
    kiln_testsupport::process::stdout_of(cmd.args(["-sS", "--max-time", "20"]).args(args))
        .map_err(|e| e.to_string())
}

/// Sends datagrams of each of `sizes` bytes from `local` to the echo server at
/// `server` and expects each back whole, from the server's address.
pub fn echo_roundtrips(
    local: SocketAddr,
    server: SocketAddr,
    sizes: &[usize],
) -> Result<(), String> {
    let socket = std::net::UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 70_000];
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|k| (k * 7 + i) as u8).collect();
        // Loopback does not lose datagrams, but the server may still be
        // starting: up to 10 tries, 500 ms each.
        let mut echoed = None;
        for _ in 0..10 {
            socket
                .send_to(&payload, server)
                .map_err(|e| format!("send {size} bytes to {server}: {e}"))?;
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    echoed = Some((buf[..n].to_vec(), from));
                    break;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("receive from {server}: {e}")),
            }
        }
        let (got, from) = echoed.ok_or_else(|| format!("no echo of {size} bytes from {server}"))?;
        if from != server {
            return Err(format!("the echo came from {from}, not {server}"));
        }
        if got != payload {
            return Err(format!(
                "sent {size} bytes to {server}, got {} different ones back",
                got.len()
            ));
        }
    }
    Ok(())
}
