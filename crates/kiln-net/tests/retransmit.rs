//! The stack counts its TCP retransmissions (`DeviceStats::tcp_retransmits`,
//! `kiln_net_tcp_retransmitted_segments_total`): two stacks on an in-memory
//! wire in virtual time, one of them behind an interface that loses some
//! of the data segments it sends. Lost segments are sent again and
//! counted; a wire that loses nothing counts none.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use kiln_devices::{
    MacAddress, NetError, NetworkInterface, Stack, TcpListener as _, TcpStream as _,
};
use kiln_net::pair::{PairEnd, pair};
use kiln_net::{Config, NetStack};
use kiln_rt::{spawn, timeout};
use kiln_testsupport::platform::run_virtual as run;

/// A wire end that loses every `every`th frame of at least 600 bytes it
/// sends (0: none), as a lossy link would.
struct Lossy {
    inner: PairEnd,
    every: u64,
    large: Cell<u64>,
    lost: Rc<Cell<u64>>,
}

impl NetworkInterface for Lossy {
    fn mac(&self) -> MacAddress {
        self.inner.mac()
    }

    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    fn poll_receive(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>> {
        self.inner.poll_receive(cx, buf)
    }

    fn poll_send(&self, cx: &mut Context<'_>, frame: &[u8]) -> Poll<Result<(), NetError>> {
        if self.every > 0 && frame.len() >= 600 {
            let n = self.large.get() + 1;
            self.large.set(n);
            if n.is_multiple_of(self.every) {
                self.lost.set(self.lost.get() + 1);
                return Poll::Ready(Ok(()));
            }
        }
        self.inner.poll_send(cx, frame)
    }
}

/// Sends 256 KiB from a server behind a link that loses every `every`th
/// large frame to a client; returns the server's and the client's
/// retransmissions, the frames lost, and the metrics page.
fn transfer(every: u64) -> (u64, u64, u64, String) {
    run(async move {
        let (a, b) = pair(
            MacAddress([2, 0, 0, 0, 0, 1]),
            MacAddress([2, 0, 0, 0, 0, 2]),
        );
        let lost = Rc::new(Cell::new(0));
        let a = Lossy {
            inner: a,
            every,
            large: Cell::new(0),
            lost: lost.clone(),
        };
        let config = |ip: &str| Config::parse([ip, "--no-slaac"]).unwrap();
        let server = NetStack::new(a, config("--ipv4=10.0.0.1/24"), 1).unwrap();
        let client = NetStack::new(b, config("--ipv4=10.0.0.2/24"), 2).unwrap();
        let listener = server
            .listen_tcp("0.0.0.0:80".parse().unwrap())
            .await
            .unwrap();
        let data: Vec<u8> = (0..256 * 1024).map(|i: usize| (i * 7) as u8).collect();
        let d = data.clone();
        spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(&d).await.unwrap();
            s.shutdown().await.unwrap();
            // Kept open until the client has read everything.
            kiln_rt::sleep(Duration::from_secs(600)).await;
        });
        let to: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let mut c = timeout(Duration::from_secs(10), client.connect_tcp(to))
            .await
            .expect("connect timed out")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = timeout(Duration::from_secs(120), c.read(&mut buf))
                .await
                .expect("read timed out")
                .unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == data, "the data arrived whole and in order");
        let page = kiln_metrics::render();
        (
            server.stats().tcp_retransmits,
            client.stats().tcp_retransmits,
            lost.get(),
            page,
        )
    })
}

#[test]
fn lost_segments_are_sent_again_and_counted() {
    let (server, client, lost, page) = transfer(7);
    assert!(lost >= 10, "the link lost {lost} frames");
    // Each lost segment is sent again at least once (after a timeout
    // smoltcp sends the whole window again: often more than once).
    assert!(server >= lost, "{server} retransmissions for {lost} lost");
    assert_eq!(client, 0, "the client lost nothing");
    assert!(
        page.contains(&format!(
            "# TYPE kiln_net_tcp_retransmitted_segments_total counter\n\
             kiln_net_tcp_retransmitted_segments_total {server}\n"
        )),
        "{page}"
    );
}

#[test]
fn a_wire_that_loses_nothing_counts_no_retransmission() {
    let (server, client, lost, _) = transfer(0);
    assert_eq!((server, client, lost), (0, 0, 0));
}
