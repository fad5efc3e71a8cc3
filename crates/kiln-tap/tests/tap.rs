//! kiln-tap against the host kernel, inside a network namespace of its own:
//! what each caller relies on (a missing interface refused or created,
//! offloads negotiated and a previous reader's offloads cleared, the MTU,
//! non-blocking and close-on-exec descriptors, the kernel's refusals).
//!
//! Needs root. The outer test creates the namespace and re-runs this test
//! binary inside it (`ip netns exec`) to run the inner half.

use std::io::{self, Read};
use std::process::Command;
use std::time::Duration;

use kiln_tap::{TCP_OFFLOADS, TapOptions};
use kiln_testsupport::netns::{self, ip};

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

    // A persistent tap keeps the offloads of a reader that did not clear
    // them (a killed one); the next plain open clears them.
    ip(&["tuntap", "add", "dev", "ktap0", "mode", "tap"]);
    let offloaded = kiln_tap::open("ktap0", UNIX).unwrap();
    assert!(offloaded.vnet_header);
    assert_eq!(tx_checksumming("ktap0"), "on");
    drop(offloaded);
    assert_eq!(tx_checksumming("ktap0"), "on");
    let plain = kiln_tap::open("ktap0", TENDER).unwrap();
    assert!(!plain.vnet_header);
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

    // Held by another descriptor: EBUSY, for both ways.
    for options in [TENDER, UNIX] {
        let err = kiln_tap::open("ktap0", options).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{options:?}: {err}");
    }
    drop(file);

    // An interface that is not a tap: EINVAL, and it is left alone.
    let err = kiln_tap::open("lo", TENDER).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
}
