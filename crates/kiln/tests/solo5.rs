//! End to end on the Solo5 targets through the CLI: `kiln build -t
//! hvt|spt` makes the image and the tender, `kiln run -t hvt|spt` runs
//! them. hello (output, `--times`, exit codes), clock, exit statuses and
//! arguments with spaces, quotes and backslashes, block
//! stores (kv_rw persistence, a disk kv_ro from `kiln image`), www serving
//! its site in a network namespace (baked, and from a disk image on unix,
//! hvt and spt), a tender built without modules refusing their flags and
//! devices.
//!
//! hvt needs `/dev/kvm`, the network tests root, `ip` and `curl`: without
//! them each test says loudly that it is skipped, and fails instead when
//! `CI=true`. Every build shares one `KILN_TARGET_DIR` (the one of
//! `tests/e2e.rs`), so that dependencies and tenders compile once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    ARGUMENT_ERROR, copy_dir, help_ok, kiln_in, ok, run_for, shared_target_dir, temp_dir, text,
    www_cargo_toml,
};
use kiln_testsupport::process::ChildGuard;
use kiln_testsupport::skip::{kvm_or_skip, skip};

/// Longest a build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest a unikernel may run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Hvt,
    Spt,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Hvt => "hvt",
            Target::Spt => "spt",
        }
    }
}

/// Whether `target` can run here; says why not.
fn can_run(target: Target, test: &str) -> bool {
    target != Target::Hvt || kvm_or_skip(test)
}

/// `kiln build -t TARGET DIR`, which must succeed without warnings.
fn build(dir: &Path, target: Target) {
    let out = ok(
        run_for(
            kiln_in(dir).args(["build", "-t", target.name()]),
            BUILD_TIMEOUT,
        ),
        &format!("kiln build -t {} {}", target.name(), dir.display()),
    );
    // The tender's own warnings are not the generated crate's business.
    let stderr = text(&out.stderr);
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("warning: `kiln-generated-")),
        "the generated crate has warnings:\n{stderr}"
    );
}

/// `kiln run -t TARGET [EXTRA] DIR -- ARGS`.
fn run(dir: &Path, target: Target, extra: &[&str], args: &[&str]) -> Output {
    run_for(
        kiln_in(dir)
            .args(["run", "-t", target.name()])
            .args(extra)
            .arg("--")
            .args(args),
        RUN_TIMEOUT,
    )
}

/// A unikernel crate in `dir` with `toml` and `lib_rs`, depending on
/// kiln-devices (and `deps`, TOML lines).
fn write_unikernel(dir: &Path, name: &str, toml: &str, lib_rs: &str, deps: &str) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let devices = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-devices");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\nkiln-devices = {{ path = {:?} }}\n{deps}\n[workspace]\n",
            devices.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("unikernel.toml"), toml).unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib_rs).unwrap();
}

/// hello from `kiln new`: output, `--times`, `--help`, a bad argument,
/// `--mem`; its tender has neither the net nor the block module.
fn hello(target: Target) {
    let test = format!("hello_on_{}", target.name());
    if !can_run(target, &test) {
        return;
    }
    let tmp = temp_dir(&test);
    ok(
        run_for(kiln_in(tmp.path()).args(["new", "greeter"]), RUN_TIMEOUT),
        "kiln new",
    );
    let dir = tmp.path().join("greeter");
    build(&dir, target);
    let image = dir.join(format!("dist/greeter.{}", target.name()));
    let tender = dir.join(format!("dist/kiln-{}", target.name()));
    assert!(image.is_file(), "no image at {}", image.display());
    assert!(tender.is_file(), "no tender at {}", tender.display());

    let out = ok(run(&dir, target, &[], &["--times", "2"]), "greeter");
    assert_eq!(text(&out.stdout), "hello\nhello\n");
    let out = ok(
        run(&dir, target, &["--mem", "32"], &["--times=1"]),
        "greeter --mem 32",
    );
    assert_eq!(text(&out.stdout), "hello\n");

    let out = help_ok(run(&dir, target, &[], &["--help"]), "greeter --help");
    let help = text(&out.stdout);
    assert!(help.contains("greeter: Says hello a few times"), "{help}");
    // Columns are aligned to the longest flag (`--log <filter>`).
    let words = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("--times <u32> How many times to say hello [default: 4]"),
        "{help}"
    );
    assert!(!help.contains("--net"), "{help}");

    let out = run(&dir, target, &[], &["--times=four"]);
    assert_eq!(
        out.status.code(),
        Some(ARGUMENT_ERROR),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(
            "error: invalid value 'four' for --times: expected an unsigned integer (u32)"
        ),
        "{}",
        text(&out.stdout)
    );

    // The tender was built without modules: a device flag is refused,
    // naming the module.
    let out = run_for(
        Command::new(&tender)
            .arg("--net:service=tap0")
            .arg("--")
            .arg(&image),
        RUN_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("without the net module"),
        "{}",
        text(&out.stderr)
    );

    // An image with a block device under that tender: refused, naming the
    // device and the module.
    let disk_dir = tmp.path().join("disky");
    write_unikernel(
        &disk_dir,
        "disky",
        "[unikernel]\nname = \"disky\"\nentry = \"start\"\n[devices.disk]\ntype = \"block\"\n",
        "#![no_std]\npub async fn start(disk: impl kiln_devices::Block) { let _ = disk; }\n",
        "",
    );
    ok(
        run_for(
            kiln_in(&disk_dir).args(["configure", "-t", target.name()]),
            RUN_TIMEOUT,
        ),
        "configure disky",
    );
    build(&disk_dir, target);
    let disk_image = disk_dir.join(format!("dist/disky.{}", target.name()));
    // solo5-elftool's queries on kiln's own images, as orchestrators run
    // them.
    let query = |what: &str, image: &Path| {
        let out = ok(
            run_for(
                kiln_in(&disk_dir).args(["elftool", what]).arg(image),
                RUN_TIMEOUT,
            ),
            "kiln elftool",
        );
        text(&out.stdout)
    };
    assert_eq!(
        query("query-manifest", &disk_image),
        "{\n  \"type\": \"solo5.manifest\",\n  \"version\": 1,\n  \"devices\": [\n    { \"name\": \"disk\", \"type\": \"BLOCK_BASIC\" }\n  ]\n}\n"
    );
    assert_eq!(
        query("query-abi", &image),
        format!(
            "{{\n  \"type\": \"solo5.abi\",\n  \"target\": \"{}\",\n  \"version\": 2\n}}\n",
            target.name()
        )
    );
    let out = run_for(
        Command::new(&tender).arg("--").arg(&disk_image),
        RUN_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("device 'disk'") && stderr.contains("needs the block module"),
        "{stderr}"
    );
}

#[test]
fn hello_on_hvt() {
    hello(Target::Hvt);
}

#[test]
fn hello_on_spt() {
    hello(Target::Spt);
}

/// The exit code of the entry function is the tender's, through kiln.
fn exit_codes(target: Target) {
    let test = format!("exit_codes_on_{}", target.name());
    if !can_run(target, &test) {
        return;
    }
    let tmp = temp_dir(&test);
    let dir = tmp.path().join("codes");
    write_unikernel(
        &dir,
        "codes",
        "[unikernel]\nname = \"codes\"\nentry = \"start\"\n\n[devices.console]\ntype = \"console\"\n\n\
         [arguments.code]\ntype = \"u8\"\ndoc = \"Exit code; 0 fails with a message\"\n\n\
         [arguments.say]\ntype = \"string\"\ndefault = \"exiting\"\ndoc = \"What to print first\"\n",
        "#![no_std]\nextern crate alloc;\nuse kiln_devices::Console;\n\n\
         pub async fn start(console: impl Console, code: u8, say: alloc::string::String) -> Result<u8, &'static str> {\n\
         \x20   let _ = console.log(&say);\n\
         \x20   if code == 0 { Err(\"asked to fail\") } else { Ok(code) }\n}\n",
        "",
    );
    build(&dir, target);
    let out = run(&dir, target, &[], &["--code", "7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "exiting\n");
    // The guest gets one command line and splits it MirageOS's way; `kiln
    // run` quotes each argument, so spaces, quotes and backslashes arrive
    // as given, and so does an empty argument.
    for say in [r#"two  spaces, "quotes" and a back\slash\"#, "", "it's"] {
        let out = run(&dir, target, &[], &["--code", "7", "--say", say]);
        assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{say}\n"));
    }
    // A line written for a MirageOS guest means the same to a kiln one,
    // and a quote left open is an argument error.
    let tender = dir.join(format!("dist/kiln-{}", target.name()));
    let image = dir.join(format!("dist/codes.{}", target.name()));
    let direct = |words: &[&str]| {
        run_for(
            Command::new(&tender).arg("--").arg(&image).args(words),
            RUN_TIMEOUT,
        )
    };
    let out = direct(&["--code=7", r#"--say="hello world""#, r"a\ b"]);
    assert_eq!(
        out.status.code(),
        Some(ARGUMENT_ERROR),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("error: unexpected argument 'a b'"),
        "{}",
        text(&out.stdout)
    );
    let out = direct(&["--code=7", r#"--say="hello world""#]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello world\n");
    let out = direct(&["--code=7", r#"--say="open"#]);
    assert_eq!(
        out.status.code(),
        Some(ARGUMENT_ERROR),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("error: the command line's quote at byte 15 is never closed"),
        "{}",
        text(&out.stdout)
    );

    let out = run(&dir, target, &[], &["--code=0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("error: asked to fail"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&dir, target, &[], &[]);
    assert_eq!(
        out.status.code(),
        Some(ARGUMENT_ERROR),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("error: missing required argument --code <u8>"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn exit_codes_on_hvt() {
    exit_codes(Target::Hvt);
}

#[test]
fn exit_codes_on_spt() {
    exit_codes(Target::Spt);
}

/// examples/clock: the monotonic and wall clocks and the random device.
#[test]
fn clock_on_hvt() {
    if !can_run(Target::Hvt, "clock_on_hvt") {
        return;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    build(&examples.join("clock"), Target::Hvt);
    let out = ok(
        run(&examples.join("clock"), Target::Hvt, &[], &["--rolls", "5"]),
        "clock",
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    let nanos: u64 = lines[0]
        .strip_prefix("monotonic: ")
        .and_then(|l| l.strip_suffix(" ns"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    // The guest's clock starts at boot: well under a minute has passed.
    assert!(nanos < 60_000_000_000, "{stdout}");
    let wall = lines[1].strip_prefix("wall: ").unwrap_or("");
    assert!(
        wall.len() == 24 && wall.ends_with('Z') && wall.get(..4).is_some_and(|y| y >= "2020"),
        "{stdout}"
    );
    for (i, line) in lines[2..].iter().enumerate() {
        let roll = line
            .strip_prefix(&format!("roll {}: ", i + 1))
            .unwrap_or("x");
        assert!(
            matches!(roll, "1" | "2" | "3" | "4" | "5" | "6"),
            "{stdout}"
        );
    }
}

const STORES_TOML: &str = r#"[unikernel]
name = "notes"
entry = "start"

[devices.console]
type = "console"
[devices.data]
type = "block"
[devices.notes]
type = "kv_rw"
block = "data"
[devices.disk]
type = "block"
[devices.docs]
type = "kv_ro"
impl = "disk"
block = "disk"
[devices.baked]
type = "kv_ro"
source = "files"

[arguments.key]
type = "string"
[arguments.value]
type = "string"
default = ""
"#;

const STORES_RS: &str = r#"#![no_std]
extern crate alloc;
use alloc::string::String;
use kiln_devices::{Block, Console, KvError, KvRo, KvRw};

pub async fn start(
    console: impl Console,
    data: impl Block,
    notes: impl KvRw,
    docs: impl KvRo,
    baked: impl KvRo,
    key: String,
    value: String,
) -> Result<(), KvError> {
    if !value.is_empty() {
        notes.set(&key, value.as_bytes()).await?;
    }
    let stored = notes.get(&key).await?;
    let doc = docs.get("sub/hello.txt").await?;
    let inside = baked.get("inside.txt").await?;
    let _ = console.print(format_args!(
        "{key}={} sectors={} doc={} baked={}\n",
        core::str::from_utf8(&stored).unwrap_or("?"),
        data.info().sectors,
        core::str::from_utf8(&doc).unwrap_or("?"),
        core::str::from_utf8(&inside).unwrap_or("?"),
    ));
    Ok(())
}
"#;

/// A kv_rw on a block device keeps its writes across two runs; a disk
/// kv_ro reads an image made by `kiln image`; a baked kv_ro beside them.
fn stores(target: Target) {
    let test = format!("stores_on_{}", target.name());
    if !can_run(target, &test) {
        return;
    }
    let tmp = temp_dir(&test);
    let dir = tmp.path().join("notes");
    write_unikernel(&dir, "notes", STORES_TOML, STORES_RS, "");
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/inside.txt"), "in the image").unwrap();
    std::fs::create_dir_all(tmp.path().join("docs/sub")).unwrap();
    std::fs::write(tmp.path().join("docs/sub/hello.txt"), "from kiln image").unwrap();
    let docs = tmp.path().join("docs.img");
    ok(
        run_for(
            kiln_in(tmp.path())
                .arg("image")
                .arg(tmp.path().join("docs"))
                .arg(&docs),
            RUN_TIMEOUT,
        ),
        "kiln image",
    );
    let data = tmp.path().join("data.img");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
    build(&dir, target);

    let flags = [
        format!("--block:data={}", data.display()),
        format!("--block:disk={}", docs.display()),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        flags
            .iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let args = with(&["--key=greeting", "--value=persisted"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(run(&dir, target, &[], &args), "first run");
    let expected = "greeting=persisted sectors=2048 doc=from kiln image baked=in the image\n";
    assert_eq!(text(&out.stdout), expected);

    // A second run reads what the first wrote.
    let args = with(&["--key=greeting"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(run(&dir, target, &[], &args), "second run");
    assert_eq!(text(&out.stdout), expected);

    // A key that was never set: the store's error, exit 1.
    let args = with(&["--key=other"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&dir, target, &[], &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("error: "),
        "{}",
        text(&out.stdout)
    );

    // A device left unattached: the tender refuses, naming it.
    let out = run(&dir, target, &[], &[&flags[0], "--key=greeting"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("'disk'"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn stores_on_hvt() {
    stores(Target::Hvt);
}

#[test]
fn stores_on_spt() {
    stores(Target::Spt);
}

/// Whether network namespace tests can run here; says why not.
fn can_use_namespaces(test: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
        skip(test, "needs root for a network namespace and a tap");
        return false;
    }
    if !Path::new("/dev/net/tun").exists() {
        skip(test, "/dev/net/tun is absent");
        return false;
    }
    for tool in ["ip", "curl"] {
        if Command::new(tool).arg("-V").output().is_err() {
            skip(test, &format!("`{tool}` is not installed"));
            return false;
        }
    }
    true
}

/// A network namespace with a tap `tap0` whose host side is 10.0.0.1/24;
/// deleted on drop, with everything inside it.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("kiln-e2e-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns.exec_ok(&["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ns.exec_ok(&["ip", "addr", "add", "10.0.0.1/24", "dev", "tap0"]);
        ns.exec_ok(&["ip", "link", "set", "tap0", "up"]);
        ns
    }

    /// `ip netns exec NAME` followed by `program`.
    fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }

    fn exec_ok(&self, args: &[&str]) {
        ok(
            run_for(self.exec(args[0]).args(&args[1..]), RUN_TIMEOUT),
            &args.join(" "),
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ip(args: &[&str]) {
    ok(
        run_for(Command::new("ip").args(args), RUN_TIMEOUT),
        &format!("ip {}", args.join(" ")),
    );
}

/// examples/www copied to `dir` as a crate of its own, its unikernel.toml
/// with a block device `disk` that `htdocs` reads with `--kv-ro disk`.
fn www_copy(dir: &Path) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/www");
    copy_dir(&example.join("src"), &dir.join("src"));
    copy_dir(&example.join("htdocs"), &dir.join("htdocs"));
    let toml = std::fs::read_to_string(example.join("unikernel.toml")).unwrap();
    assert!(toml.contains("impl = \"baked\"\n"), "{toml}");
    let toml = toml.replace("impl = \"baked\"\n", "impl = \"baked\"\nblock = \"disk\"\n")
        + "\n[devices.disk]\ntype = \"block\"\n";
    std::fs::write(dir.join("unikernel.toml"), toml).unwrap();
    std::fs::write(dir.join("Cargo.toml"), www_cargo_toml()).unwrap();
    example.join("htdocs")
}

/// Serves www in a namespace with `kiln run -t TARGET` (`extra` device
/// flags) and fetches pages with curl, comparing them byte for byte with
/// the files of `htdocs`; then reads its `/metrics`: the exits to the
/// tender by call (`kiln_exits_total`) and the executor's polls moved with
/// the requests.
fn serve_and_fetch(ns: &Netns, dir: &Path, target: &str, extra: &[String], htdocs: &Path) {
    let log = dir.join(format!("www-{target}.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = ns.exec(env!("CARGO_BIN_EXE_kiln"));
    cmd.env("KILN_TARGET_DIR", shared_target_dir())
        .env("NO_COLOR", "1")
        .args(["run", "-t", target])
        .arg(dir)
        .args([
            "--",
            "--net:service=tap0",
            "--ipv4=10.0.0.2/24",
            "--port=8080",
            "--metrics-path=/metrics",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    let mut server = ChildGuard(cmd.spawn().expect("start kiln run"));
    let fetch = |path: &str| {
        run_for(
            ns.exec("curl")
                .args(["-sS", "--fail", "--max-time", "5"])
                .arg(format!("http://10.0.0.2:8080{path}")),
            RUN_TIMEOUT,
        )
    };
    // The first answer may wait for `kiln run` (its build step waits for
    // the builds of other tests sharing the target directory), for the
    // guest to boot and for ARP.
    let start = Instant::now();
    let first = loop {
        let out = fetch("/index.html");
        if out.status.success() {
            break out.stdout;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "www on {target} exited with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < BUILD_TIMEOUT,
            "www on {target} did not answer within {BUILD_TIMEOUT:?}: {}\n--- its output\n{}",
            text(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        first == std::fs::read(htdocs.join("index.html")).unwrap(),
        "/index.html differs from the file"
    );
    for path in ["/img/kiln.png", "/docs/http.html", "/css/site.css"] {
        let out = ok(fetch(path), &format!("curl {path} from www on {target}"));
        assert!(
            out.stdout == std::fs::read(htdocs.join(&path[1..])).unwrap(),
            "{path} differs from the file"
        );
    }
    let out = fetch("/missing");
    assert!(!out.status.success(), "a missing page was served");
    let out = ok(
        fetch("/metrics"),
        &format!("curl /metrics from www on {target}"),
    );
    let body = text(&out.stdout);
    let page = kiln_testsupport::prometheus::parse(&body)
        .unwrap_or_else(|e| panic!("{e}\n--- the page\n{body}"));
    let exits = |call: &str| {
        page.value("kiln_exits_total", &[("call", call)])
            .unwrap_or_else(|| panic!("no kiln_exits_total{{call={call:?}}} on www's page\n{body}"))
    };
    // Five requests, each at least a frame in and out and a wait.
    let calls: &[&str] = match target {
        // kiln-hvt's NET_EXCHANGE sends, receives and waits in one exit.
        "hvt" => &["net_exchange"],
        // kiln-unix counts its reactor's waits.
        "unix" => &["ppoll"],
        _ => &["epoll_pwait", "read", "write", "clock_gettime"],
    };
    for call in calls {
        assert!(exits(call) >= 5.0, "{call}: {}\n{body}", exits(call));
    }
    assert!(
        page.value("kiln_executor_polls_total", &[]).unwrap_or(0.0) >= 20.0,
        "{body}"
    );
    let _ = server.0.kill();
    let _ = server.0.wait();
}

/// www on a Solo5 target, in a namespace: baked, then from a disk image.
fn www(target: Target) {
    let test = format!("www_on_{}_in_a_namespace", target.name());
    if !can_run(target, &test) || !can_use_namespaces(&test) {
        return;
    }
    let tmp = temp_dir(&test);
    let dir = tmp.path().join("www");
    let htdocs = www_copy(&dir);
    build(&dir, target);
    // --help needs no device flags (the tender leaves the devices
    // unattached) and lists the stack's flags and the tender's device flags.
    let out = help_ok(
        run_for(
            kiln_in(&dir).args(["run", "-t", target.name(), ".", "--", "--help"]),
            BUILD_TIMEOUT,
        ),
        "www --help",
    );
    let help = text(&out.stdout);
    assert!(help.contains("--port <u16>"), "{help}");
    assert!(help.contains("--ipv4=ADDR/PREFIX"), "{help}");
    assert!(
        help.contains(&format!("attached by kiln-{}", target.name()))
            && help.contains("--net:service=IFACE"),
        "{help}"
    );
    let ns = Netns::new(target.name());
    serve_and_fetch(&ns, &dir, target.name(), &[], &htdocs);

    // The same crate, its htdocs read from an image made by kiln image.
    let image = tmp.path().join("htdocs.img");
    ok(
        run_for(
            kiln_in(tmp.path()).arg("image").arg(&htdocs).arg(&image),
            RUN_TIMEOUT,
        ),
        "kiln image",
    );
    ok(
        run_for(
            kiln_in(&dir).args(["configure", "-t", target.name(), "--kv-ro", "disk"]),
            RUN_TIMEOUT,
        ),
        "configure --kv-ro disk",
    );
    build(&dir, target);
    let flag = format!("--block:disk={}", image.display());
    serve_and_fetch(&ns, &dir, target.name(), &[flag], &htdocs);
}

#[test]
fn www_on_hvt_in_a_namespace() {
    www(Target::Hvt);
}

#[test]
fn www_on_spt_in_a_namespace() {
    www(Target::Spt);
}

/// www on unix with the direct stack over a tap, its htdocs from a disk
/// image made by kiln image.
#[test]
fn www_direct_from_a_disk_image_on_unix() {
    let test = "www_direct_from_a_disk_image_on_unix";
    if !can_use_namespaces(test) {
        return;
    }
    let tmp = temp_dir(test);
    let dir = tmp.path().join("www");
    let htdocs = www_copy(&dir);
    let image = tmp.path().join("htdocs.img");
    ok(
        run_for(
            kiln_in(tmp.path()).arg("image").arg(&htdocs).arg(&image),
            RUN_TIMEOUT,
        ),
        "kiln image",
    );
    ok(
        run_for(
            kiln_in(&dir).args(["configure", "--net", "direct", "--kv-ro", "disk"]),
            RUN_TIMEOUT,
        ),
        "configure --net direct --kv-ro disk",
    );
    ok(
        run_for(kiln_in(&dir).arg("build"), BUILD_TIMEOUT),
        "kiln build",
    );
    // --help lists the stack's flags.
    let out = help_ok(
        run_for(
            Command::new(dir.join("dist/www.unix")).arg("--help"),
            RUN_TIMEOUT,
        ),
        "www --help",
    );
    let help = text(&out.stdout);
    assert!(help.contains("--ipv4=ADDR/PREFIX"), "{help}");
    assert!(help.contains("--no-dhcp"), "{help}");
    assert!(help.contains("--block:disk=PATH"), "{help}");
    // A bad stack argument: exit 64 with the stack's message.
    let out = run_for(
        Command::new(dir.join("dist/www.unix")).arg("--ipv4=10.0.0.2"),
        RUN_TIMEOUT,
    );
    assert_eq!(
        out.status.code(),
        Some(ARGUMENT_ERROR),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).starts_with("error: invalid value '10.0.0.2' for --ipv4"),
        "{}",
        text(&out.stderr)
    );
    let ns = Netns::new("unix");
    let flag = format!("--block:disk={}", image.display());
    serve_and_fetch(&ns, &dir, "unix", &[flag], &htdocs);
}

/// A no_std unikernel whose dependency needs std cannot be built for the
/// Solo5 targets: kiln says so after cargo's messages.
#[test]
fn a_dependency_needing_std_is_named_on_hvt() {
    let tmp = temp_dir("needs-std");
    let dep = tmp.path().join("uses-std");
    std::fs::create_dir_all(dep.join("src")).unwrap();
    std::fs::write(
        dep.join("Cargo.toml"),
        "[package]\nname = \"uses-std\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        dep.join("src/lib.rs"),
        "pub fn name() -> String { std::env::args().next().unwrap_or_default() }\n",
    )
    .unwrap();
    let dir = tmp.path().join("app");
    write_unikernel(
        &dir,
        "app",
        "[unikernel]\nname = \"app\"\nentry = \"start\"\n[devices.console]\ntype = \"console\"\n",
        "#![no_std]\npub async fn start(console: impl kiln_devices::Console) {\n\
         \x20   let _ = (console, uses_std::name);\n}\n",
        &format!("uses-std = {{ path = {:?} }}\n", dep.display().to_string()),
    );
    let out = run_for(kiln_in(&dir).args(["build", "-t", "hvt"]), BUILD_TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "error: cargo failed to build app for hvt; the unikernel crate `app` or one of its dependencies needs std"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: make the crate #![no_std]"),
        "{stderr}"
    );
}

/// examples/bulk copied to `dir` as a crate of its own.
fn bulk_copy(dir: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bulk");
    copy_dir(&example.join("src"), &dir.join("src"));
    std::fs::copy(example.join("unikernel.toml"), dir.join("unikernel.toml")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), common::example_cargo_toml("bulk")).unwrap();
}

/// Sends `len` bytes of noise to `addr` while reading them back, and
/// compares the SHA-256 of both streams.
fn echo_sha256(ns: &Netns, addr: &str, len: usize) -> Result<(), String> {
    // The client runs inside the namespace: this test binary again, as a
    // small echo client (`KILN_E2E_ECHO_CLIENT`).
    let out = run_for(
        ns.exec(std::env::current_exe().unwrap())
            .args(["--exact", "bulk_echo_client", "--ignored", "--nocapture"])
            .env("KILN_E2E_ECHO_CLIENT", format!("{addr} {len}")),
        Duration::from_secs(120),
    );
    let stdout = text(&out.stdout);
    if !out.status.success() || !stdout.contains("echo: identical") {
        return Err(format!("{}{}", stdout, text(&out.stderr)));
    }
    Ok(())
}

/// The echo client `echo_sha256` runs in a namespace: connects to the
/// address in `KILN_E2E_ECHO_CLIENT` ("ADDR LEN"), sends LEN bytes of
/// noise while reading them back, and prints `echo: identical` when the
/// SHA-256 of what came back is that of what was sent.
#[test]
#[ignore = "run by the bulk tests inside a namespace"]
fn bulk_echo_client() {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Write};
    let spec = std::env::var("KILN_E2E_ECHO_CLIENT").expect("run by echo_sha256");
    let (addr, len) = spec.split_once(' ').unwrap();
    let len: usize = len.parse().unwrap();
    let start = Instant::now();
    let conn = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(c) => break c,
            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut hash = Sha256::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            for b in chunk.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n]).unwrap();
            hash.update(&chunk[..n]);
            left -= n;
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
        hash.finalize()
    });
    let mut reader = conn;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < len {
        let n = reader.read(&mut buf).expect("read the echo");
        assert!(n > 0, "the echo ended after {got} of {len} bytes");
        hash.update(&buf[..n]);
        got += n;
    }
    let sent = sender.join().unwrap();
    assert_eq!(hash.finalize(), sent, "the echoed stream differs");
    println!("echo: identical ({got} bytes)");
}

/// examples/bulk on a Solo5 target in a namespace: 16 MiB through its
/// echo port come back with the same SHA-256, with kiln's virtio-net
/// header (offloads: TSO and checksums by the host) and with the tender's
/// extensions hidden (plain 1500-byte frames, Solo5's ABI); while the
/// header is on, the tap's TCP segmentation offload is on.
fn bulk(target: Target) {
    let test = format!("bulk_on_{}_is_byte_identical", target.name());
    if !can_run(target, &test) || !can_use_namespaces(&test) {
        return;
    }
    if Command::new("ethtool").arg("--version").output().is_err() {
        skip(&test, "`ethtool` is not installed");
        return;
    }
    let tmp = temp_dir(&test);
    let dir = tmp.path().join("bulk");
    bulk_copy(&dir);
    build(&dir, target);
    let hide = match target {
        Target::Hvt => "KILN_HVT_NO_EXTENSIONS",
        Target::Spt => "KILN_SPT_NO_EXTENSIONS",
    };
    for (hidden, tso) in [(false, "on"), (true, "off")] {
        let ns = Netns::new(&format!("bulk-{}{}", target.name(), u8::from(hidden)));
        let log = dir.join(format!("bulk-{}-{hidden}.log", target.name()));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = ns.exec(env!("CARGO_BIN_EXE_kiln"));
        cmd.env("KILN_TARGET_DIR", shared_target_dir())
            .env("NO_COLOR", "1")
            .args(["run", "-t", target.name()])
            .arg(&dir)
            .args([
                "--",
                "--net:service=tap0",
                "--ipv4=10.0.0.2/24",
                "--no-slaac",
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        if hidden {
            cmd.env(hide, "1");
        }
        let mut server = ChildGuard(cmd.spawn().expect("start kiln run"));
        let result = echo_sha256(&ns, "10.0.0.2:5202", 16 << 20);
        let features = run_for(ns.exec("ethtool").args(["-k", "tap0"]), RUN_TIMEOUT);
        let _ = server.0.kill();
        let _ = server.0.wait();
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        if let Err(e) = result {
            panic!(
                "bulk on {} (hidden: {hidden}): {e}\n--- its output\n{output}",
                target.name()
            );
        }
        let features = text(&features.stdout);
        assert!(
            features.contains(&format!("tcp-segmentation-offload: {tso}")),
            "hidden: {hidden}: the tap's TSO is not {tso}:\n{features}"
        );
    }
}

#[test]
fn bulk_on_hvt_is_byte_identical_with_and_without_the_virtio_net_header() {
    bulk(Target::Hvt);
}

#[test]
fn bulk_on_spt_is_byte_identical_with_and_without_the_virtio_net_header() {
    bulk(Target::Spt);
}
