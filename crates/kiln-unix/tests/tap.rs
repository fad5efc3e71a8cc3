//! The tap interface against the host kernel, inside a network namespace of
//! its own: the kernel's ARP request reaches `Tap::poll_receive`, our ARP
//! reply is accepted, and the datagram the kernel was holding then arrives.
//!
//! Needs root. The outer test creates the namespace and re-runs this test
//! binary inside it (`ip netns exec`) to run the inner half.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use kiln_devices::{MacAddress, NetError, NetworkInterface};
use kiln_rt::{block_on, timeout};
use kiln_testsupport::netns::{self, ip};
use kiln_testsupport::process::rerun_as_nobody;
use kiln_testsupport::skip::is_root;
use kiln_unix::{Tap, TapOptions, platform};

const IFNAME: &str = "kiln0";
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const GUEST_MAC: MacAddress = MacAddress([0x02, 0x6b, 0x69, 0x6c, 0x6e, 0x01]);

#[test]
fn tap_exchanges_frames_with_the_kernel() {
    netns::test_inside(
        "tap_exchanges_frames_with_the_kernel",
        &[("ethtool", "--version", "ethtool")],
        "unix-tap",
        "inside_a_namespace",
        Duration::from_secs(60),
    );
}

/// The fields of an Ethernet frame carrying ARP for IPv4 over Ethernet.
#[derive(Debug, PartialEq)]
struct Arp {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    op: u16,
    sender_mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
}

fn mac_at(frame: &[u8], at: usize) -> Option<[u8; 6]> {
    frame.get(at..at + 6)?.try_into().ok()
}

fn ip_at(frame: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b: [u8; 4] = frame.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn u16_at(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?))
}

impl Arp {
    fn parse(frame: &[u8]) -> Option<Arp> {
        // EtherType ARP; hardware Ethernet, protocol IPv4, lengths 6 and 4.
        if u16_at(frame, 12)? != 0x0806 || frame.get(14..20)? != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        Some(Arp {
            eth_dst: mac_at(frame, 0)?,
            eth_src: mac_at(frame, 6)?,
            op: u16_at(frame, 20)?,
            sender_mac: mac_at(frame, 22)?,
            sender_ip: ip_at(frame, 28)?,
            target_mac: mac_at(frame, 32)?,
            target_ip: ip_at(frame, 38)?,
        })
    }

    fn emit(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(42);
        f.extend_from_slice(&self.eth_dst);
        f.extend_from_slice(&self.eth_src);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4]);
        f.extend_from_slice(&self.op.to_be_bytes());
        f.extend_from_slice(&self.sender_mac);
        f.extend_from_slice(&self.sender_ip.octets());
        f.extend_from_slice(&self.target_mac);
        f.extend_from_slice(&self.target_ip.octets());
        f
    }
}

/// The UDP payload of an IPv4 frame to `mac`, port `port`.
fn udp_payload(frame: &[u8], mac: [u8; 6], port: u16) -> Option<&[u8]> {
    if mac_at(frame, 0)? != mac || u16_at(frame, 12)? != 0x0800 || *frame.get(23)? != 17 {
        return None;
    }
    let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
    let udp = 14 + ihl;
    if u16_at(frame, udp + 2)? != port {
        return None;
    }
    let len = usize::from(u16_at(frame, udp + 4)?);
    frame.get(udp + 8..udp + len)
}

/// `tx-checksumming` of `ifname` as `ethtool -k` reports it: whether the
/// kernel may send it frames with partial checksums.
fn tx_checksumming(ifname: &str) -> String {
    netns::offload(ifname, "tx-checksumming")
}

/// Receives frames until `want` accepts one, at most 100 frames.
async fn receive_until<T>(tap: &Tap, mut want: impl FnMut(&[u8]) -> Option<T>) -> T {
    let mut buf = vec![0u8; 1514];
    for _ in 0..100 {
        let n = tap.receive(&mut buf).await.expect("receive");
        if let Some(found) = want(&buf[..n]) {
            return found;
        }
    }
    panic!("100 frames received without the one expected");
}

#[test]
#[ignore = "run by tap_exchanges_frames_with_the_kernel inside a network namespace"]
fn inside_a_namespace() {
    netns::inside().expect("run by tap_exchanges_frames_with_the_kernel");

    let result = block_on(
        platform(),
        timeout(Duration::from_secs(20), async {
            // Plain frames: no virtio-net header in front.
            let plain = TapOptions { offloads: false };
            let tap =
                Tap::open_with(platform(), "service", IFNAME, Some(GUEST_MAC), plain).unwrap();
            assert!(!tap.vnet_header());
            assert_eq!(tap.mac(), GUEST_MAC);
            assert_eq!(tap.mtu(), 1500);
            netns::address(IFNAME, "10.77.0.1/24", None);
            let host_mac =
                std::fs::read_to_string(format!("/sys/class/net/{IFNAME}/address")).unwrap();
            let host_mac = MacAddress::parse(host_mac.trim()).unwrap().0;

            // The kernel must resolve 10.77.0.2 before it sends this.
            let udp = UdpSocket::bind((HOST_IP, 0)).unwrap();
            udp.send_to(b"kiln", (GUEST_IP, 9)).unwrap();

            let request = receive_until(&tap, |f| {
                Arp::parse(f).filter(|a| a.op == 1 && a.target_ip == GUEST_IP)
            })
            .await;
            assert_eq!(request.eth_dst, [0xff; 6]);
            assert_eq!(request.eth_src, host_mac);
            assert_eq!((request.sender_mac, request.sender_ip), (host_mac, HOST_IP));

            let reply = Arp {
                eth_dst: host_mac,
                eth_src: GUEST_MAC.0,
                op: 2,
                sender_mac: GUEST_MAC.0,
                sender_ip: GUEST_IP,
                target_mac: host_mac,
                target_ip: HOST_IP,
            };
            tap.send(&reply.emit()).await.expect("send the ARP reply");

            // The kernel took the reply: the held datagram comes to our MAC.
            let payload =
                receive_until(&tap, |f| udp_payload(f, GUEST_MAC.0, 9).map(<[u8]>::to_vec)).await;
            assert_eq!(payload, b"kiln");
            let neigh = ip(&["neigh", "show", "10.77.0.2", "dev", IFNAME]);
            assert!(neigh.contains(&GUEST_MAC.to_string()), "{neigh}");

            // Limits are typed errors.
            assert_eq!(
                tap.send(&[0u8; 1515]).await,
                Err(NetError::FrameTooLarge {
                    len: 1515,
                    max: 1514
                })
            );
            let mut small = [0u8; 1500];
            assert_eq!(
                tap.receive(&mut small).await,
                Err(NetError::BufferTooSmall {
                    len: 1500,
                    needed: 1514
                })
            );

            // The MTU is the interface's: a tap set to 9000 is read as 9000.
            ip(&["tuntap", "add", "dev", "kiln9k", "mode", "tap"]);
            ip(&["link", "set", "kiln9k", "mtu", "9000"]);
            // By default the offloads are negotiated: frames then carry a
            // virtio-net header and may be 64 KiB long.
            let offloads = Tap::open(platform(), "offloads", "kiln9k", None).unwrap();
            assert!(offloads.vnet_header());
            assert_eq!(tx_checksumming("kiln9k"), "on");
            // Closed, it leaves the tap plain for the next reader (a Solo5
            // tender cannot read partial checksums).
            drop(offloads);
            assert_eq!(tx_checksumming("kiln9k"), "off");
            let jumbo = Tap::open_with(platform(), "jumbo", "kiln9k", None, plain).unwrap();
            assert_eq!(jumbo.mtu(), 9000);
            assert_eq!(
                jumbo.send(&[0u8; 9015]).await,
                Err(NetError::FrameTooLarge {
                    len: 9015,
                    max: 9014
                })
            );
            drop(jumbo);

            // A tap that another open file holds cannot be attached twice.
            let err = Tap::open(platform(), "second", IFNAME, None).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("cannot attach net device `second` to tap `kiln0`: "),
                "{err}"
            );
        }),
    );
    result.expect("the tap exchange timed out");
}

/// Checks the error of attaching without the right to.
fn check_refused() {
    let err = Tap::open(platform(), "service", "kiln-noperm", None).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("cannot attach net device `service` to tap `kiln-noperm`: ")
            && (message.contains("(os error 1)") || message.contains("(os error 13)"))
            && message.contains("\nhint: run as root"),
        "{message}"
    );
}

#[test]
fn attaching_without_permission_names_the_device_and_the_tap() {
    if !is_root() {
        return check_refused();
    }
    // Root may open any tap: check as `nobody` instead. Opening fails before
    // anything is created, so no namespace is needed.
    let status = rerun_as_nobody(
        "refused_as_another_user",
        &[("KILN_UNIX_TAP_REFUSED", "1".as_ref())],
    );
    assert!(status.success(), "the check as nobody failed: {status}");
}

#[test]
#[ignore = "run by attaching_without_permission_names_the_device_and_the_tap as another user"]
fn refused_as_another_user() {
    assert!(
        std::env::var_os("KILN_UNIX_TAP_REFUSED").is_some(),
        "run by attaching_without_permission_names_the_device_and_the_tap"
    );
    check_refused();
}
