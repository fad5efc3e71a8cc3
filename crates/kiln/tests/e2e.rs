//! End to end on unix: `kiln new` -> `configure` -> `build` -> `run`, the
//! generated `--help`, a rejected argument, exit statuses of a failing
//! unikernel, `describe` and `clean`, then the examples. All builds share
//! one `KILN_TARGET_DIR` so that dependencies compile once.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{ARGUMENT_ERROR, help_ok, kiln_in, ok, temp_dir, text};

#[test]
fn new_configure_build_run() {
    let tmp = temp_dir("e2e");
    let dir = tmp.path().join("greeter");

    ok(
        kiln_in(tmp.path())
            .args(["new", "greeter"])
            .output()
            .unwrap(),
        "kiln new",
    );
    for file in ["Cargo.toml", "unikernel.toml", "src/lib.rs"] {
        assert!(dir.join(file).is_file(), "kiln new did not write {file}");
    }

    let out = ok(
        kiln_in(&dir).arg("configure").output().unwrap(),
        "kiln configure",
    );
    assert!(
        text(&out.stderr).contains("configured greeter for unix"),
        "{}",
        text(&out.stderr)
    );
    assert!(dir.join("_build/unix/Cargo.toml").is_file());
    assert!(dir.join("_build/unix/src/main.rs").is_file());

    let started = Instant::now();
    let out = ok(kiln_in(&dir).arg("build").output().unwrap(), "kiln build");
    eprintln!("kiln build (first) took {:?}", started.elapsed());
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("warning:"),
        "the generated crate has warnings:\n{stderr}"
    );
    let image = dir.join("dist/greeter.unix");
    assert!(image.is_file(), "no image at {}", image.display());

    // Run: two hellos on stdout, exit 0.
    let out = ok(
        kiln_in(tmp.path())
            .args(["run", "greeter", "--", "--times", "2"])
            .output()
            .unwrap(),
        "kiln run",
    );
    assert_eq!(text(&out.stdout), "hello\nhello\n");

    // The image itself: --help lists the argument with its doc and default.
    let out = help_ok(
        Command::new(&image).arg("--help").output().unwrap(),
        "--help",
    );
    let help = text(&out.stdout);
    assert!(help.contains("greeter: Says hello a few times"), "{help}");
    assert!(help.contains("--times <u32>"), "{help}");
    assert!(
        help.contains("How many times to say hello [default: 4]"),
        "{help}"
    );

    // A wrong argument type: one clear line, exit 64 (MirageOS's argument
    // error), nothing on stdout.
    let out = Command::new(&image).arg("--times=four").output().unwrap();
    assert_eq!(out.status.code(), Some(ARGUMENT_ERROR));
    assert_eq!(
        text(&out.stderr),
        "error: invalid value 'four' for --times: expected an unsigned integer (u32)\n"
    );
    assert!(out.stdout.is_empty());
    let out = Command::new(&image).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(ARGUMENT_ERROR));
    assert!(text(&out.stderr).starts_with("error: unknown argument '--bogus'"));

    // Edit the app into one that fails: `run` rebuilds, and the status
    // propagates through kiln.
    std::fs::write(
        dir.join("unikernel.toml"),
        "[unikernel]\nname = \"greeter\"\nentry = \"start\"\n\n[devices.console]\ntype = \"console\"\n\n\
         [arguments.code]\ntype = \"u8\"\ndoc = \"Exit code; 0 fails with a message\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/lib.rs"),
        "#![no_std]\nuse kiln_devices::Console;\n\n\
         pub async fn start(console: impl Console, code: u8) -> Result<u8, &'static str> {\n\
         \x20   let _ = console.log(\"failing\");\n\
         \x20   if code == 0 { Err(\"asked to fail\") } else { Ok(code) }\n}\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = kiln_in(&dir)
        .args(["run", "--", "--code", "7"])
        .output()
        .unwrap();
    eprintln!("kiln run after an edit took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "failing\n");
    let out = kiln_in(&dir)
        .args(["run", "--", "--code=0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).ends_with("error: asked to fail\n"),
        "{}",
        text(&out.stderr)
    );
    let out = kiln_in(&dir).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(ARGUMENT_ERROR));
    assert!(
        text(&out.stderr).ends_with(
            "error: missing required argument --code <u8> (Exit code; 0 fails with a message)\n"
        ),
        "{}",
        text(&out.stderr)
    );

    // describe on stdout.
    let out = ok(kiln_in(&dir).arg("describe").output().unwrap(), "describe");
    assert_eq!(
        text(&out.stdout),
        "unikernel greeter (target unix)\nentry: start\ndevices:\n  console  console\narguments:\n  --code <u8>, required: Exit code; 0 fails with a message\n"
    );

    // clean removes what kiln made.
    ok(kiln_in(&dir).arg("clean").output().unwrap(), "clean");
    assert!(!dir.join("_build").exists());
    assert!(!dir.join("dist").exists());
    assert!(dir.join("src/lib.rs").exists());
}

#[test]
fn examples_run() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let out = ok(
        kiln_in(&examples)
            .args(["run", "hello", "--", "--times=1"])
            .output()
            .unwrap(),
        "hello",
    );
    assert_eq!(text(&out.stdout), "hello\n");

    let out = ok(
        kiln_in(&examples)
            .args(["run", "clock", "--", "--rolls", "5"])
            .output()
            .unwrap(),
        "clock",
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    assert!(
        lines[0].starts_with("monotonic: ") && lines[0].ends_with(" ns"),
        "{stdout}"
    );
    // The wall clock is a plausible RFC 3339 time after 2020.
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
    let out = Command::new(examples.join("clock/dist/clock.unix"))
        .arg("--rolls=256")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(ARGUMENT_ERROR));
    assert!(text(&out.stderr).contains("expected an unsigned integer (u8, at most 255)"));
}

const DEVICES_TOML: &str = r#"[unikernel]
name = "devices"
entry = "start"
doc = "Touches every device kiln provides on unix"

[devices.console]
type = "console"
[devices.clock]
type = "clock"
[devices.wall]
type = "wall_clock"
[devices.sleep]
type = "sleep"
[devices.random]
type = "random"
[devices.disk]
type = "block"
[devices.stack]
type = "stack"
[devices.service]
type = "net"

[arguments.greeting]
type = "string"
default = "hi there"
[arguments.peer]
type = "ip"
default = "127.0.0.1"
[arguments.verbose]
type = "bool"
default = false
[arguments.offset]
type = "i64"
"#;

const DEVICES_RS: &str = r#"#![no_std]
extern crate alloc;
use alloc::string::String;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use kiln_devices::*;

pub async fn start(
    console: impl Console,
    clock: impl MonotonicClock,
    wall: impl WallClock,
    sleep: impl Sleep,
    random: impl Random,
    disk: impl Block,
    stack: impl Stack,
    greeting: String,
    peer: IpAddr,
    verbose: bool,
    offset: i64,
) -> Result<(), StackError> {
    let before = clock.now();
    sleep.sleep(Duration::from_millis(20)).await;
    let slept = clock.now() - before;
    let info = disk.info();
    let mut sector = alloc::vec![0u8; info.sector_size as usize];
    let read = disk.read(0, &mut sector).await.is_ok();
    let socket = stack.bind_udp(SocketAddr::new(peer, 0)).await?;
    let _ = console.print(format_args!(
        "greeting={greeting} peer={peer} verbose={verbose} offset={offset}\n\
         slept>=20ms={} wall>2020={} random={}\n\
         disk sectors={} sector_size={} read={read} first={}\n\
         udp bound={}\n",
        slept >= Duration::from_millis(20),
        wall.now().as_unix_secs() > 1_577_836_800,
        random.next_u64().is_ok(),
        info.sectors,
        info.sector_size,
        sector[0],
        socket.local_addr().ip(),
    ));
    Ok(())
}
"#;

#[test]
fn every_unix_device() {
    let tmp = temp_dir("devices");
    let dir = tmp.path().join("devices");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let devices = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-devices");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"devices\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\nkiln-devices = {{ path = {:?} }}\n\n[workspace]\n",
            devices.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("unikernel.toml"), DEVICES_TOML).unwrap();
    std::fs::write(dir.join("src/lib.rs"), DEVICES_RS).unwrap();
    let disk = tmp.path().join("disk.img");
    let mut image = vec![0u8; 4096 * 2];
    image[0] = 42;
    std::fs::write(&disk, image).unwrap();

    let out = ok(
        kiln_in(&dir).arg("build").output().unwrap(),
        "build devices",
    );
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("warning:"),
        "the generated crate has warnings:\n{stderr}"
    );
    let bin = dir.join("dist/devices.unix");

    let out = ok(
        Command::new(&bin)
            .arg(format!("--block:disk={}", disk.display()))
            .args([
                "--block-sector-size:disk=4096",
                "--offset",
                "-3",
                "--verbose",
                "--peer=::1",
            ])
            .output()
            .unwrap(),
        "devices",
    );
    assert_eq!(
        text(&out.stdout),
        "greeting=hi there peer=::1 verbose=true offset=-3\n\
         slept>=20ms=true wall>2020=true random=true\n\
         disk sectors=2 sector_size=4096 read=true first=42\n\
         udp bound=::1\n"
    );

    // Device flags are checked like arguments.
    let out = Command::new(&bin).arg("--offset=1").output().unwrap();
    assert_eq!(out.status.code(), Some(ARGUMENT_ERROR));
    assert_eq!(
        text(&out.stderr),
        "error: the block device 'disk' is not attached; hint: give --block:disk=PATH\n"
    );
    // A host resource that cannot be attached: exit 1, naming the device.
    let out = Command::new(&bin)
        .args(["--offset=1", "--block:disk=/nonexistent/kiln.img"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("disk"), "{}", text(&out.stderr));
    // The net device under a socket stack is not constructed: no --net.
    let out = help_ok(Command::new(&bin).arg("--help").output().unwrap(), "--help");
    let help = text(&out.stdout);
    assert!(help.contains("--block:disk=PATH"), "{help}");
    assert!(!help.contains("--net:service"), "{help}");
    assert!(help.contains("--greeting <string>"), "{help}");
    assert!(help.contains("[default: \"hi there\"]"), "{help}");
    assert!(help.contains("--offset <i64>"), "{help}");

    // With the net device as a parameter, it is a tap attached by --net.
    std::fs::write(
        dir.join("src/lib.rs"),
        DEVICES_RS.replace(
            "stack: impl Stack,",
            "stack: impl Stack, service: impl NetworkInterface,",
        ),
    )
    .unwrap();
    ok(
        kiln_in(&dir).arg("build").output().unwrap(),
        "build devices with a tap",
    );
    let out = Command::new(&bin)
        .args(["--offset=1", &format!("--block:disk={}", disk.display())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(ARGUMENT_ERROR));
    assert_eq!(
        text(&out.stderr),
        "error: the net device 'service' is not attached; hint: give --net:service=IFACE\n"
    );
}

/// A baked kv_ro: the files of the source directory are compiled in, and a
/// file edited after a build is picked up by the next one.
#[test]
fn baked_kv_ro() {
    let tmp = temp_dir("baked");
    let dir = tmp.path().join("store");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("files/docs")).unwrap();
    std::fs::write(dir.join("files/index.html"), "<h1>hi</h1>\n").unwrap();
    std::fs::write(dir.join("files/docs/a.txt"), "first\n").unwrap();
    let devices = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-devices");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"store\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\nkiln-devices = {{ path = {:?} }}\n\n[workspace]\n",
            devices.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("unikernel.toml"),
        "[unikernel]\nname = \"store\"\nentry = \"start\"\n\n[devices.console]\ntype = \"console\"\n\n\
         [devices.files]\ntype = \"kv_ro\"\nsource = \"files\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/lib.rs"),
        "#![no_std]\nuse kiln_devices::{Console, KvError, KvRo};\n\n\
         pub async fn start(console: impl Console, files: impl KvRo) -> Result<(), KvError> {\n\
         \x20   for (name, kind) in files.list(\"\").await? {\n\
         \x20       let _ = console.print(format_args!(\"{name} {kind:?}\\n\"));\n\
         \x20   }\n\
         \x20   let a = files.get(\"docs/a.txt\").await?;\n\
         \x20   let _ = console.write(&a);\n\
         \x20   let _ = console.print(format_args!(\"{}\\n\", files.digest(\"index.html\").await?));\n\
         \x20   files.get(\"missing\").await.map(|_| ())\n}\n",
    )
    .unwrap();

    let out = kiln_in(&dir).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..3],
        ["docs Dictionary", "index.html Value", "first"],
        "{stdout}"
    );
    // sha256("<h1>hi</h1>\n")
    let digest = sha256_hex(b"<h1>hi</h1>\n");
    assert_eq!(lines.get(3).copied(), Some(digest.as_str()), "{stdout}");
    assert!(
        text(&out.stderr).contains("error: "),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(dir.join("files/docs/a.txt"), "second\n").unwrap();
    let out = kiln_in(&dir).arg("run").output().unwrap();
    assert!(
        text(&out.stdout).contains("second\n"),
        "{}",
        text(&out.stdout)
    );
}

/// The SHA-256 of `data` in hex, computed by `sha256sum` so that the test
/// does not trust the code under test.
fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils) is needed by this test");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Stores on block devices: a kv_rw log whose writes survive a restart, and
/// a disk kv_ro reading a tar archive made by `tar`; the block devices are
/// shared with the stores and the entry function.
#[test]
fn block_stores() {
    let tmp = temp_dir("stores");
    let dir = tmp.path().join("notes");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(tmp.path().join("files")).unwrap();
    std::fs::write(tmp.path().join("files/hello.txt"), "from tar\n").unwrap();
    let tar = tmp.path().join("docs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(tmp.path().join("files"))
        .arg("-cf")
        .arg(&tar)
        .arg("hello.txt")
        .status()
        .expect("tar is needed by this test");
    assert!(status.success());
    let data = tmp.path().join("data.img");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();

    let devices = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-devices");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"notes\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\nkiln-devices = {{ path = {:?} }}\n\n[workspace]\n",
            devices.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("unikernel.toml"),
        r#"[unikernel]
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

[arguments.key]
type = "string"
[arguments.value]
type = "string"
default = ""
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("src/lib.rs"),
        r#"#![no_std]
extern crate alloc;
use alloc::string::String;
use kiln_devices::{Block, Console, KvError, KvRo, KvRw};

pub async fn start(
    console: impl Console,
    data: impl Block,
    notes: impl KvRw,
    docs: impl KvRo,
    key: String,
    value: String,
) -> Result<(), KvError> {
    if !value.is_empty() {
        notes.set(&key, value.as_bytes()).await?;
    }
    let stored = notes.get(&key).await?;
    let doc = docs.get("hello.txt").await?;
    let _ = console.print(format_args!(
        "{key}={} sectors={} doc={}",
        core::str::from_utf8(&stored).unwrap_or("?"),
        data.info().sectors,
        core::str::from_utf8(&doc).unwrap_or("?"),
    ));
    Ok(())
}
"#,
    )
    .unwrap();

    let flags = [
        format!("--block:data={}", data.display()),
        format!("--block:disk={}", tar.display()),
    ];
    let out = kiln_in(&dir)
        .args(["run", "--"])
        .args(&flags)
        .args(["--key=greeting", "--value=persisted"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "greeting=persisted sectors=2048 doc=from tar\n"
    );

    // A second run reads what the first wrote.
    let out = kiln_in(&dir)
        .args(["run", "--"])
        .args(&flags)
        .arg("--key=greeting")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "greeting=persisted sectors=2048 doc=from tar\n"
    );

    // A key that was never set: the store's error, exit 1.
    let out = kiln_in(&dir)
        .args(["run", "--"])
        .args(&flags)
        .arg("--key=other")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: "),
        "{}",
        text(&out.stderr)
    );
}
