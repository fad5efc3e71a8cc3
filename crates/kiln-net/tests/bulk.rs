//! The bulk buffers (`--tcp-bulk-connections`): the first sockets get the
//! larger windows, never more than the limit hold them whatever the
//! connections do, and they come back when those sockets are reclaimed.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use kiln_devices::{MacAddress, Stack, TcpListener as _, TcpStream as _};
use kiln_net::pair::pair;
use kiln_net::{Config, NetStack};
use kiln_rt::{spawn, timeout};
use kiln_testsupport::platform::run_virtual as run;

fn stack(end: kiln_net::pair::PairEnd, args: &[&str], seed: u64) -> NetStack {
    let config = Config::parse(args.iter().copied().chain(["--no-slaac"])).unwrap();
    NetStack::new(end, config, seed).unwrap()
}

#[test]
fn bulk_buffers_are_bounded_and_come_back() {
    run(async {
        let (a, b) = pair(
            MacAddress([2, 0, 0, 0, 0, 1]),
            MacAddress([2, 0, 0, 0, 0, 2]),
        );
        let a = stack(
            a,
            &[
                "--ipv4=10.0.0.1/24",
                "--tcp-bulk-connections=3",
                "--tcp-bulk-rx-buffer=65536",
                "--tcp-bulk-tx-buffer=131072",
            ],
            1,
        );
        let b = stack(b, &["--ipv4=10.0.0.2/24", "--tcp-bulk-connections=0"], 2);
        let listener = a.listen_tcp("0.0.0.0:80".parse().unwrap()).await.unwrap();
        // The listener's ready sockets took the first bulk buffers (it
        // keeps more ready than there are bulk buffers).
        let backlog = kiln_net::Buffers::default().backlog;
        assert!(backlog > 3);
        assert_eq!(a.tcp_socket_count(), backlog);
        assert_eq!(a.tcp_bulk_socket_count(), 3);
        let to: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let held = Rc::new(RefCell::new(Vec::new()));
        let h = held.clone();
        spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                h.borrow_mut().push(s);
            }
        });
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
            let mut server = held.borrow_mut().remove(if i == 0 { 0 } else { 28 });
            let client = &mut open[i];
            let d = data.clone();
            let send = spawn(async move {
                server.write_all(&d).await.unwrap();
                server
            });
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            while got.len() < data.len() {
                let n = timeout(Duration::from_secs(5), client.read(&mut buf))
                    .await
                    .expect("read timed out")
                    .unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == data, "connection {i}: data differs");
            drop(send.await);
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
