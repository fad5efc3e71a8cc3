//! The socket stack over the host's loopback interface: TCP echo at 100
//! concurrent connections, closes and resets, errors, UDP, IPv6.

use std::net::SocketAddr;
use std::time::Duration;

use kiln_devices::{Stack, StackError, TcpListener as _, TcpStream as _, UdpSocket as _};
use kiln_rt::{block_on, spawn, timeout};
use kiln_unix::{SocketStack, TcpStream, platform};

/// Runs `future` on this thread's platform, failing after 60 s.
fn run<F: Future>(future: F) -> F::Output {
    block_on(platform(), timeout(Duration::from_secs(60), future)).expect("test timed out")
}

fn stack() -> SocketStack {
    SocketStack::new(platform())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `len` bytes of a pattern that differs between seeds.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Echoes everything until the peer closes, then closes.
async fn echo(mut stream: TcpStream) -> Result<u64, StackError> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            stream.shutdown().await?;
            return Ok(total);
        }
        stream.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Serves echo on `listener` for `connections` connections.
async fn echo_server(listener: kiln_unix::TcpListener, connections: usize) -> Vec<u64> {
    let mut handles = Vec::new();
    for _ in 0..connections {
        let (stream, peer) = listener.accept().await.expect("accept");
        assert_eq!(stream.peer_addr(), peer);
        assert_eq!(stream.local_addr(), listener.local_addr());
        handles.push(spawn(echo(stream)));
    }
    let mut totals = Vec::new();
    for h in handles {
        totals.push(h.await.expect("echo"));
    }
    totals
}

/// Sends `data` in chunks and checks each comes back, then closes its side
/// and expects the server to close too.
async fn echo_client(server: SocketAddr, data: Vec<u8>) {
    let mut stream = stack().connect_tcp(server).await.expect("connect");
    assert_eq!(stream.peer_addr(), server);
    let mut back = vec![0u8; 16 * 1024];
    for chunk in data.chunks(16 * 1024) {
        stream.write_all(chunk).await.expect("write");
        let mut got = 0;
        while got < chunk.len() {
            let n = stream
                .read(&mut back[got..chunk.len()])
                .await
                .expect("read");
            assert_ne!(n, 0, "server closed early");
            got += n;
        }
        assert_eq!(&back[..chunk.len()], chunk, "echo differs");
    }
    stream.shutdown().await.expect("shutdown");
    assert_eq!(
        stream.write(b"late").await,
        Err(StackError::NotConnected),
        "write after shutdown"
    );
    assert_eq!(stream.read(&mut back).await, Ok(0), "server did not close");
}

async fn echo_many(listen: &str, connections: usize, bytes: usize) {
    let listener = stack().listen_tcp(addr(listen)).await.expect("listen");
    let server_addr = listener.local_addr();
    assert_ne!(server_addr.port(), 0);
    let server = spawn(echo_server(listener, connections));
    let clients: Vec<_> = (0..connections)
        .map(|i| spawn(echo_client(server_addr, pattern(i as u64 + 1, bytes))))
        .collect();
    for client in clients {
        client.await;
    }
    let totals = server.await;
    assert_eq!(totals, vec![bytes as u64; connections]);
}

#[test]
fn tcp_echo_with_100_concurrent_connections() {
    run(echo_many("127.0.0.1:0", 100, 300 * 1024));
}

#[test]
fn a_peer_close_reads_as_zero() {
    run(async {
        let listener = stack().listen_tcp(addr("127.0.0.1:0")).await.unwrap();
        let server_addr = listener.local_addr();
        let server = spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"bye").await.unwrap();
            // Dropped: closed.
        });
        let mut client = stack().connect_tcp(server_addr).await.unwrap();
        server.await;
        let mut buf = [0u8; 8];
        let mut got = Vec::new();
        loop {
            let n = client.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"bye");
    });
}

#[test]
fn writing_to_a_reset_connection_fails_with_connection_reset() {
    run(async {
        let listener = stack().listen_tcp(addr("127.0.0.1:0")).await.unwrap();
        let mut client = stack().connect_tcp(listener.local_addr()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        drop(server);
        // The first write draws a reset; a later one reports it.
        let data = vec![7u8; 64 * 1024];
        let mut result = Ok(0);
        for _ in 0..100 {
            result = client.write(&data).await;
            if result.is_err() {
                break;
            }
            kiln_rt::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(result, Err(StackError::ConnectionReset));
    });
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    run(async {
        let listener = stack().listen_tcp(addr("127.0.0.1:0")).await.unwrap();
        let closed = listener.local_addr();
        drop(listener);
        let result = stack().connect_tcp(closed).await;
        assert_eq!(result.err(), Some(StackError::ConnectionRefused));
    });
}

#[test]
fn connecting_to_port_zero_is_invalid() {
    run(async {
        let result = stack().connect_tcp(addr("127.0.0.1:0")).await;
        assert_eq!(result.err(), Some(StackError::InvalidInput));
    });
}

#[test]
fn binding_a_bound_address_reports_address_in_use() {
    run(async {
        let first = stack().listen_tcp(addr("127.0.0.1:0")).await.unwrap();
        let again = stack().listen_tcp(first.local_addr()).await;
        assert_eq!(again.err(), Some(StackError::AddressInUse));

        let udp = stack().bind_udp(addr("127.0.0.1:0")).await.unwrap();
        let again = stack().bind_udp(udp.local_addr()).await;
        assert_eq!(again.err(), Some(StackError::AddressInUse));
    });
}

#[test]
fn binding_a_foreign_address_reports_address_not_available() {
    run(async {
        // TEST-NET-1 is never assigned to a local interface.
        let result = stack().listen_tcp(addr("192.0.2.1:0")).await;
        assert_eq!(result.err(), Some(StackError::AddressNotAvailable));
    });
}

async fn udp_echo(local: &str) {
    let server = stack().bind_udp(addr(local)).await.unwrap();
    let client = stack().bind_udp(addr(local)).await.unwrap();
    let server_addr = server.local_addr();
    let echo = spawn(async move {
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            server.send_to(&buf[..n], from).await.unwrap();
        }
    });
    for len in [1usize, 512, 1400] {
        let data = pattern(len as u64, len);
        client.send_to(&data, server_addr).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(from, server_addr);
        assert_eq!(&buf[..n], &data[..]);
    }
    echo.await;

    // A datagram longer than the buffer is truncated to it.
    let receiver = stack().bind_udp(addr(local)).await.unwrap();
    client
        .send_to(&[9u8; 100], receiver.local_addr())
        .await
        .unwrap();
    let mut small = [0u8; 10];
    let (n, from) = receiver.recv_from(&mut small).await.unwrap();
    assert_eq!((n, from), (10, client.local_addr()));
    assert_eq!(small, [9u8; 10]);

    // Too large for one datagram.
    let huge = vec![0u8; 70_000];
    assert_eq!(
        client.send_to(&huge, server_addr).await,
        Err(StackError::MessageTooLarge)
    );
}

#[test]
fn udp_echo_on_ipv4() {
    run(udp_echo("127.0.0.1:0"));
}

/// Whether the loopback interface has `::1` (IPv6 may be disabled).
fn has_ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

/// Skips `test` loudly (a failure under `CI=true`); true, for `&&`.
fn skip(test: &str, why: &str) -> bool {
    kiln_testsupport::skip::skip(test, why);
    true
}

#[test]
fn tcp_and_udp_on_ipv6_loopback() {
    if !has_ipv6_loopback()
        && skip(
            "tcp_and_udp_on_ipv6_loopback",
            "::1 is not configured on this host",
        )
    {
        return;
    }
    run(async {
        echo_many("[::1]:0", 10, 64 * 1024).await;
        udp_echo("[::1]:0").await;
    });
}

#[test]
fn a_dual_stack_listener_reports_ipv4_peers_as_ipv4() {
    if !has_ipv6_loopback()
        && skip(
            "a_dual_stack_listener_reports_ipv4_peers_as_ipv4",
            "IPv6 is not available on this host",
        )
    {
        return;
    }
    run(async {
        let listener = stack().listen_tcp(addr("[::]:0")).await.unwrap();
        let port = listener.local_addr().port();
        let client = stack()
            .connect_tcp(SocketAddr::new("127.0.0.1".parse().unwrap(), port))
            .await
            .unwrap();
        let (_stream, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr());
    });
}
