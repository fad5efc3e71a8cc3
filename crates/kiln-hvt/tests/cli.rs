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
    // solo5-hvt's --gdb-port and --no-net-ring, and how to listen elsewhere.
    for flag in [
        "--gdb-port=N",
        "--gdb=0.0.0.0:1234",
        "--no-net-ring",
        "--no-huge-pages",
    ] {
        assert!(help.stdout_str().contains(flag), "{flag}");
    }
    #[cfg(feature = "net")]
    assert!(help.stdout_str().contains("--net:NAME=IFACE"));
    #[cfg(feature = "block")]
    assert!(help.stdout_str().contains("--block:NAME=PATH"));
    #[cfg(not(feature = "block"))]
    assert!(help.stdout_str().contains("modules not built in: "));
}

/// `--no-huge-pages` is the tender's: the guest runs to its end and does
/// not get it on its command line (it would be refused as unknown).
#[test]
fn no_huge_pages_is_the_tenders_flag() {
    if !support::kvm_available() {
        return;
    }
    let dir = TempDir::new();
    let mut g = Guest::new();
    g.halt(5);
    let (run, _) = run_guest(&dir, &g, &["--no-huge-pages"]);
    assert_eq!(run.code, Some(5), "{}", run.stderr);
    let (run, _) = run_guest(&dir, &g, &["--no-huge-pages=1"]);
    assert_refused(&run, &["unknown flag --no-huge-pages=1"]);
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

/// solo5-hvt's `--gdb-port=N` (its gdb module): a port that is not one is
/// refused with solo5-hvt's message and exit status 1, before anything is
/// read (as a malformed `--gdb=ADDR:PORT` is, with or without the stub); a
/// tender built without the gdb stub names the missing module for a valid
/// one. Before, kiln-hvt refused every `--gdb-port` as an unknown flag.
#[test]
fn malformed_gdb_ports_are_refused_as_solo5_hvt_does() {
    for bad in ["x", "65536", "-1", "12ab", ""] {
        let flag = format!("--gdb-port={bad}");
        let run = run_hvt(&["--gdb", &flag, "/nonexistent/k.hvt"]);
        assert_refused(
            &run,
            &["Malformed argument to --gdb-port", "hint: --gdb-port=1234"],
        );
    }
    let run = run_hvt(&["--gdb-port=1234", "/nonexistent/k.hvt"]);
    if cfg!(feature = "gdb") {
        // The port alone turns nothing on: the run goes on to the image.
        assert_refused(&run, &["cannot read /nonexistent/k.hvt"]);
    } else {
        assert_refused(
            &run,
            &[
                "--gdb-port: this kiln-hvt was built without the gdb module",
                "--features gdb",
            ],
        );
    }
}

/// `kiln-hvt --gdb --gdb-port=N`, as solo5-hvt takes it: the stub waits on
/// port N (of 127.0.0.1, kiln's address), a debugger connecting there and
/// detaching lets the guest run to its end. scripts/test runs this file
/// with the gdb feature too.
#[cfg(feature = "gdb")]
#[test]
fn gdb_listens_on_the_port_of_gdb_port() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::time::{Duration, Instant};
    if !support::kvm_available() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir::new();
    let mut g = support::Guest::new();
    g.halt(7);
    let flag = format!("--gdb-port={port}");
    let mut child = kiln_testsupport::process::ChildGuard(
        g.launch(&dir, "guest.hvt", &["--gdb", &flag]).spawn(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.starts_with(&format!("kiln-hvt: waiting for gdb on 127.0.0.1:{port};")),
        "{line}"
    );
    let mut gdb = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    gdb.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The remote protocol's detach: the stub acknowledges and answers OK,
    // and the guest runs on alone.
    gdb.write_all(b"$D#44").unwrap();
    let mut reply = [0u8; 7];
    gdb.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+$OK#9a");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "kiln-hvt did not end");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(7), "{line}{rest}");
}
