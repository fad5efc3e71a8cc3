//! The echo unikernel on one kiln-net stack, a client on another, joined by
//! an in-memory wire, in virtual time.

use std::time::Duration;

use kiln_devices::{MacAddress, Stack, UdpSocket as _};
use kiln_rt::timeout;
use kiln_testsupport::platform::{logged, record_log, run_virtual};

#[test]
fn echoes_datagrams_over_ipv4_and_ipv6_and_refuses_a_taken_port() {
    record_log("info");
    let taken = run_virtual(async move {
        let (a, b) = kiln_net::pair::pair(
            MacAddress([2, 0, 0, 0, 0, 1]),
            MacAddress([2, 0, 0, 0, 0, 2]),
        );
        let cfg = |v4: &str, v6: &str| kiln_net::Config::parse([v4, v6, "--no-slaac"]).unwrap();
        let server =
            kiln_net::NetStack::new(a, cfg("--ipv4=10.0.0.1/24", "--ipv6=fd00::1/64"), 1).unwrap();
        let client =
            kiln_net::NetStack::new(b, cfg("--ipv4=10.0.0.2/24", "--ipv6=fd00::2/64"), 2).unwrap();
        kiln_rt::spawn(udp_echo::start(server.clone(), 7));
        kiln_rt::sleep(Duration::from_millis(1)).await;
        let socket = client.bind_udp("[::]:0".parse().unwrap()).await.unwrap();
        for (i, to) in ["10.0.0.1:7", "[fd00::1]:7", "10.0.0.1:7"]
            .iter()
            .enumerate()
        {
            let to = to.parse().unwrap();
            let data: Vec<u8> = (0..(100 + i * 686)).map(|j| (j * 7 + i) as u8).collect();
            socket.send_to(&data, to).await.unwrap();
            let mut buf = [0; 2048];
            let (n, from) = timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
                .await
                .expect("no echo")
                .unwrap();
            assert_eq!(from, to);
            assert_eq!(&buf[..n], &data[..]);
        }
        // A second echo server on the same stack and port is refused.
        udp_echo::start(server, 7).await
    });
    assert_eq!(
        taken.unwrap_err().to_string(),
        "cannot bind UDP port 7: address in use\nhint: choose another port with --port"
    );
    let log = logged();
    assert_eq!(
        log.matches("INFO  udp_echo: echoing on port 7\n").count(),
        1,
        "{log}"
    );
}
