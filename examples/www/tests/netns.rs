//! The whole unikernel as the code generator composes it for `--net
//! direct` on unix: kiln-unix's tap, kiln-net's stack, the baked store and
//! `www::start`, inside a network namespace; the kernel's `curl` fetches
//! the site, one page at a time and 100 pages over 50 parallel
//! connections.
//!
//! Needs root, `ip` and `curl` (scripts/test installs them). The outer test
//! creates the namespace and re-runs this test binary inside it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_devices::MacAddress;
use kiln_kv::{Baked, Entry, digest_of};
use kiln_net::{Config, NetStack};
use kiln_rt::{block_on, timeout};
use kiln_unix::{Console, Tap, platform};

const IFNAME: &str = "kiln0";
const GUEST_V4: &str = "10.79.0.2";
const GUEST_MAC: MacAddress = MacAddress([0x02, 0x6b, 0x77, 0x77, 0x77, 0x01]);
const ENV: &str = "KILN_WWW_NETNS";

macro_rules! file {
    ($path:literal) => {
        Entry {
            path: $path,
            data: include_bytes!(concat!("../htdocs/", $path)),
            digest: [0; 32],
        }
    };
}

fn htdocs() -> Baked {
    let mut entries = vec![
        file!("about.html"),
        file!("img/kiln.png"),
        file!("index.html"),
    ];
    for e in &mut entries {
        e.digest = digest_of(e.data);
    }
    Baked::new(Box::leak(entries.into_boxed_slice())).unwrap()
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn skip(why: &str) {
    eprintln!("SKIPPED www namespace test: {why}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "skipping is not allowed with CI=true: {why}"
    );
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop (with everything inside it).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process, killed on drop if still running.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn www_on_the_direct_stack_in_a_network_namespace() {
    if !is_root() {
        return skip("needs root for a network namespace and a tap");
    }
    if !Path::new("/dev/net/tun").exists() {
        return skip("/dev/net/tun is absent");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return skip("`ip` is not installed (scripts/test installs iproute2)");
    }
    if Command::new("curl").arg("--version").output().is_err() {
        return skip("`curl` is not installed (scripts/test installs it)");
    }
    let name = format!("kiln-www-{}", std::process::id());
    ip(&["netns", "add", &name]);
    let _netns = Netns(name.clone());
    let child = Command::new("ip")
        .args(["netns", "exec", &name])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "inside_a_namespace", "--ignored", "--nocapture"])
        .env(ENV, &name)
        .spawn()
        .expect("run the inner test");
    let mut child = ChildGuard(child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "inner test hung");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "inner namespace test failed: {status}");
}

/// Runs curl with `args`; stdout on success.
fn curl(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

fn host_side() -> Result<(), String> {
    let base = format!("http://{GUEST_V4}");
    let index = curl(&[&format!("{base}/")])?;
    if index != include_bytes!("../htdocs/index.html") {
        return Err("index.html differs".into());
    }
    let png = curl(&[&format!("{base}/img/kiln.png")])?;
    if png != include_bytes!("../htdocs/img/kiln.png") {
        return Err("kiln.png differs".into());
    }
    // 100 fetches over up to 50 connections at once; every one must be a
    // 200 with the whole body.
    let mut args = vec![
        "--parallel".to_string(),
        "--parallel-max".into(),
        "50".into(),
        "-w".into(),
        "%{http_code} %{size_download}\\n".into(),
    ];
    for i in 0..100 {
        let page = if i % 2 == 0 {
            "about.html"
        } else {
            "img/kiln.png"
        };
        args.extend(["-o".into(), "/dev/null".into(), format!("{base}/{page}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = String::from_utf8(curl(&args)?).unwrap();
    let about = include_bytes!("../htdocs/about.html").len().to_string();
    let png = include_bytes!("../htdocs/img/kiln.png").len().to_string();
    let lines: Vec<&str> = report.lines().collect();
    let ok = lines
        .iter()
        .filter(|l| **l == format!("200 {about}") || **l == format!("200 {png}"))
        .count();
    if lines.len() != 100 || ok != 100 {
        return Err(format!(
            "parallel fetches: {ok} of {} good: {report}",
            lines.len()
        ));
    }
    Ok(())
}

#[test]
#[ignore = "run by www_on_the_direct_stack_in_a_network_namespace inside a network namespace"]
fn inside_a_namespace() {
    let ns = std::env::var(ENV).expect("set by www_on_the_direct_stack_in_a_network_namespace");
    // Never touch the interfaces of a namespace that is not ours.
    assert_eq!(ip(&["netns", "identify"]).trim(), ns, "not inside {ns}");
    ip(&["link", "set", "lo", "up"]);
    let result = block_on(
        platform(),
        timeout(Duration::from_secs(75), async {
            // What generated code does for `--net direct`.
            let service = Tap::open(platform(), "service", IFNAME, Some(GUEST_MAC)).unwrap();
            ip(&["addr", "add", "10.79.0.1/24", "dev", IFNAME]);
            ip(&["link", "set", IFNAME, "up"]);
            let args = [&*format!("--ipv4={GUEST_V4}/24"), "--port=80"];
            let (config, rest) = Config::extract(args).unwrap();
            assert_eq!(rest, ["--port=80"]);
            let stack = NetStack::new(service, config, 0x77_77_77).unwrap();
            kiln_rt::spawn(www::start(stack, htdocs(), Console::stdout(), 80));

            let outcome = Arc::new(Mutex::new(None));
            let slot = outcome.clone();
            std::thread::spawn(move || *slot.lock().unwrap() = Some(host_side()));
            // curl blocks in its own thread; look for its outcome every
            // 10 ms (at most 60 s).
            for _ in 0..6000 {
                if let Some(r) = outcome.lock().unwrap().take() {
                    return r;
                }
                kiln_rt::sleep(Duration::from_millis(10)).await;
            }
            Err("curl did not finish within 60 s".into())
        }),
    );
    result
        .expect("the namespace test timed out")
        .unwrap_or_else(|e| panic!("{e}"));
}
