//! The bulk buffers (`--tcp-bulk-connections`): the first sockets get the
//! larger windows, never more than the limit hold them whatever the
//! connections do, and they come back when those sockets are reclaimed.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use kiln_devices::{
    ListenOptions, MacAddress, NetError, NetworkInterface, Stack, StackError, TcpListener as _,
    TcpStream,
};
use kiln_net::pair::{PairEnd, pair};
use kiln_net::{Config, NetStack};
use kiln_rt::{spawn, timeout};
use kiln_testsupport::platform::run_virtual as run;

fn stack(end: kiln_net::pair::PairEnd, args: &[&str], seed: u64) -> NetStack {
    let config = Config::parse(args.iter().copied().chain(["--no-slaac"])).unwrap();
    NetStack::new(end, config, seed).unwrap()
}

/// Two stacks on the two ends of a pair, with `a_args` and `b_args`.
fn stacks(a_args: &[&str], b_args: &[&str]) -> (NetStack, NetStack) {
    let (a, b) = pair(
        MacAddress([2, 0, 0, 0, 0, 1]),
        MacAddress([2, 0, 0, 0, 0, 2]),
    );
    (stack(a, a_args, 1), stack(b, b_args, 2))
}

#[test]
fn bulk_buffers_are_bounded_and_come_back() {
    run(async {
        let (a, b) = stacks(
            &[
                "--ipv4=10.0.0.1/24",
                "--tcp-bulk-connections=3",
                "--tcp-bulk-rx-buffer=65536",
                "--tcp-bulk-tx-buffer=131072",
            ],
            &["--ipv4=10.0.0.2/24", "--tcp-bulk-connections=0"],
        );
        let listener = a.listen_tcp("0.0.0.0:80".parse().unwrap()).await.unwrap();
        // The listener's ready sockets took the first bulk buffers (it
        // keeps more ready than there are bulk buffers).
        let backlog = kiln_net::Buffers::default().backlog;
        assert!(backlog > 3);
        assert_eq!(a.tcp_socket_count(), backlog);
        assert_eq!(a.tcp_bulk_socket_count(), 3);
        let to: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let held = hold_accepted(listener);
        let mut open = Vec::new();
        for _ in 0..30 {
            let s = timeout(Duration::from_secs(2), b.connect_tcp(to))
                .await
                .expect("connect timed out")
                .unwrap();
            open.push(s);
            assert!(a.tcp_bulk_socket_count() <= 3);
            assert_eq!(b.tcp_bulk_socket_count(), 0);
        }
        kiln_rt::sleep(Duration::from_millis(100)).await;
        assert_eq!(held.borrow().len(), 30);
        // A megabyte each way on the first (bulk) and last connections.
        for i in [0, 29] {
            let data: Vec<u8> = (0..1 << 20).map(|j: usize| (j * 7 + i) as u8).collect();
            let server = held.borrow_mut().remove(if i == 0 { 0 } else { 28 });
            let client = &mut open[i];
            let got = send_through(server, client, &data).await;
            assert!(got == data, "connection {i}: data differs");
        }
        // Everything closes; the sockets are reclaimed and the listener's
        // new ready sockets get the bulk buffers again.
        held.borrow_mut().clear();
        open.clear();
        kiln_rt::sleep(Duration::from_secs(15)).await;
        assert_eq!(a.tcp_socket_count(), backlog);
        assert_eq!(a.tcp_bulk_socket_count(), 3);
    });
}

/// A listener's ready sockets, with the default buffers, hold no more
/// than the 16 small ones held before there were bulk buffers (768 KiB):
/// a guest's heap pays for them before the first connection, and www with
/// 16 bulk ready sockets needed --mem=6 instead of 4 (docs/bulk.md).
#[test]
fn a_listener_holds_little_before_its_first_connection() {
    run(async {
        let (a, _b) = pair(
            MacAddress([2, 0, 0, 0, 0, 1]),
            MacAddress([2, 0, 0, 0, 0, 2]),
        );
        let a = stack(a, &["--ipv4=10.0.0.1/24"], 1);
        let _listener = a.listen_tcp("0.0.0.0:80".parse().unwrap()).await.unwrap();
        let b = kiln_net::Buffers::default();
        let bulk = a.tcp_bulk_socket_count();
        let small = a.tcp_socket_count() - bulk;
        let held = bulk * (b.bulk_rx + b.bulk_tx) + small * (b.tcp_rx + b.tcp_tx);
        assert!(bulk > 0, "the ready sockets have the bulk buffers");
        assert!(
            held <= 16 * (16 + 32) * 1024,
            "{held} bytes in {bulk} bulk and {small} other ready sockets"
        );
    });
}

/// One end of a pair that records the window scale (RFC 7323) of every
/// SYN-ACK it sends.
struct Spy {
    end: PairEnd,
    scales: Rc<RefCell<Vec<u8>>>,
}

/// The window scale option of `frame` if it is an IPv4 TCP SYN-ACK.
fn syn_ack_scale(frame: &[u8]) -> Option<u8> {
    if frame.get(12..14)? != [0x08, 0x00] || *frame.get(23)? != 6 {
        return None;
    }
    let tcp = frame.get(14 + usize::from(frame.get(14)? & 0xf) * 4..)?;
    if tcp.get(13)? & 0x12 != 0x12 {
        return None;
    }
    let mut opts = tcp.get(20..usize::from(tcp.get(12)? >> 4) * 4)?;
    while let [kind, rest @ ..] = opts {
        match kind {
            0 => return None,
            1 => opts = rest,
            3 => return rest.get(1).copied(),
            _ => opts = opts.get(usize::from(*rest.first()?).max(2)..)?,
        }
    }
    None
}

impl NetworkInterface for Spy {
    fn mac(&self) -> MacAddress {
        self.end.mac()
    }
    fn mtu(&self) -> usize {
        self.end.mtu()
    }
    fn poll_receive(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>> {
        self.end.poll_receive(cx, buf)
    }
    fn poll_send(&self, cx: &mut Context<'_>, frame: &[u8]) -> Poll<Result<(), NetError>> {
        let sent = self.end.poll_send(cx, frame);
        if sent.is_ready()
            && let Some(scale) = syn_ack_scale(frame)
        {
            self.scales.borrow_mut().push(scale);
        }
        sent
    }
}

/// A listener that asks for a larger receive buffer (`ListenOptions`,
/// like `SO_RCVBUF`) gets it on its bulk sockets, with the window scale
/// that lets a peer use it; another listener on the same stack keeps the
/// stack's; an ask beyond `--tcp-max-rx-buffer` is cut to it.
#[test]
fn a_listener_gets_the_receive_buffer_it_asks_for() {
    run(async {
        let (a, b) = pair(
            MacAddress([2, 0, 0, 0, 0, 1]),
            MacAddress([2, 0, 0, 0, 0, 2]),
        );
        let scales = Rc::new(RefCell::new(Vec::new()));
        let config = Config::parse(["--ipv4=10.0.0.1/24", "--no-slaac"]).unwrap();
        let a = NetStack::new(
            Spy {
                end: a,
                scales: scales.clone(),
            },
            config,
            1,
        )
        .unwrap();
        let b = stack(b, &["--ipv4=10.0.0.2/24"], 2);
        let d = kiln_net::Buffers::default();
        let big = 512 * 1024;
        let asked = ListenOptions::default().recv_buffer(big);
        let wide = listen_holding(&a, 5201, Some(asked), d.backlog * (big + d.bulk_tx)).await;
        let plain = listen_holding(&a, 80, None, d.backlog * (d.bulk_rx + d.bulk_tx)).await;
        // The SYN-ACKs: 512 KiB needs a shift of 4 (65535 << 3 is just
        // short of it), the default 64 KiB one of 1.
        for (port, listener, scale) in [(5201, &wide, 4), (80, &plain, 1)] {
            let to: SocketAddr = format!("10.0.0.1:{port}").parse().unwrap();
            let (client, accepted) = futures_join(b.connect_tcp(to), listener.accept()).await;
            let (client, mut server) = (client.unwrap(), accepted.unwrap().0);
            assert_eq!(scales.borrow().last(), Some(&scale), "port {port}");
            // A megabyte to the listener, byte for byte.
            let data: Vec<u8> = (0..1 << 20).map(|j: usize| (j * 13 + port) as u8).collect();
            let got = send_through(client, &mut server, &data).await;
            assert!(got == data, "port {port}: data differs");
        }
        // An ask beyond --tcp-max-rx-buffer is cut to it.
        let huge = ListenOptions::default().recv_buffer(64 << 20);
        listen_holding(&a, 81, Some(huge), d.backlog * (d.max_rx + d.bulk_tx)).await;
    });
}

/// Listens on `port` of `a` with `options` (`listen_tcp` without) and
/// checks that the listener's ready sockets took `bytes` of buffers.
async fn listen_holding(
    a: &NetStack,
    port: u16,
    options: Option<ListenOptions>,
    bytes: usize,
) -> kiln_net::TcpListener {
    let before = a.tcp_buffer_bytes();
    let addr: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    let listener = match options {
        Some(options) => a.listen_tcp_with(addr, options).await,
        None => a.listen_tcp(addr).await,
    }
    .unwrap();
    assert_eq!(
        a.tcp_buffer_bytes() - before,
        bytes,
        "the ready sockets of port {port}"
    );
    listener
}

/// A flood of connections to a listener that asked for a larger receive
/// buffer: never more than `--tcp-bulk-connections` sockets hold it, so
/// what the stack's TCP buffers take stays within the bound of
/// `Buffers` with the asked size in place of `bulk_rx`.
#[test]
fn a_larger_asked_buffer_stays_bounded_under_a_flood() {
    run(async {
        let d = kiln_net::Buffers::default();
        let big = 512 * 1024;
        flood_an_asking_listener(ListenOptions::default().recv_buffer(big), big, d.bulk_tx).await;
    });
}

/// 30 connections from a second stack to a listener on a stack with 3 bulk
/// sockets that asks `options` (bulk buffers of `rx` and `tx` bytes),
/// checking after each that no more than 3 sockets hold them and the TCP
/// buffers stay within the bound that gives. The listening stack, the
/// streams it accepted and the connecting ends.
async fn flood_an_asking_listener(
    options: ListenOptions,
    rx: usize,
    tx: usize,
) -> (
    NetStack,
    Rc<RefCell<Vec<kiln_net::TcpStream>>>,
    Vec<kiln_net::TcpStream>,
) {
    let (a, b) = stacks(
        &["--ipv4=10.0.0.1/24", "--tcp-bulk-connections=3"],
        &["--ipv4=10.0.0.2/24", "--tcp-bulk-connections=0"],
    );
    let d = kiln_net::Buffers::default();
    let listener = a
        .listen_tcp_with("0.0.0.0:80".parse().unwrap(), options)
        .await
        .unwrap();
    let held = hold_accepted(listener);
    let to: SocketAddr = "10.0.0.1:80".parse().unwrap();
    let mut open = Vec::new();
    for _ in 0..30 {
        let s = timeout(Duration::from_secs(2), b.connect_tcp(to))
            .await
            .expect("connect timed out")
            .unwrap();
        open.push(s);
        let bound =
            a.tcp_socket_count() * (d.tcp_rx + d.tcp_tx) + 3 * (rx + tx - d.tcp_rx - d.tcp_tx);
        assert!(a.tcp_bulk_socket_count() <= 3);
        assert!(
            a.tcp_buffer_bytes() <= bound,
            "{} bytes held, bound {bound}",
            a.tcp_buffer_bytes()
        );
    }
    kiln_rt::sleep(Duration::from_millis(100)).await;
    assert_eq!(held.borrow().len(), 30);
    assert_eq!(a.tcp_bulk_socket_count(), 3);
    (a, held, open)
}

/// Bytes `server` queues, `data` from its start, before a write waits
/// (for 1 s of virtual time): its send buffer and what the peer's window
/// took, the peer reading nothing.
async fn queued_before_a_wait<S: TcpStream>(server: &mut S, data: &[u8]) -> usize {
    let mut at = 0;
    while at < data.len() {
        match timeout(Duration::from_secs(1), server.write(&data[at..])).await {
            Ok(n) => at += n.unwrap(),
            Err(_) => break,
        }
    }
    at
}

/// A listener that asks for a larger send buffer (`ListenOptions`, like
/// `SO_SNDBUF`) gets it on its bulk sockets, so its connections queue
/// (and may have in flight) that much; another listener on the same
/// stack keeps the stack's; an ask beyond `--tcp-max-tx-buffer` is cut
/// to it.
#[test]
fn a_listener_gets_the_send_buffer_it_asks_for() {
    run(async {
        let (a, b) = stacks(&["--ipv4=10.0.0.1/24"], &["--ipv4=10.0.0.2/24"]);
        let d = kiln_net::Buffers::default();
        let big = 512 * 1024;
        let asked = ListenOptions::default().send_buffer(big);
        let deep = listen_holding(&a, 5201, Some(asked), d.backlog * (d.bulk_rx + big)).await;
        let plain = listen_holding(&a, 80, None, d.backlog * (d.bulk_rx + d.bulk_tx)).await;
        for (port, listener, send) in [(5201, &deep, big), (80, &plain, d.bulk_tx)] {
            let to: SocketAddr = format!("10.0.0.1:{port}").parse().unwrap();
            let (client, accepted) = futures_join(b.connect_tcp(to), listener.accept()).await;
            let (mut client, mut server) = (client.unwrap(), accepted.unwrap().0);
            // Two megabytes from the listener's side: with the client
            // reading nothing, the server queues its send buffer and
            // what the client's window (its bulk 64 KiB) took.
            let data: Vec<u8> = (0..2 << 20).map(|j: usize| (j * 11 + port) as u8).collect();
            let queued = queued_before_a_wait(&mut server, &data).await;
            assert!(
                (send..=send + d.bulk_rx).contains(&queued),
                "port {port}: {queued} bytes queued with a send buffer of {send}"
            );
            // The rest, then all of it byte for byte.
            let rest = data[queued..].to_vec();
            let writer = spawn(async move {
                server.write_all(&rest).await.unwrap();
                server
            });
            let got = read_all(&mut client, data.len()).await;
            drop(writer.await);
            assert!(got == data, "port {port}: data differs");
        }
        // An ask beyond --tcp-max-tx-buffer is cut to it.
        let huge = ListenOptions::default().send_buffer(64 << 20);
        listen_holding(&a, 81, Some(huge), d.backlog * (d.bulk_rx + d.max_tx)).await;
    });
}

/// A flood of connections to a listener that asked for larger receive
/// and send buffers: never more than `--tcp-bulk-connections` sockets
/// hold them, so what the stack's TCP buffers take stays within the
/// bound of `Buffers` with the asked sizes in place of `bulk_rx` and
/// `bulk_tx`.
#[test]
fn a_larger_asked_send_buffer_stays_bounded_under_a_flood() {
    run(async {
        let d = kiln_net::Buffers::default();
        let (rx, tx) = (256 * 1024, 768 * 1024);
        let options = ListenOptions::default().recv_buffer(rx).send_buffer(tx);
        let (a, held, mut open) = flood_an_asking_listener(options, rx, tx).await;
        // The three bulk sockets hold what was asked, the others the
        // small buffers.
        assert_eq!(
            a.tcp_buffer_bytes(),
            a.tcp_socket_count() * (d.tcp_rx + d.tcp_tx) + 3 * (rx + tx - d.tcp_rx - d.tcp_tx)
        );
        // A megabyte from the first (bulk) connection, byte for byte.
        let data: Vec<u8> = (0..1 << 20).map(|j: usize| (j * 5) as u8).collect();
        let server = held.borrow_mut().remove(0);
        let got = send_through(server, &mut open[0], &data).await;
        assert!(got == data, "data differs");
    });
}

/// A stack fitted to a heap of 8 MiB ([`Config::fit_heap`], as on hvt at
/// `--mem=8`) under a flood of connections to a listener that asks for the
/// largest receive and send buffers: past the lowered limits, connection attempts
/// are refused, and what the TCP sockets hold stays within half of the
/// heap (unfitted, the first 5 sockets held 5.6 MiB of buffers).
#[test]
fn connections_fit_a_small_heap() {
    run(async {
        let (a, b) = pair(
            MacAddress([2, 0, 0, 0, 0, 1]),
            MacAddress([2, 0, 0, 0, 0, 2]),
        );
        let heap = 8 << 20;
        let config = Config::parse(["--ipv4=10.0.0.1/24", "--no-slaac"])
            .unwrap()
            .fit_heap(heap);
        let limits = config.buffers;
        assert!(limits.tcp_bound() <= heap / 2, "{limits:?}");
        let a = NetStack::new(a, config, 1).unwrap();
        let b = stack(b, &["--ipv4=10.0.0.2/24", "--tcp-bulk-connections=0"], 2);
        let listener = a
            .listen_tcp_with(
                "0.0.0.0:80".parse().unwrap(),
                ListenOptions::default()
                    .recv_buffer(1 << 20)
                    .send_buffer(1 << 20),
            )
            .await
            .unwrap();
        let _held = hold_accepted(listener);
        let to: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let mut open = Vec::new();
        let mut refused = 0;
        for _ in 0..80 {
            match timeout(Duration::from_secs(2), b.connect_tcp(to)).await {
                Ok(Ok(s)) => open.push(s),
                Ok(Err(StackError::ConnectionRefused | StackError::ConnectionReset)) => {
                    refused += 1
                }
                other => panic!("{:?}", other.map(|r| r.map(|_| ()))),
            }
            assert!(
                a.tcp_buffer_bytes() <= heap / 2,
                "{} bytes held with {} sockets",
                a.tcp_buffer_bytes(),
                a.tcp_socket_count()
            );
            assert!(a.tcp_socket_count() <= limits.max_connections);
        }
        assert!(
            refused >= 10 && open.len() >= 40,
            "{refused} refused, {} open",
            open.len()
        );
    });
}

/// Accepts every connection to `listener` in a task of its own, keeping
/// the streams open in the list it returns.
fn hold_accepted(listener: kiln_net::TcpListener) -> Rc<RefCell<Vec<kiln_net::TcpStream>>> {
    let held = Rc::new(RefCell::new(Vec::new()));
    let h = held.clone();
    spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            h.borrow_mut().push(s);
        }
    });
    held
}

/// Both futures, polled together (the stack's tests run on one thread).
/// Writes `data` on `from` (a task of its own) and reads what arrives on
/// `to` until as many bytes came (each read within 5 s of virtual time).
async fn send_through<W, R>(from: W, to: &mut R, data: &[u8]) -> Vec<u8>
where
    W: TcpStream + 'static,
    R: TcpStream,
{
    let mut from = from;
    let d = data.to_vec();
    let send = spawn(async move {
        from.write_all(&d).await.unwrap();
        from
    });
    let got = read_all(to, data.len()).await;
    drop(send.await);
    got
}

/// Reads `len` bytes from `to`, each read within 5 s of virtual time.
async fn read_all<R: TcpStream>(to: &mut R, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < len {
        let n = timeout(Duration::from_secs(5), to.read(&mut buf))
            .await
            .expect("read timed out")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    got
}

async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready((ra.take().unwrap(), rb.take().unwrap()))
        } else {
            Poll::Pending
        }
    })
    .await
}
