//! kiln-tap against the host kernel, inside a network namespace of its own:
//! what each caller relies on (a missing interface refused or created,
//! offloads negotiated and a previous reader's offloads cleared, cleared
//! too when the opener is killed with SIGKILL (its guard), the MTU,
//! non-blocking and close-on-exec descriptors, the kernel's refusals).
//!
//! Needs root. The outer test creates the namespace and re-runs this test
//! binary inside it (`ip netns exec`) to run the inner half.

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_tap::{TCP_OFFLOADS, TapOptions};
use kiln_testsupport::netns::{self, ip};
use kiln_testsupport::process::{self, ChildGuard};

#[test]
fn taps_open_as_each_caller_needs() {
    netns::test_inside(
        "taps_open_as_each_caller_needs",
        &[("ethtool", "--version", "ethtool")],
        "tap-open",
        "inside_a_namespace",
        Duration::from_secs(60),
    );
}

/// `tx-checksumming` of `ifname` as `ethtool -k` reports it: whether the
/// kernel may send the tap's reader frames with partial checksums.
fn tx_checksumming(ifname: &str) -> String {
    netns::offload(ifname, "tx-checksumming")
}

fn exists(ifname: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", ifname])
        .output()
        .is_ok_and(|o| o.status.success())
}

const TENDER: TapOptions = TapOptions {
    create: false,
    offloads: 0,
};

const UNIX: TapOptions = TapOptions {
    create: true,
    offloads: TCP_OFFLOADS,
};

#[test]
#[ignore = "run by taps_open_as_each_caller_needs inside a network namespace"]
fn inside_a_namespace() {
    netns::inside().expect("run by taps_open_as_each_caller_needs");

    // The tenders' way: a missing interface is ENODEV, and not created.
    let err = kiln_tap::open("ktap-none", TENDER).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
    assert!(!exists("ktap-none"), "ktap-none was created");

    // The unix platform's way: created, and gone with its descriptor.
    let created = kiln_tap::open("ktap-new", UNIX).unwrap();
    assert!(created.vnet_header, "offloads refused");
    assert!(exists("ktap-new"));
    drop(created);
    assert!(!exists("ktap-new"), "ktap-new outlived its descriptor");

    // A tap opened with offloads comes with its guard; closing it (the
    // guard stopped with it) clears them and frees the tap.
    ip(&["tuntap", "add", "dev", "ktap0", "mode", "tap"]);
    let offloaded = kiln_tap::open("ktap0", UNIX).unwrap();
    assert!(offloaded.vnet_header);
    assert!(offloaded.guard.is_some(), "offloads without a guard");
    assert_eq!(tx_checksumming("ktap0"), "on");
    drop(offloaded);
    assert_eq!(tx_checksumming("ktap0"), "off");

    // A persistent tap keeps the offloads of a reader that did not clear
    // them (killed together with its guard); the next plain open clears
    // them.
    let offloaded = kiln_tap::open("ktap0", UNIX).unwrap();
    let guard = offloaded.guard.expect("a guard").into_raw();
    process::signal(guard.pid as u32, libc::SIGKILL);
    kiln_tap::reap(guard.pid);
    kiln_tap::stop_raw(guard.alive, guard.done);
    drop(offloaded.fd);
    assert_eq!(tx_checksumming("ktap0"), "on");
    let plain = kiln_tap::open("ktap0", TENDER).unwrap();
    assert!(!plain.vnet_header);
    assert!(plain.guard.is_none());
    assert_eq!(tx_checksumming("ktap0"), "off");

    // Non-blocking (a down tap has nothing to read) and close-on-exec.
    let mut file = std::fs::File::from(plain.fd);
    let mut buf = [0u8; 1514];
    let err = file.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    assert!(
        rustix::io::fcntl_getfd(&file)
            .unwrap()
            .contains(rustix::io::FdFlags::CLOEXEC)
    );

    // The MTU is the interface's, asked through the descriptor.
    use std::os::fd::AsFd;
    assert_eq!(kiln_tap::mtu(file.as_fd()).unwrap(), 1500);
    ip(&["link", "set", "ktap0", "mtu", "9000"]);
    assert_eq!(kiln_tap::mtu(file.as_fd()).unwrap(), 9000);

    // Held by another descriptor: EBUSY, for both ways, once open has
    // waited for it to be let go.
    for options in [TENDER, UNIX] {
        let err = kiln_tap::open("ktap0", options).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{options:?}: {err}");
    }
    drop(file);

    // Held for a moment, as a killed reader's guard holds it while it
    // clears up: open waits until it is let go.
    let held = kiln_tap::open("ktap0", TENDER).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
    });
    let plain = kiln_tap::open("ktap0", TENDER).expect("open waits for the tap to be let go");
    release.join().expect("the holder");
    drop(plain);

    // An interface that is not a tap: EINVAL, and it is left alone.
    let err = kiln_tap::open("lo", TENDER).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");

    // An opener killed with SIGKILL: its guard clears the offloads once
    // the opener is gone, and lets go of the tap.
    let exe = std::env::current_exe().expect("the test binary");
    let mut holder = ChildGuard(
        Command::new(exe)
            .args(["--exact", "hold_ktap0_with_offloads", "--ignored"])
            .arg("--nocapture")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the holder"),
    );
    let out = BufReader::new(holder.0.stdout.take().expect("stdout"));
    let opened = out
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "ktap0 open");
    assert!(opened, "the holder did not open ktap0");
    assert_eq!(tx_checksumming("ktap0"), "on");
    let guards = process::children(holder.0.id());
    assert_eq!(guards.len(), 1, "one guard: {guards:?}");
    process::signal(holder.0.id(), libc::SIGKILL);
    holder.0.wait().expect("wait for the holder");
    assert!(
        process::ended(guards[0], Duration::from_secs(30)),
        "the guard outlived its opener by 30 s"
    );
    assert_eq!(
        tx_checksumming("ktap0"),
        "off",
        "a SIGKILLed opener left the offloads on"
    );
    let plain = kiln_tap::open("ktap0", TENDER).expect("the tap is free");
    drop(plain);
}

/// Opens `ktap0` with offloads, says `ktap0 open` and waits to be killed
/// (at most a minute); run by `inside_a_namespace`.
#[test]
#[ignore = "run by inside_a_namespace"]
fn hold_ktap0_with_offloads() {
    netns::inside().expect("run by inside_a_namespace");
    let tap = kiln_tap::open("ktap0", UNIX).unwrap();
    assert!(tap.vnet_header);
    println!("ktap0 open");
    std::thread::sleep(Duration::from_secs(60));
    drop(tap);
}
