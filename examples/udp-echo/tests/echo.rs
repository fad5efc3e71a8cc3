//! The echo unikernel on one kiln-net stack, a client on another, joined by
//! an in-memory wire, in virtual time.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use kiln_devices::{Console, ConsoleError, Instant, MacAddress, Stack, UdpSocket as _};
use kiln_rt::{Platform, block_on, timeout};

#[derive(Default)]
struct VirtualPlatform {
    now: Cell<u64>,
}

impl Platform for VirtualPlatform {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.now.get())
    }
    fn wait(&self, deadline: Option<Instant>) {
        let d = deadline.expect("deadlock: every task waits and no timer is pending");
        self.now.set(self.now.get().max(d.as_nanos()));
        assert!(
            self.now.get() < 3600 * 1_000_000_000,
            "stuck for an hour of virtual time"
        );
    }
}

struct Log(Rc<RefCell<String>>);

impl Console for Log {
    fn write(&self, bytes: &[u8]) -> Result<(), ConsoleError> {
        self.0
            .borrow_mut()
            .push_str(&String::from_utf8_lossy(bytes));
        Ok(())
    }
}

#[test]
fn echoes_datagrams_over_ipv4_and_ipv6_and_refuses_a_taken_port() {
    let platform: &'static VirtualPlatform = Box::leak(Box::default());
    let log = Rc::new(RefCell::new(String::new()));
    let console = Log(log.clone());
    let taken = block_on(platform, async move {
        let (a, b) = kiln_net::pair::pair(
            MacAddress([2, 0, 0, 0, 0, 1]),
            MacAddress([2, 0, 0, 0, 0, 2]),
        );
        let cfg = |v4: &str, v6: &str| kiln_net::Config::parse([v4, v6, "--no-slaac"]).unwrap();
        let server =
            kiln_net::NetStack::new(a, cfg("--ipv4=10.0.0.1/24", "--ipv6=fd00::1/64"), 1).unwrap();
        let client =
            kiln_net::NetStack::new(b, cfg("--ipv4=10.0.0.2/24", "--ipv6=fd00::2/64"), 2).unwrap();
        kiln_rt::spawn(udp_echo::start(server.clone(), console, 7));
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
        let log2 = Rc::new(RefCell::new(String::new()));
        udp_echo::start(server, Log(log2), 7).await
    });
    assert_eq!(
        taken.unwrap_err().to_string(),
        "cannot bind UDP port 7: address in use\nhint: choose another port with --port"
    );
    assert_eq!(log.borrow().as_str(), "udp-echo: echoing on port 7\n");
}
