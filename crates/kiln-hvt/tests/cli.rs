//! The `kiln-hvt` command line: its own flags and errors, and the device
//! flags against the image's manifest (missing, undeclared, for a module
//! that is compiled out). scripts/test also runs this file without the
//! default features.

mod support;

use kiln_abi::MftEntry;
use support::{Guest, TempDir, assert_refused, run_guest, run_hvt};

#[test]
fn cli_errors() {
    let run = run_hvt::<&str>(&[]);
    assert_refused(&run, &["no KERNEL given"]);
    let run = run_hvt(&["--bogus", "k"]);
    assert_refused(&run, &["unknown flag --bogus", "hint: see kiln-hvt --help"]);
    let run = run_hvt(&["/nonexistent/k.hvt"]);
    assert_refused(&run, &["cannot read /nonexistent/k.hvt", "No such file"]);
    let help = run_hvt(&["--help"]);
    assert_eq!(help.code, Some(0));
    assert!(help.stdout_str().contains("--mem=MB"));
    #[cfg(feature = "net")]
    assert!(help.stdout_str().contains("--net:NAME=IFACE"));
    #[cfg(feature = "block")]
    assert!(help.stdout_str().contains("--block:NAME=PATH"));
    #[cfg(not(feature = "block"))]
    assert!(help.stdout_str().contains("modules not built in: "));
}

#[cfg(all(feature = "net", feature = "block"))]
#[test]
fn missing_device_flags_are_refused() {
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::net("service"), MftEntry::block("disk")]);
    g.halt(0);
    let disk = dir.write("d.img", &[0u8; 512]);
    let flag = format!("--block:disk={}", disk.display());
    let (run, _) = run_guest(&dir, &g, &[&flag]);
    assert_refused(
        &run,
        &[
            "device 'service' (NET_BASIC) is declared by the image but not attached",
            "hint: add --net:service=TAP",
        ],
    );
}

/// With `--help` among the unikernel's arguments, devices without a flag
/// stay unattached so that the unikernel can print its usage; every other
/// check still applies.
#[cfg(all(feature = "net", feature = "block"))]
#[test]
fn help_runs_without_device_flags() {
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::net("service"), MftEntry::block("disk")]);
    g.halt(0);
    let path = dir.write("guest.hvt", &g.build());
    let run = run_hvt(&[
        support::path_str(&path),
        "--port=80".into(),
        "--help".into(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // A flag for a device the image does not declare is still refused.
    let run = run_hvt(&[
        "--net:nope=tap0".into(),
        support::path_str(&path),
        "--help".into(),
    ]);
    assert_refused(&run, &["declares no NET_BASIC device named 'nope'"]);
    // Without --help the missing flags are refused, as before.
    let run = run_hvt(&[support::path_str(&path), "--port=80".into()]);
    assert_refused(&run, &["is declared by the image but not attached"]);
}

#[cfg(all(feature = "net", feature = "block"))]
#[test]
fn flags_for_undeclared_devices_are_refused() {
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::block("disk")]);
    g.halt(0);
    let (run, path) = run_guest(&dir, &g, &["--net:nope=tap0"]);
    assert_refused(
        &run,
        &[
            "--net:nope=tap0:",
            &format!(
                "{} declares no NET_BASIC device named 'nope'",
                path.display()
            ),
            "the image declares 'disk' (BLOCK_BASIC)",
        ],
    );
    // Right name, wrong type.
    let (run, _) = run_guest(&dir, &g, &["--net:disk=tap0"]);
    assert_refused(&run, &["declares no NET_BASIC device named 'disk'"]);
}

#[cfg(not(feature = "net"))]
#[test]
fn manifest_needing_a_compiled_out_module_is_refused() {
    let dir = TempDir::new();
    let mut g = Guest::with_devices([MftEntry::net("service")]);
    g.halt(0);
    let (run, _) = run_guest(&dir, &g, &[]);
    assert_refused(
        &run,
        &[
            "device 'service' (NET_BASIC) needs the net module",
            "hint: build kiln-hvt with --features net",
        ],
    );
    let (run, _) = run_guest(&dir, &g, &["--net:service=tap0"]);
    assert_refused(
        &run,
        &["--net:service=tap0: this kiln-hvt was built without the net module"],
    );
}
