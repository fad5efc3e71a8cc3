//! A network namespace of the command's own, with a tap for the unikernel
//! and loopback for host-stack servers; torn down on drop. No address is
//! ever given to an interface of the root namespace.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::exec::{self, Argv, Context, Service, argv};

/// The tap's name inside the namespace.
pub const TAP: &str = "kbtap0";
/// The host side of the tap.
pub const HOST_V4: &str = "10.81.0.1";
/// The unikernel's address on the tap.
pub const GUEST_V4: &str = "10.81.0.2";
/// The prefix length of both.
pub const PREFIX: u8 = 24;

const LIMIT: Duration = Duration::from_secs(20);

/// A network namespace, deleted (with its tap) on drop.
pub struct Netns {
    name: String,
}

fn ip(args: &[&str]) -> Result<(), BenchError> {
    let mut a = argv(["ip"]);
    a.extend(argv(args));
    exec::run_ok(&a, Context::default(), LIMIT)?;
    Ok(())
}

/// Why no namespace can be made here, if it cannot: it needs root.
pub fn root_missing() -> Option<crate::report::Unavailable> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self") {
        Ok(m) if m.uid() == 0 => None,
        _ => Some(crate::report::Unavailable::NotRoot),
    }
}

impl Netns {
    /// Creates `kiln-bench-PID` with loopback up and a persistent tap with
    /// the host address.
    pub fn create() -> Result<Self, BenchError> {
        let name = format!("kiln-bench-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "tuntap", "add", "dev", TAP, "mode", "tap"])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{HOST_V4}/{PREFIX}"),
            "dev",
            TAP,
        ])?;
        ip(&["-n", n, "link", "set", TAP, "up"])?;
        Ok(ns)
    }

    /// `argv` run inside the namespace.
    pub fn wrap(&self, inner: &[OsString]) -> Argv {
        let mut a = argv(["ip", "netns", "exec", self.name.as_str()]);
        a.extend(inner.iter().cloned());
        a
    }

    /// Starts `inner` inside the namespace.
    pub fn start(&self, inner: &[OsString], log: &Path) -> Result<Service, BenchError> {
        Service::start(&self.wrap(inner), log)
    }

    /// Waits until `url` answers 200 to curl inside the namespace, or
    /// `service` exits, for at most `limit`.
    pub fn wait_http(
        &self,
        service: &mut Service,
        url: &str,
        limit: Duration,
    ) -> Result<(), BenchError> {
        let start = Instant::now();
        loop {
            if let Some(status) = service.exited() {
                return Err(service.died(status));
            }
            let curl = self.wrap(&argv([
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "1",
                url,
            ]));
            if let Ok(f) = exec::run(&curl, Context::default(), Duration::from_secs(5))
                && f.stdout.trim() == "200"
            {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(BenchError::Setup(format!(
                    "{url} did not answer within {} s",
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["-n", &self.name, "link", "del", TAP]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// The nginx configuration serving `root` on `port` of every address, one
/// process, no logs, its files under `prefix`.
pub fn nginx_conf(prefix: &Path, root: &Path, port: u16) -> String {
    let p = prefix.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\n\
         error_log {p}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 1000000;\n\
         \x20 client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
         \x20 fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
         \x20 types {{ text/html html; image/png png; text/css css; }}\n\
         \x20 server {{\n    listen {port};\n    root {};\n    index index.html;\n  }}\n}}\n",
        root.display()
    )
}
