//! Hostile traffic against one stack, in virtual time: half-open
//! connections that are never answered, SYN floods, the connection limit,
//! IPv6 bursts. Stack A (MAC 1, 10.0.0.1, fd00::1) is attacked; stack B
//! (MAC 2, 10.0.0.2) is its honest client on the same wire, and the test
//! also writes raw frames from B's side.

use std::cell::{Cell, RefCell};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use kiln_devices::{
    Instant, MacAddress, NetError, NetworkInterface, Stack, StackError, TcpListener as _,
    TcpStream as _,
};
use kiln_net::pair::{PairEnd, pair};
use kiln_net::smoltcp::phy::ChecksumCapabilities;
use kiln_net::smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6Packet, Icmpv6Repr,
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags,
    NdiscPrefixInfoFlags, NdiscPrefixInformation, NdiscRepr, NdiscRouterFlags, RawHardwareAddress,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};
use kiln_net::{Config, NetStack};
use kiln_rt::{Platform, block_on, spawn, timeout};
use kiln_testsupport::platform::run_virtual as run;

fn mac(n: u8) -> MacAddress {
    MacAddress([0x02, 0, 0, 0, 0, n])
}

/// Counts the times the executor blocks and the deadlines it blocks
/// with; time is virtual.
#[derive(Default)]
struct Probe {
    now: Cell<u64>,
    waits: RefCell<Vec<Option<Instant>>>,
}

impl Platform for Probe {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.now.get())
    }
    fn wait(&self, deadline: Option<Instant>) {
        self.waits.borrow_mut().push(deadline);
        // A spinning driver never blocks with a later deadline: advance a
        // little each time so that the test ends.
        let d = deadline.expect("the test's own sleep is always pending");
        self.now
            .set(self.now.get().max(d.as_nanos()).max(self.now.get() + 1));
        assert!(self.waits.borrow().len() < 1_000_000, "spinning");
    }
}

/// A xorshift generator: the same "random" traffic every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// B's end of the wire, shared by stack B and the test's raw frames.
#[derive(Clone)]
struct SharedEnd(Rc<PairEnd>);

impl NetworkInterface for SharedEnd {
    fn mac(&self) -> MacAddress {
        self.0.mac()
    }
    fn mtu(&self) -> usize {
        self.0.mtu()
    }
    fn poll_receive(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>> {
        self.0.poll_receive(cx, buf)
    }
    fn poll_send(&self, cx: &mut Context<'_>, frame: &[u8]) -> Poll<Result<(), NetError>> {
        self.0.poll_send(cx, frame)
    }
}

/// Stack A with `args` and stack B (10.0.0.2/24, fd00::2/64) on one wire,
/// and B's end for raw frames.
fn attacked(args: &[&str]) -> (NetStack, NetStack, SharedEnd) {
    let (a, b) = pair(mac(1), mac(2));
    let b = SharedEnd(Rc::new(b));
    let config = Config::parse(args.iter().copied()).unwrap();
    let a = NetStack::new(a, config, 1).unwrap();
    let config = Config::parse(["--ipv4=10.0.0.2/24", "--ipv6=fd00::2/64", "--no-slaac"]).unwrap();
    let b_stack = NetStack::new(b.clone(), config, 2).unwrap();
    (a, b_stack, b)
}

/// Serves connections on `listener`: answers each byte-count line with
/// "ok" and closes.
fn spawn_server(listener: kiln_net::TcpListener) {
    spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            spawn(async move {
                let mut buf = [0; 64];
                if let Ok(n) = stream.read(&mut buf).await
                    && n > 0
                {
                    let _ = stream.write_all(b"ok").await;
                }
                let _ = stream.shutdown().await;
                let _ = stream.read(&mut buf).await;
            });
        }
    });
}

/// One request from B to A's port 80 within `limit`: connect, "hi", "ok".
async fn one_request(b: &NetStack, to: SocketAddr, limit: Duration) -> Result<(), String> {
    let work = async {
        let mut s = b
            .connect_tcp(to)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"hi")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = [0; 2];
        let mut got = 0;
        while got < 2 {
            match s.read(&mut buf[got..]).await {
                Ok(0) => return Err("closed early".to_string()),
                Ok(n) => got += n,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(())
    };
    timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

/// A SYN from `src:port` (MAC 2) to 10.0.0.1:80 (MAC 1).
fn syn(src: Ipv4Addr, port: u16) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: port,
        dst_port: 80,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 64000,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let dst = Ipv4Addr::new(10, 0, 0, 1);
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut out = vec![0; 14 + ip.buffer_len() + tcp.buffer_len()];
    let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
    EthernetRepr {
        src_addr: EthernetAddress(mac(2).0),
        dst_addr: EthernetAddress(mac(1).0),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut eth);
    let caps = ChecksumCapabilities::default();
    let mut ipp = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut ipp, &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(ipp.payload_mut()),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &caps,
    );
    out
}

/// Runs the stack through 120 s of virtual time after one SYN from a host
/// that never answers (nobody has its address); the deadlines the runtime
/// blocked with, and A's counters.
fn waits_after_one_unanswered_syn(
    args: &[&str],
) -> (Vec<Option<Instant>>, kiln_net::DeviceStats, usize) {
    let probe: &'static Probe = Box::leak(Box::default());
    let (a, peer): (PairEnd, PairEnd) = pair(mac(1), mac(2));
    block_on(probe, async move {
        let config = Config::parse(args.iter().copied()).unwrap();
        let a = NetStack::new(a, config, 1).unwrap();
        let _l = a.listen_tcp("0.0.0.0:80".parse().unwrap()).await.unwrap();
        let idle_sockets = a.tcp_socket_count();
        kiln_rt::sleep(Duration::from_secs(1)).await;
        peer.send(&syn(Ipv4Addr::new(10, 0, 0, 77), 40000))
            .await
            .unwrap();
        let drain = async {
            let mut buf = vec![0; 1514];
            loop {
                let _ = peer.receive(&mut buf).await;
            }
        };
        let _ = timeout(Duration::from_secs(120), drain).await;
        assert_eq!(
            a.tcp_socket_count(),
            idle_sockets,
            "the half-open socket is gone"
        );
        (probe.waits.borrow().clone(), a.stats(), idle_sockets)
    })
}

/// Regression (issue 19, "CPU spin"): one SYN whose source never answers
/// sent the driver into a loop on a past deadline, SLAAC's (smoltcp ends
/// router discovery with a stale retry time), for ever; and its half-open
/// socket kept asking ARP for the source every second, for ever.
#[test]
fn one_unanswered_syn_leaves_the_driver_idle() {
    for args in [
        &["--ipv4=10.0.0.1/24", "--no-slaac"][..],
        &["--ipv4=10.0.0.1/24"][..],
    ] {
        let (waits, stats, _) = waits_after_one_unanswered_syn(args);
        // ARP once a second until the handshake times out (10 s), router
        // solicitations, then only the test's own timer.
        assert!(
            waits.len() < 30,
            "{args:?}: {} waits: {waits:?}",
            waits.len()
        );
        let late = waits
            .iter()
            .filter(|w| w.is_some_and(|t| t.as_nanos() > 15_000_000_000))
            .count();
        assert_eq!(
            late, 1,
            "{args:?}: woken after the handshake timed out: {waits:?}"
        );
        assert_eq!(stats.stale_deadlines, 0, "{args:?}: {stats:?}");
    }
}

/// Regression (issue 19, "SYN lockout"): spoofed SYNs filled the
/// listener's pending slots for ever. Now half-open connections time out
/// and the oldest make room for the newest: B keeps being served during a
/// flood of 3,000 SYNs at 1,000 a second, and the sockets go back to idle.
#[test]
fn a_syn_flood_does_not_lock_clients_out() {
    run(async {
        let (a, b, raw) = attacked(&["--ipv4=10.0.0.1/24", "--no-slaac", "--syn-backlog=64"]);
        let listener = a.listen_tcp("0.0.0.0:80".parse().unwrap()).await.unwrap();
        let idle = a.tcp_socket_count();
        spawn_server(listener);
        let to: SocketAddr = "10.0.0.1:80".parse().unwrap();
        one_request(&b, to, Duration::from_secs(5)).await.unwrap();
        let mut rng = Rng(7);
        let mut served = 0;
        for i in 0..3000u32 {
            let src = Ipv4Addr::new(10, 0, 0, 100 + (rng.next() % 100) as u8);
            raw.0
                .send(&syn(src, 1024 + (i % 60000) as u16))
                .await
                .unwrap();
            kiln_rt::sleep(Duration::from_millis(1)).await;
            if i % 300 == 0 {
                one_request(&b, to, Duration::from_secs(1))
                    .await
                    .unwrap_or_else(|e| panic!("during the flood, after {i} SYNs: {e}"));
                served += 1;
                assert!(
                    a.tcp_socket_count() <= idle + 64 + 2,
                    "{}",
                    a.tcp_socket_count()
                );
            }
        }
        assert_eq!(served, 10);
        assert!(a.stats().syn_dropped > 2000, "{:?}", a.stats());
        one_request(&b, to, Duration::from_secs(1)).await.unwrap();
        kiln_rt::sleep(Duration::from_secs(15)).await;
        assert_eq!(a.tcp_socket_count(), idle, "half-open sockets left");
    });
}

/// The stack never holds more than `--max-connections` TCP sockets: past
/// it, connection attempts are refused, and served again once some close.
#[test]
fn the_connection_limit_refuses_and_recovers() {
    run(async {
        let (a, b, _raw) = attacked(&["--ipv4=10.0.0.1/24", "--no-slaac", "--max-connections=40"]);
        let listener = a.listen_tcp("0.0.0.0:80".parse().unwrap()).await.unwrap();
        let to: SocketAddr = "10.0.0.1:80".parse().unwrap();
        // Accept and hold everything.
        let held = Rc::new(RefCell::new(Vec::new()));
        let h = held.clone();
        spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                h.borrow_mut().push(s);
            }
        });
        let mut open = Vec::new();
        let mut refused = 0;
        for _ in 0..60 {
            match timeout(Duration::from_secs(2), b.connect_tcp(to)).await {
                Ok(Ok(s)) => open.push(s),
                Ok(Err(StackError::ConnectionRefused)) | Ok(Err(StackError::ConnectionReset)) => {
                    refused += 1
                }
                other => panic!("{:?}", other.map(|r| r.map(|_| ()))),
            }
            assert!(a.tcp_socket_count() <= 40, "{}", a.tcp_socket_count());
        }
        assert!(
            refused >= 20 && open.len() >= 20,
            "{refused} refused, {} open",
            open.len()
        );
        held.borrow_mut().clear();
        open.clear();
        kiln_rt::sleep(Duration::from_secs(12)).await;
        let s = timeout(Duration::from_secs(2), b.connect_tcp(to)).await;
        assert!(matches!(s, Ok(Ok(_))), "not served after the others closed");
    });
}

/// An address in fd00::/64 that nobody has.
fn src_on_link(rng: &mut Rng) -> Ipv6Addr {
    let r = rng.next();
    Ipv6Addr::new(
        0xfd00,
        0,
        0,
        0,
        0x1000 | (r as u16 & 0xfff),
        (r >> 16) as u16,
        (r >> 32) as u16,
        (r >> 48) as u16,
    )
}

/// A SYN from `src:port` (MAC 2) to [fd00::1]:80.
fn syn6(src: Ipv6Addr, port: u16) -> Vec<u8> {
    let dst = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    let tcp = TcpRepr {
        src_port: port,
        dst_port: 80,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 64000,
        window_scale: None,
        max_seg_size: Some(1440),
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut out = vec![0; 14 + 40 + tcp.buffer_len()];
    let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
    EthernetRepr {
        src_addr: EthernetAddress(mac(2).0),
        dst_addr: EthernetAddress(mac(1).0),
        ethertype: EthernetProtocol::Ipv6,
    }
    .emit(&mut eth);
    let mut p = Ipv6Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut p);
    tcp.emit(
        &mut TcpPacket::new_unchecked(p.payload_mut()),
        &IpAddress::Ipv6(src),
        &IpAddress::Ipv6(dst),
        &ChecksumCapabilities::default(),
    );
    out
}

/// A frame from B's MAC carrying an IPv6 packet with ICMPv6 `icmp`.
fn icmp6_frame(src: Ipv6Addr, dst: Ipv6Addr, dst_mac: [u8; 6], icmp: &Icmpv6Repr) -> Vec<u8> {
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let mut out = vec![0; 14 + 40 + icmp.buffer_len()];
    let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
    EthernetRepr {
        src_addr: EthernetAddress(mac(2).0),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv6,
    }
    .emit(&mut eth);
    let mut p = Ipv6Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut p);
    icmp.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(p.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    out
}

/// Regression (issue 19, "IPv6 burst cuts IPv4"): router advertisements
/// and neighbour discovery from made-up sources, in 0.3 s, evicted the
/// IPv4 peer from smoltcp's neighbour cache and IPv4 stopped for 10-20 s.
/// Then SYNs from made-up neighbours kept smoltcp's neighbour discovery
/// (one request a second per interface) busy for their handshake timeout.
/// Now B's IPv4 requests are answered within a second right after it:
/// NS/NA from the made-up sources and the advertisements of all but four
/// routers are dropped, and a SYN-ACK goes to the link-layer address its
/// SYN came from.
#[test]
fn an_ipv6_burst_does_not_interrupt_ipv4() {
    run(async {
        let (a, b, raw) = attacked(&["--ipv4=10.0.0.1/24", "--ipv6=fd00::1/64"]);
        let listener = a.listen_tcp("[::]:80".parse().unwrap()).await.unwrap();
        spawn_server(listener);
        let to: SocketAddr = "10.0.0.1:80".parse().unwrap();
        one_request(&b, to, Duration::from_secs(5)).await.unwrap();
        let mut rng = Rng(11);
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let a_mac = mac(1).0;
        let a_ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 1);
        for i in 0..3200u32 {
            let r = rng.next();
            let src = Ipv6Addr::new(
                0xfe80,
                0,
                0,
                0,
                (r >> 16) as u16,
                r as u16,
                (r >> 32) as u16,
                i as u16,
            );
            let lladdr = Some(RawHardwareAddress::from_bytes(&[
                2,
                9,
                (r >> 8) as u8,
                r as u8,
                (i >> 8) as u8,
                i as u8,
            ]));
            let frame = match i % 16 {
                // SYNs from made-up neighbours: half-open connections whose
                // SYN-ACKs went to neighbour discovery.
                2 | 4 | 6 => syn6(src_on_link(&mut rng), 40000 + i as u16),
                0 => icmp6_frame(
                    src,
                    all_nodes,
                    [0x33, 0x33, 0, 0, 0, 1],
                    &Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert {
                        hop_limit: 64,
                        flags: NdiscRouterFlags::empty(),
                        router_lifetime: kiln_net::smoltcp::time::Duration::from_secs(1800),
                        reachable_time: kiln_net::smoltcp::time::Duration::ZERO,
                        retrans_time: kiln_net::smoltcp::time::Duration::ZERO,
                        lladdr,
                        mtu: None,
                        prefix_info: Some(NdiscPrefixInformation {
                            prefix_len: 64,
                            flags: NdiscPrefixInfoFlags::ADDRCONF | NdiscPrefixInfoFlags::ON_LINK,
                            valid_lifetime: kiln_net::smoltcp::time::Duration::from_secs(3600),
                            preferred_lifetime: kiln_net::smoltcp::time::Duration::from_secs(3600),
                            prefix: Ipv6Addr::new(
                                0x2001,
                                0xdb8,
                                (r >> 48) as u16,
                                i as u16,
                                0,
                                0,
                                0,
                                0,
                            ),
                        }),
                    }),
                ),
                n if n % 2 == 1 => icmp6_frame(
                    src,
                    a_ll,
                    a_mac,
                    &Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                        flags: NdiscNeighborFlags::OVERRIDE,
                        target_addr: src,
                        lladdr,
                    }),
                ),
                _ => icmp6_frame(
                    src,
                    a_ll,
                    a_mac,
                    &Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                        target_addr: src,
                        lladdr,
                    }),
                ),
            };
            raw.0.send(&frame).await.unwrap();
            if i % 100 == 0 {
                kiln_rt::sleep(Duration::from_millis(10)).await;
            }
        }
        for _ in 0..5 {
            one_request(&b, to, Duration::from_secs(1))
                .await
                .unwrap_or_else(|e| panic!("IPv4 after the burst: {e} ({:?})", a.stats()));
        }
        // 2,400 NS/NA and the RAs of all but the first four routers.
        assert_eq!(a.stats().ndisc_dropped, 2400 + 196, "{:?}", a.stats());
    });
}

/// At the limit, connections the application dropped but whose peers do
/// not finish closing give way to new ones instead of refusing them for
/// the close timeout (5,000 slow clients evicted by www filled the stack
/// with such sockets, and a normal client was refused).
#[test]
fn dropped_connections_give_way_at_the_limit() {
    run(async {
        let (a, b, _raw) = attacked(&["--ipv4=10.0.0.1/24", "--no-slaac", "--max-connections=40"]);
        let listener = a.listen_tcp("0.0.0.0:80".parse().unwrap()).await.unwrap();
        let to: SocketAddr = "10.0.0.1:80".parse().unwrap();
        // Accept and drop at once: A closes, B never does.
        spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        let mut open = Vec::new();
        for i in 0..100 {
            let s = timeout(Duration::from_secs(2), b.connect_tcp(to))
                .await
                .unwrap_or_else(|_| panic!("connection {i} timed out"))
                .unwrap_or_else(|e| panic!("connection {i}: {e} ({:?})", a.stats()));
            open.push(s);
            kiln_rt::sleep(Duration::from_millis(10)).await;
            assert!(a.tcp_socket_count() <= 40, "{}", a.tcp_socket_count());
        }
    });
}

/// The RSTs in `frames` (sent by A) that answer one of our SYNs (sequence
/// number 1000) from 10.0.0.1:80, and the SYN-ACKs, by the port they go to.
fn answers_to_syns(frames: &[Vec<u8>]) -> (Vec<u16>, Vec<u16>) {
    let (mut rsts, mut syn_acks) = (Vec::new(), Vec::new());
    for frame in frames {
        let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else {
            continue;
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            continue;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            continue;
        };
        if ip.next_header() != IpProtocol::Tcp || ip.src_addr() != Ipv4Addr::new(10, 0, 0, 1) {
            continue;
        }
        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
            continue;
        };
        if tcp.src_port() != 80 || !tcp.ack() || tcp.ack_number() != TcpSeqNumber(1001) {
            continue;
        }
        if tcp.rst() {
            rsts.push(tcp.dst_port());
        } else if tcp.syn() {
            syn_acks.push(tcp.dst_port());
        }
    }
    (rsts, syn_acks)
}

/// Regression: `tcp_refused` (`kiln_net_tcp_refused_total`, and the log
/// "N connections refused at the limit") counted the times a listener
/// could not put a socket back in LISTEN at the limit, after every frame
/// and every driver round (32 within 80 ms of a SYN flood), not the
/// connections refused. It counts the SYNs that no socket took at the
/// limit, each answered with a RST, and the `connect` calls refused.
#[test]
fn the_refused_count_is_the_connections_refused() {
    run(async {
        let (a, peer) = pair(mac(1), mac(2));
        let config =
            Config::parse(["--ipv4=10.0.0.1/24", "--no-slaac", "--max-connections=8"]).unwrap();
        let a = NetStack::new(a, config, 1).unwrap();
        // Never accepts: 4 sockets in LISTEN (the backlog), refilled up to
        // the limit of 8 as SYNs take them.
        let _listener = a.listen_tcp("0.0.0.0:80".parse().unwrap()).await.unwrap();
        let src = Ipv4Addr::new(10, 0, 0, 2);
        let mut frames = Vec::new();
        let drain = async |frames: &mut Vec<Vec<u8>>| {
            let mut buf = vec![0; 1514];
            for _ in 0..1000 {
                match timeout(Duration::from_millis(1), peer.receive(&mut buf)).await {
                    Ok(Ok(n)) => frames.push(buf[..n].to_vec()),
                    _ => return,
                }
            }
            panic!("the stack does not stop sending");
        };
        // One at a time, each in its own driver round, then a burst that
        // the driver reads in one.
        for port in 40000..40020 {
            peer.send(&syn(src, port)).await.unwrap();
            drain(&mut frames).await;
        }
        for port in 40020..40040 {
            peer.send(&syn(src, port)).await.unwrap();
        }
        drain(&mut frames).await;
        let (mut rsts, mut syn_acks) = answers_to_syns(&frames);
        rsts.sort_unstable();
        syn_acks.sort_unstable();
        syn_acks.dedup();
        assert_eq!(syn_acks, (40000..40008).collect::<Vec<_>>(), "accepted");
        assert_eq!(rsts, (40008..40040).collect::<Vec<_>>(), "refused");
        assert_eq!(a.tcp_socket_count(), 8);
        assert_eq!(a.stats().tcp_refused, 32, "{:?}", a.stats());
        // A connection of its own, refused at the limit without a frame.
        let local = a.connect_tcp("10.0.0.2:9".parse().unwrap()).await;
        assert!(local.is_err());
        assert_eq!(a.stats().tcp_refused, 33, "{:?}", a.stats());
    });
}
