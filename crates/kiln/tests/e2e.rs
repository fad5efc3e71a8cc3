//! End to end on unix: `kiln new` -> `configure` -> `build` -> `run`, the
//! generated `--help`, a rejected argument, exit statuses of a failing
//! unikernel, `describe` and `clean`, then the examples. All builds share
//! one `KILN_TARGET_DIR` so that dependencies compile once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{TempDir, kiln};

/// The cargo target directory shared by every unikernel built here.
fn shared_target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-e2e-target")
}

fn kiln_in(dir: &Path) -> Command {
    let mut cmd = kiln();
    cmd.env("KILN_TARGET_DIR", shared_target_dir())
        .current_dir(dir);
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(output: Output, what: &str) -> Output {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{what} failed\n--- stdout\n{}\n--- stderr\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

#[test]
fn new_configure_build_run() {
    let tmp = TempDir::new("e2e");
    let dir = tmp.path.join("greeter");

    ok(
        kiln_in(&tmp.path)
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
        kiln_in(&tmp.path)
            .args(["run", "greeter", "--", "--times", "2"])
            .output()
            .unwrap(),
        "kiln run",
    );
    assert_eq!(text(&out.stdout), "hello\nhello\n");

    // The image itself: --help lists the argument with its doc and default.
    let out = ok(
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

    // A wrong argument type: one clear line, exit 2, nothing on stdout.
    let out = Command::new(&image).arg("--times=four").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: invalid value 'four' for --times: expected an unsigned integer (u32)\n"
    );
    assert!(out.stdout.is_empty());
    let out = Command::new(&image).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
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
    assert_eq!(out.status.code(), Some(2));
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
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("expected an unsigned integer (u8, at most 255)"));
}
