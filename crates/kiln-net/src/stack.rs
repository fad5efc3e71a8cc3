//! The stack: the smoltcp interface and sockets shared between the driver
//! task and the socket handles, and the `kiln_devices::Stack` entry points.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::poll_fn;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use kiln_devices::{ListenOptions, MacAddress, NetworkInterface, StackError};
use smoltcp::iface::{self, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, tcp, udp};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, Ipv4Cidr,
    Ipv6Cidr,
};

use crate::config::{Buffers, Config};
use crate::device::{DeviceStats, NicDevice, TxQueue};
use crate::driver::Driver;
use crate::guard::Learnt;
use crate::tcp::{TcpListener, TcpStream};
use crate::udp::UdpSocket;

/// Seconds between DHCPDISCOVERs while no server answers.
const DHCP_DISCOVER_RETRY_SECS: u64 = 4;

/// First port of the ephemeral range (RFC 6335).
const EPHEMERAL_FIRST: u16 = 49152;

/// How long after resetting a connection its socket is removed even if the
/// reset could not be sent.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// Why a stack could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetStackError {
    /// The interface's MAC address is multicast or all zeros.
    #[error(
        "network interface has MAC address {mac}, which is not a unicast address\nhint: give the interface a unicast MAC such as 02:00:00:00:00:01"
    )]
    MacNotUnicast {
        /// The interface's MAC address.
        mac: MacAddress,
    },
    /// The interface's MTU is below what IPv4 and IPv6 need.
    #[error(
        "network interface MTU of {mtu} bytes is below the 1280 that IPv6 needs\nhint: give the interface an MTU of at least 1280 (1500 for Ethernet)"
    )]
    MtuTooSmall {
        /// The interface's MTU.
        mtu: usize,
    },
}

/// The current time in smoltcp's terms.
pub(crate) fn smol_now() -> smoltcp::time::Instant {
    let nanos = kiln_rt::time::now().as_nanos();
    smoltcp::time::Instant::from_micros(i64::try_from(nanos / 1000).unwrap_or(i64::MAX))
}

/// A socket of a listener that has not connected yet.
#[derive(Clone, Copy)]
pub(crate) struct Listening {
    pub(crate) handle: SocketHandle,
    /// When the driver first saw it in SYN-RECEIVED (`None` in LISTEN).
    since: Option<smoltcp::time::Instant>,
}

/// The listening sockets of one TCP listener.
pub(crate) struct Backlog {
    pub(crate) endpoint: IpListenEndpoint,
    /// The receive buffer its bulk sockets get: the stack's
    /// `bulk_rx`, or what the listener asked for within `max_rx`.
    pub(crate) bulk_rx: usize,
    /// The send buffer its bulk sockets get: the stack's `bulk_tx`, or
    /// what the listener asked for within `max_tx`.
    pub(crate) bulk_tx: usize,
    /// Sockets in LISTEN or SYN-RECEIVED.
    pub(crate) listening: Vec<Listening>,
    /// Connected sockets waiting for `accept`.
    pub(crate) ready: VecDeque<SocketHandle>,
    /// The task waiting in `accept`.
    pub(crate) waker: Option<Waker>,
}

/// A dropped TCP connection that is closing.
struct Closing {
    handle: SocketHandle,
    /// Set by the driver when it first sees the entry (dropping a handle
    /// must not need the runtime's clock).
    deadline: Option<smoltcp::time::Instant>,
    /// The ephemeral port it holds, released once the socket is gone.
    port: Option<u16>,
    /// The driver has seen it in TIME-WAIT after a round of sending (so
    /// the last ACK is out).
    time_wait_seen: bool,
}

/// Everything the driver and the socket handles share.
pub(crate) struct State {
    pub(crate) iface: Interface,
    pub(crate) sockets: SocketSet<'static>,
    pub(crate) buffers: Buffers,
    /// TCP ports held by listeners and outgoing connections.
    tcp_ports: BTreeSet<u16>,
    udp_ports: BTreeSet<u16>,
    next_port: u16,
    pub(crate) listeners: BTreeMap<u16, Backlog>,
    closing: Vec<Closing>,
    /// TCP sockets in `sockets`, bounded by `buffers.max_connections`.
    pub(crate) tcp_count: usize,
    /// Those of them with the bulk buffers, bounded by
    /// `buffers.bulk_connections`.
    pub(crate) bulk_count: usize,
    dhcp: Option<SocketHandle>,
    pub(crate) stats: DeviceStats,
    /// Tasks waiting for an address to be configured.
    address_wakers: Vec<Waker>,
    /// The DNS servers of the DHCP lease.
    dns_servers: Vec<Ipv4Addr>,
    /// The search domains of the DHCP lease (its Domain Search option).
    dns_search: Vec<String>,
}

/// The state behind an `Rc`, and the driver's waker.
pub(crate) struct Shared {
    pub(crate) state: RefCell<State>,
    driver: RefCell<Option<Waker>>,
    /// The stack's collector in the metrics registry, for as long as the
    /// stack lives.
    _metrics: kiln_metrics::Registration,
}

impl Shared {
    /// Asks the driver task to poll the interface (after a socket handle
    /// queued data, closed, or connected).
    pub(crate) fn wake_driver(&self) {
        if let Some(waker) = self.driver.borrow().as_ref() {
            waker.wake_by_ref();
        }
    }

    pub(crate) fn set_driver_waker(&self, waker: &Waker) {
        let mut slot = self.driver.borrow_mut();
        match slot.as_mut() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

/// The IPv6 link-local address of `mac` (modified EUI-64, RFC 4291 2.5.1).
pub(crate) fn link_local(mac: MacAddress) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 2,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

impl State {
    /// Whether one more TCP socket fits under `max_connections`.
    fn tcp_room(&self) -> bool {
        self.tcp_count < self.buffers.max_connections
    }

    /// Adds a TCP socket to the set, counted against `max_connections`.
    fn add_tcp(&mut self, socket: tcp::Socket<'static>) -> SocketHandle {
        self.tcp_count += 1;
        if self.is_bulk(&socket) {
            self.bulk_count += 1;
        }
        self.sockets.add(socket)
    }

    /// Removes a TCP socket from the set, freeing its buffers.
    pub(crate) fn remove_tcp(&mut self, handle: SocketHandle) {
        self.tcp_count = self.tcp_count.saturating_sub(1);
        if self.is_bulk(self.sockets.get::<tcp::Socket>(handle)) {
            self.bulk_count = self.bulk_count.saturating_sub(1);
        }
        self.sockets.remove(handle);
    }

    /// Whether `socket` has the bulk buffers (see [`Buffers::bulk_connections`]):
    /// a send buffer of at least `bulk_tx` and a receive buffer of at
    /// least `bulk_rx` (a listener may have asked for more of either),
    /// not the default pair.
    fn is_bulk(&self, socket: &tcp::Socket) -> bool {
        let b = &self.buffers;
        let caps = (socket.recv_capacity(), socket.send_capacity());
        (b.bulk_rx, b.bulk_tx) != (b.tcp_rx, b.tcp_tx)
            && caps != (b.tcp_rx, b.tcp_tx)
            && caps.1 >= b.bulk_tx
            && caps.0 >= b.bulk_rx
    }

    /// The receive buffer of a listener's bulk sockets when it asks for
    /// `asked` bytes: at least the stack's `bulk_rx`, at most `max_rx`.
    fn listener_bulk_rx(&self, asked: Option<usize>) -> usize {
        let b = &self.buffers;
        asked.map_or(b.bulk_rx, |n| n.min(b.max_rx).max(b.bulk_rx))
    }

    /// The send buffer of a listener's bulk sockets when it asks for
    /// `asked` bytes: at least the stack's `bulk_tx`, at most `max_tx`.
    fn listener_bulk_tx(&self, asked: Option<usize>) -> usize {
        let b = &self.buffers;
        asked.map_or(b.bulk_tx, |n| n.min(b.max_tx).max(b.bulk_tx))
    }

    /// A TCP socket with the bulk buffers (`bulk_rx` of receive buffer,
    /// `bulk_tx` of send buffer) while fewer than `bulk_connections` have
    /// them, else with the default ones.
    fn new_tcp_socket(&self, bulk_rx: usize, bulk_tx: usize) -> tcp::Socket<'static> {
        let b = &self.buffers;
        let (rx, tx) = if self.bulk_count < b.bulk_connections {
            (bulk_rx, bulk_tx)
        } else {
            (b.tcp_rx, b.tcp_tx)
        };
        let rx = tcp::SocketBuffer::new(vec![0; rx]);
        let tx = tcp::SocketBuffer::new(vec![0; tx]);
        let mut socket = tcp::Socket::new(rx, tx);
        // Applications here write whole responses; Nagle would only delay
        // their last segment.
        socket.set_nagle_enabled(false);
        socket
    }

    /// A free ephemeral port for `udp` or TCP.
    fn ephemeral_port(&mut self, udp: bool) -> Result<u16, StackError> {
        let span = u16::MAX - EPHEMERAL_FIRST + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == u16::MAX {
                EPHEMERAL_FIRST
            } else {
                port + 1
            };
            let used = if udp {
                self.udp_ports.contains(&port)
            } else {
                self.tcp_ports.contains(&port)
            };
            if !used {
                return Ok(port);
            }
        }
        Err(StackError::AddressInUse)
    }

    /// Whether `ip` is unspecified or one of the interface's addresses.
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_unspecified()
            || self
                .iface
                .ip_addrs()
                .iter()
                .any(|cidr| cidr.address() == IpAddress::from(ip))
    }

    fn listen_endpoint(&self, addr: SocketAddr) -> Result<IpListenEndpoint, StackError> {
        if !self.is_local(addr.ip()) {
            return Err(StackError::AddressNotAvailable);
        }
        Ok(IpListenEndpoint {
            addr: (!addr.ip().is_unspecified()).then(|| addr.ip().into()),
            port: addr.port(),
        })
    }

    /// Moves connected sockets of every listener to its ready queue, drops
    /// failed ones and the oldest half-open ones past the limit, and tops
    /// the listening sockets up to the backlog (within `max_connections`).
    pub(crate) fn refill_listeners(&mut self, now: smoltcp::time::Instant) {
        let Buffers {
            backlog,
            max_pending,
            handshake_timeout,
            ..
        } = self.buffers;
        let max_pending = max_pending.max(1);
        let ports: Vec<u16> = self.listeners.keys().copied().collect();
        for port in ports {
            let Some(mut b) = self.listeners.remove(&port) else {
                continue;
            };
            let mut i = 0;
            let mut woke = false;
            let mut idle = 0;
            let mut half_open = 0;
            while let Some(l) = b.listening.get_mut(i) {
                let socket = self.sockets.get_mut::<tcp::Socket>(l.handle);
                match socket.state() {
                    tcp::State::Listen => {
                        idle += 1;
                        i += 1;
                    }
                    tcp::State::SynReceived => {
                        l.since.get_or_insert(now);
                        half_open += 1;
                        i += 1;
                    }
                    tcp::State::Closed => {
                        let h = b.listening.swap_remove(i).handle;
                        self.remove_tcp(h);
                    }
                    _ => {
                        // The handshake timeout is for the handshake only:
                        // an open connection may be quiet for as long as
                        // its application likes.
                        socket.set_timeout(None);
                        let h = b.listening.swap_remove(i).handle;
                        b.ready.push_back(h);
                        woke = true;
                    }
                }
            }
            // A SYN flood: the oldest half-open connections make room for
            // the newest, so a real client whose ACK comes within
            // `max_pending / rate` still gets in (no SYN cookies in
            // smoltcp; see ARCHITECTURE.md).
            while half_open > max_pending {
                let oldest = b
                    .listening
                    .iter()
                    .enumerate()
                    .filter_map(|(i, l)| l.since.map(|t| (t, i)))
                    .min();
                let Some((_, i)) = oldest else { break };
                let h = b.listening.swap_remove(i).handle;
                self.remove_tcp(h);
                self.stats.syn_dropped += 1;
                if self.stats.syn_dropped.is_power_of_two() {
                    log::warn!(
                        "{} half-open connections dropped for newer ones at the SYN backlog (--syn-backlog)",
                        self.stats.syn_dropped
                    );
                }
                half_open -= 1;
            }
            // Sockets in SYN-RECEIVED count towards the half-open limit,
            // not the backlog: each SYN must find a socket in LISTEN.
            while idle < backlog.max(1) && b.ready.len() < max_pending {
                // At the limit, a connection the application already
                // dropped gives way: new clients count more than a
                // graceful close. Without room, the SYNs that find no
                // socket in LISTEN are refused, and counted by the driver
                // (`count_refused_syn`): a refill that stops here refuses
                // nobody yet.
                if !self.tcp_room() && !self.reclaim_oldest_closing() {
                    break;
                }
                idle += 1;
                let mut socket = self.new_tcp_socket(b.bulk_rx, b.bulk_tx);
                // Bounds SYN-RECEIVED: smoltcp resets a socket that heard
                // nothing from its peer for this long.
                socket.set_timeout(Some(handshake_timeout.into()));
                if socket.listen(b.endpoint).is_err() {
                    break;
                }
                let handle = self.add_tcp(socket);
                b.listening.push(Listening {
                    handle,
                    since: None,
                });
            }
            // Bulk buffers given back since these sockets were made go to
            // listening sockets still waiting for a SYN.
            let sizes = &self.buffers;
            let distinct = (sizes.bulk_rx, sizes.bulk_tx) != (sizes.tcp_rx, sizes.tcp_tx);
            let mut j = 0;
            while distinct && self.bulk_count < self.buffers.bulk_connections {
                let Some(l) = b.listening.get(j) else { break };
                let old = self.sockets.get::<tcp::Socket>(l.handle);
                if old.state() == tcp::State::Listen && !self.is_bulk(old) {
                    let mut socket = self.new_tcp_socket(b.bulk_rx, b.bulk_tx);
                    socket.set_timeout(Some(handshake_timeout.into()));
                    if socket.listen(b.endpoint).is_err() {
                        break;
                    }
                    self.remove_tcp(l.handle);
                    b.listening[j].handle = self.add_tcp(socket);
                }
                j += 1;
            }
            if woke && let Some(w) = b.waker.take() {
                w.wake();
            }
            self.listeners.insert(port, b);
        }
    }

    /// Counts a connection refused at `max_connections` (and logs the
    /// count at each power of two).
    fn refused_at_limit(&mut self) {
        self.stats.tcp_refused += 1;
        if self.stats.tcp_refused.is_power_of_two() {
            log::warn!(
                "{} connections refused at the limit of {} TCP sockets (--max-connections)",
                self.stats.tcp_refused,
                self.buffers.max_connections
            );
        }
    }

    /// Counts `syn`, which smoltcp has just processed, as refused at the
    /// connection limit if no socket took it although a listener owns its
    /// address and port: smoltcp answered it with a RST (when it knows
    /// the peer's link-layer address; else it asked for that instead).
    /// Called before the listeners are refilled, so that the sockets are
    /// as smoltcp left them.
    ///
    /// Below the limit every listener whose accept queue has room holds a
    /// socket in LISTEN (refilled after every frame), which takes any SYN.
    /// At it, a pass over the sockets tells whether one took this SYN (a
    /// socket in LISTEN, or one of a connection with the same addresses
    /// and ports): smoltcp made the same pass to find one.
    pub(crate) fn count_refused_syn(&mut self, syn: &Learnt) {
        if self.tcp_room() {
            return;
        }
        let Some(b) = self.listeners.get(&syn.our_port) else {
            return;
        };
        if b.endpoint.addr.is_some_and(|a| a != syn.ours) || !self.iface.has_ip_addr(syn.ours) {
            return;
        }
        // A full accept queue, not the limit, keeps the listener from
        // listening (`refill_listeners`).
        if b.ready.len() >= self.buffers.max_pending.max(1) {
            return;
        }
        let listening = b
            .listening
            .iter()
            .any(|l| self.sockets.get::<tcp::Socket>(l.handle).state() == tcp::State::Listen);
        let local = IpEndpoint::new(syn.ours, syn.our_port);
        let remote = IpEndpoint::new(syn.peer, syn.peer_port);
        let taken = || {
            self.sockets.iter().any(|(_, s)| {
                matches!(s, smoltcp::socket::Socket::Tcp(t)
                    if t.remote_endpoint() == Some(remote) && t.local_endpoint() == Some(local))
            })
        };
        if !listening && !taken() {
            self.refused_at_limit();
        }
    }

    /// Removes the dropped connection that has been closing longest (its
    /// peer's next segment gets a RST). Returns whether there was one.
    fn reclaim_oldest_closing(&mut self) -> bool {
        // A deadline not set yet is the newest.
        let oldest = self
            .closing
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| (c.deadline.is_none(), c.deadline))
            .map(|(i, _)| i);
        let Some(i) = oldest else {
            return false;
        };
        let c = self.closing.swap_remove(i);
        self.remove_tcp(c.handle);
        if let Some(port) = c.port {
            self.tcp_ports.remove(&port);
        }
        true
    }

    /// Hands a dropped connection to the driver to close and reclaim.
    pub(crate) fn close_later(&mut self, handle: SocketHandle, port: Option<u16>) {
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        socket.close();
        // ACK the peer's FIN at once, so that TIME-WAIT can end early.
        socket.set_ack_delay(None);
        self.closing.push(Closing {
            handle,
            deadline: None,
            port,
            time_wait_seen: false,
        });
    }

    /// Removes closed sockets of dropped connections and resets those past
    /// their deadline. Returns the earliest deadline still pending.
    ///
    /// TIME-WAIT (RFC 9293 3.6.1) is cut short: a socket that reached it is
    /// removed on the next round, once its last ACK has been sent, instead
    /// of holding its buffers for smoltcp's 10 s. The cost: a duplicate
    /// FIN arriving later is answered with a RST.
    pub(crate) fn reap(&mut self, now: smoltcp::time::Instant) -> Option<smoltcp::time::Instant> {
        let mut earliest = None::<smoltcp::time::Instant>;
        let mut i = 0;
        while let Some(c) = self.closing.get_mut(i) {
            let close_timeout = self.buffers.close_timeout;
            let deadline = *c.deadline.get_or_insert(now + close_timeout.into());
            let socket = self.sockets.get_mut::<tcp::Socket>(c.handle);
            // Closed, and the RST (if any) is sent: smoltcp forgets the
            // peer once nothing is left to say.
            let closed = socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none();
            let time_wait = socket.state() == tcp::State::TimeWait;
            if closed || (time_wait && c.time_wait_seen) || now >= deadline + ABORT_GRACE.into() {
                let c = self.closing.swap_remove(i);
                self.remove_tcp(c.handle);
                if let Some(port) = c.port {
                    self.tcp_ports.remove(&port);
                }
                continue;
            }
            let wake_at = if time_wait {
                // Sent in this round's egress; removed in the next round.
                c.time_wait_seen = true;
                now
            } else if now >= deadline {
                socket.abort();
                deadline + ABORT_GRACE.into()
            } else {
                deadline
            };
            earliest = Some(earliest.map_or(wake_at, |e| e.min(wake_at)));
            i += 1;
        }
        earliest
    }

    /// Applies what the DHCP client learnt. Returns whether anything
    /// changed.
    pub(crate) fn poll_dhcp(&mut self) -> bool {
        let Some(h) = self.dhcp else {
            return false;
        };
        let change = match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
            None => return false,
            Some(dhcpv4::Event::Configured(c)) => {
                log::info!(
                    "DHCP lease: {}, gateway {}, DNS {:?}",
                    c.address,
                    c.router
                        .map_or_else(|| "none".into(), |r| alloc::format!("{r}")),
                    c.dns_servers.as_slice()
                );
                self.dns_servers = c.dns_servers.iter().copied().collect();
                let search: Vec<u8> = c
                    .packet
                    .iter()
                    .flat_map(|p| p.options())
                    .filter(|o| o.kind == crate::domain_search::OPTION)
                    .flat_map(|o| o.data.iter().copied())
                    .collect();
                self.dns_search = crate::domain_search::decode(&search);
                if !self.dns_search.is_empty() {
                    log::info!("DHCP search domains: {:?}", self.dns_search);
                }
                Some((c.address, c.router))
            }
            Some(dhcpv4::Event::Deconfigured) => {
                log::warn!("DHCP lease lost: no IPv4 address until the next one");
                self.dns_servers.clear();
                self.dns_search.clear();
                None
            }
        };
        self.iface.update_ip_addrs(|addrs| {
            addrs.retain(|a| !matches!(a, IpCidr::Ipv4(_)));
            if let Some((cidr, _)) = change {
                // Cannot fail: at most one IPv6 link-local, one static and
                // one SLAAC address sit beside it in four slots.
                let _ = addrs.push(IpCidr::Ipv4(cidr));
            }
        });
        match change.and_then(|(_, router)| router) {
            Some(router) => {
                let _ = self.iface.routes_mut().add_default_ipv4_route(router);
            }
            None => {
                self.iface.routes_mut().remove_default_ipv4_route();
            }
        }
        self.address_wakers.drain(..).for_each(Waker::wake);
        true
    }

    pub(crate) fn release_tcp_port(&mut self, port: u16) {
        self.tcp_ports.remove(&port);
    }

    pub(crate) fn release_udp_port(&mut self, port: u16) {
        self.udp_ports.remove(&port);
    }
}

/// Logs the interface and the addresses the stack starts with (boot
/// information, at `info`).
fn log_config(mac: MacAddress, mtu: usize, config: &Config) {
    if !log::log_enabled!(log::Level::Info) {
        return;
    }
    log::info!(
        "interface {mac}, mtu {mtu}, IPv6 link-local {}",
        link_local(mac)
    );
    match (config.ipv4, config.uses_dhcp()) {
        (Some(c), _) => log::info!(
            "IPv4 {}/{} (static), gateway {}",
            c.addr,
            c.prefix,
            config
                .ipv4_gateway
                .map_or_else(|| "none".into(), |g| alloc::format!("{g}"))
        ),
        (None, true) => log::info!("IPv4 by DHCP"),
        (None, false) => log::info!("no IPv4 (--no-dhcp)"),
    }
    if let Some(c) = config.ipv6 {
        log::info!("IPv6 {}/{} (static)", c.addr, c.prefix);
    }
    if config.slaac {
        log::info!("IPv6 SLAAC on");
    }
}

/// kiln's own TCP/IP stack over a network interface: a cheap handle
/// (cloning shares the stack) that implements [`kiln_devices::Stack`].
#[derive(Clone)]
pub struct NetStack {
    pub(crate) shared: Rc<Shared>,
    mac: MacAddress,
    mtu: usize,
}

impl NetStack {
    /// Builds the stack over `nic` and spawns its driver task on the running
    /// kiln runtime. `seed` seeds smoltcp's generator (TCP initial sequence
    /// numbers, DHCP transaction ids, ephemeral ports): take it from the
    /// random device.
    ///
    /// # Panics
    ///
    /// Outside of `kiln_rt::block_on` (the driver task cannot be spawned).
    pub fn new<N: NetworkInterface + 'static>(
        nic: N,
        config: Config,
        seed: u64,
    ) -> Result<NetStack, NetStackError> {
        let mac = nic.mac();
        if !mac.is_unicast() || mac.0 == [0; 6] {
            return Err(NetStackError::MacNotUnicast { mac });
        }
        let mtu = nic.mtu();
        if mtu < 1280 {
            return Err(NetStackError::MtuTooSmall { mtu });
        }
        let frame_len = mtu.saturating_add(kiln_devices::net::ETHERNET_HEADER_LEN);

        let mut iface_config =
            iface::Config::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
        iface_config.random_seed = seed;
        iface_config.slaac = config.slaac;
        let mut rx = [0u8; 0];
        let mut tx = TxQueue::new(0);
        let mut stats = DeviceStats::default();
        let mut cx = Context::from_waker(Waker::noop());
        let mut guard = crate::guard::NdiscGuard::default();
        // Only its capabilities are read here.
        let mut device = NicDevice {
            nic: &nic,
            cx: &mut cx,
            rx: &mut rx,
            tx: &mut tx,
            stats: &mut stats,
            frame_len,
            vnet: nic.vnet_header(),
            guard: &mut guard,
            now: smol_now(),
            more: false,
        };
        let mut iface = Interface::new(iface_config, &mut device, smol_now());
        iface.update_ip_addrs(|addrs| {
            // Four slots (the `iface-max-addr-count-4` feature): link-local,
            // static IPv6, IPv4, and one from SLAAC.
            let _ = addrs.push(IpCidr::Ipv6(Ipv6Cidr::new(link_local(mac), 64)));
            if let Some(c) = config.ipv4 {
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(c.addr, c.prefix)));
            }
            if let Some(c) = config.ipv6 {
                let _ = addrs.push(IpCidr::Ipv6(Ipv6Cidr::new(c.addr, c.prefix)));
            }
        });
        if let Some(gw) = config.ipv4_gateway {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        if let Some(gw) = config.ipv6_gateway {
            let _ = iface.routes_mut().add_default_ipv6_route(gw);
        }

        let mut sockets = SocketSet::new(Vec::new());
        let dhcp = config.uses_dhcp().then(|| {
            let mut socket = dhcpv4::Socket::new();
            // RFC 2131 4.1 suggests about 4 s before the first retransmission;
            // smoltcp's default of 10 s makes a lost first DISCOVER (a server
            // still starting) cost a long wait at boot.
            let mut retry = dhcpv4::RetryConfig::default();
            retry.discover_timeout = smoltcp::time::Duration::from_secs(DHCP_DISCOVER_RETRY_SECS);
            socket.set_retry_config(retry);
            // Ask for the Domain Search option too, and keep the lease's
            // packet to read it from: one buffer of the largest DHCP
            // message that fits the MTU, for the life of the program (the
            // socket set holds `'static` sockets).
            // Subnet mask, router, DNS servers (smoltcp's list), and the
            // search domains.
            socket.set_parameter_request_list(&[1, 3, 6, crate::domain_search::OPTION]);
            socket.set_receive_packet_buffer(Vec::leak(vec![0u8; mtu]));
            sockets.add(socket)
        });
        let span = u64::from(u16::MAX - EPHEMERAL_FIRST) + 1;
        let next_port = EPHEMERAL_FIRST + (seed % span) as u16;
        log_config(mac, mtu, &config);
        let shared = Rc::new_cyclic(|weak| Shared {
            state: RefCell::new(State {
                iface,
                sockets,
                buffers: config.buffers,
                tcp_ports: BTreeSet::new(),
                udp_ports: BTreeSet::new(),
                next_port,
                listeners: BTreeMap::new(),
                closing: Vec::new(),
                tcp_count: 0,
                bulk_count: 0,
                dhcp,
                stats: DeviceStats::default(),
                address_wakers: Vec::new(),
                dns_servers: Vec::new(),
                dns_search: Vec::new(),
            }),
            driver: RefCell::new(None),
            _metrics: {
                let weak = weak.clone();
                kiln_metrics::register(move |out: &mut kiln_metrics::Exposition| {
                    crate::metrics::collect(&weak, out)
                })
            },
        });
        kiln_rt::spawn(Driver::new(nic, shared.clone(), frame_len));
        Ok(NetStack { shared, mac, mtu })
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> MacAddress {
        self.mac
    }

    /// The interface's IPv4 address, once configured (statically or by
    /// DHCP).
    pub fn ipv4_addr(&self) -> Option<Ipv4Addr> {
        self.shared.state.borrow().iface.ipv4_addr()
    }

    /// The interface's IPv6 addresses: link-local, static and SLAAC.
    pub fn ipv6_addrs(&self) -> Vec<Ipv6Addr> {
        self.shared
            .state
            .borrow()
            .iface
            .ip_addrs()
            .iter()
            .filter_map(|c| match c.address() {
                IpAddress::Ipv6(a) => Some(a),
                IpAddress::Ipv4(_) => None,
            })
            .collect()
    }

    /// Waits until the interface has an IPv4 address (at once with a static
    /// one; with DHCP, once a lease is bound) and returns it.
    pub async fn wait_ipv4(&self) -> Ipv4Addr {
        poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            match state.iface.ipv4_addr() {
                Some(a) => Poll::Ready(a),
                None => {
                    let wakers = &mut state.address_wakers;
                    if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                        wakers.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Counters of frames received, sent and dropped.
    pub fn stats(&self) -> DeviceStats {
        self.shared.state.borrow().stats
    }

    /// Number of sockets the stack holds (listening, connected, closing).
    pub fn socket_count(&self) -> usize {
        self.shared.state.borrow().sockets.iter().count()
    }

    /// Number of TCP sockets the stack holds, the figure bounded by
    /// `--max-connections`.
    pub fn tcp_socket_count(&self) -> usize {
        self.shared.state.borrow().tcp_count
    }

    /// Number of those with the bulk buffers, the figure bounded by
    /// `--tcp-bulk-connections`.
    pub fn tcp_bulk_socket_count(&self) -> usize {
        self.shared.state.borrow().bulk_count
    }

    /// Bytes of receive and send buffer the stack's TCP sockets hold,
    /// the figure [`Buffers`]' bound is about.
    pub fn tcp_buffer_bytes(&self) -> usize {
        let state = self.shared.state.borrow();
        state
            .sockets
            .iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => Some(t.recv_capacity() + t.send_capacity()),
                _ => None,
            })
            .sum()
    }

    fn listen(&self, addr: SocketAddr, options: ListenOptions) -> Result<TcpListener, StackError> {
        let mut state = self.shared.state.borrow_mut();
        let endpoint = state.listen_endpoint(addr)?;
        let port = match addr.port() {
            0 => state.ephemeral_port(false)?,
            p if state.tcp_ports.contains(&p) => return Err(StackError::AddressInUse),
            p => p,
        };
        let endpoint = IpListenEndpoint { port, ..endpoint };
        state.tcp_ports.insert(port);
        let bulk_rx = state.listener_bulk_rx(options.recv_buffer);
        let bulk_tx = state.listener_bulk_tx(options.send_buffer);
        state.listeners.insert(
            port,
            Backlog {
                endpoint,
                bulk_rx,
                bulk_tx,
                listening: Vec::new(),
                ready: VecDeque::new(),
                waker: None,
            },
        );
        state.refill_listeners(smol_now());
        drop(state);
        self.shared.wake_driver();
        Ok(TcpListener::new(
            self.shared.clone(),
            SocketAddr::new(addr.ip(), port),
        ))
    }

    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, StackError> {
        if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
            return Err(StackError::InvalidInput);
        }
        let (handle, port) = {
            let mut state = self.shared.state.borrow_mut();
            if !state.tcp_room() {
                state.refused_at_limit();
                return Err(StackError::AddressInUse);
            }
            let port = state.ephemeral_port(false)?;
            let mut socket = state.new_tcp_socket(state.buffers.bulk_rx, state.buffers.bulk_tx);
            let remote = IpEndpoint::new(addr.ip().into(), addr.port());
            let State { iface, .. } = &mut *state;
            socket
                .connect(iface.context(), remote, port)
                .map_err(|_| StackError::Unreachable)?;
            state.tcp_ports.insert(port);
            (state.add_tcp(socket), port)
        };
        // Owned from here on: if this future is dropped or the connection
        // fails, dropping the stream reclaims the socket and the port.
        let stream = TcpStream::new(self.shared.clone(), handle, Some(port));
        self.shared.wake_driver();
        poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            let socket = state.sockets.get_mut::<tcp::Socket>(handle);
            match socket.state() {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    socket.register_send_waker(cx.waker());
                    Poll::Pending
                }
                tcp::State::Closed => Poll::Ready(Err(StackError::ConnectionRefused)),
                _ => Poll::Ready(Ok(())),
            }
        })
        .await?;
        Ok(stream)
    }

    fn bind(&self, addr: SocketAddr) -> Result<UdpSocket, StackError> {
        let mut state = self.shared.state.borrow_mut();
        let endpoint = state.listen_endpoint(addr)?;
        let port = match addr.port() {
            0 => state.ephemeral_port(true)?,
            p if state.udp_ports.contains(&p) => return Err(StackError::AddressInUse),
            p => p,
        };
        let b = state.buffers;
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; b.udp_packets.max(1)],
                vec![0; b.udp_payload.max(1)],
            )
        };
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket
            .bind(IpListenEndpoint { port, ..endpoint })
            .map_err(|_| StackError::InvalidInput)?;
        let handle = state.sockets.add(socket);
        state.udp_ports.insert(port);
        Ok(UdpSocket::new(
            self.shared.clone(),
            handle,
            SocketAddr::new(addr.ip(), port),
            self.mtu,
        ))
    }
}

impl kiln_devices::Stack for NetStack {
    type TcpListener = TcpListener;
    type TcpStream = TcpStream;
    type UdpSocket = UdpSocket;

    async fn listen_tcp(&self, addr: SocketAddr) -> Result<TcpListener, StackError> {
        self.listen(addr, ListenOptions::default())
    }

    /// Honours [`ListenOptions::recv_buffer`] and
    /// [`ListenOptions::send_buffer`]: the listener's bulk sockets (see
    /// [`Buffers::bulk_connections`]) get that receive buffer, within
    /// `bulk_rx..=max_rx` (`--tcp-max-rx-buffer`), and a window scale to
    /// match, and that send buffer, within `bulk_tx..=max_tx`
    /// (`--tcp-max-tx-buffer`); its other sockets keep `tcp_rx` and
    /// `tcp_tx`.
    async fn listen_tcp_with(
        &self,
        addr: SocketAddr,
        options: ListenOptions,
    ) -> Result<TcpListener, StackError> {
        self.listen(addr, options)
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> Result<TcpStream, StackError> {
        self.connect(addr).await
    }

    async fn bind_udp(&self, addr: SocketAddr) -> Result<UdpSocket, StackError> {
        self.bind(addr)
    }

    /// The DHCP lease's DNS servers, once a lease is bound; none with a
    /// static address.
    async fn dns_servers(&self) -> Vec<core::net::IpAddr> {
        if self.shared.state.borrow().dhcp.is_none() {
            return Vec::new();
        }
        self.wait_ipv4().await;
        let state = self.shared.state.borrow();
        state.dns_servers.iter().map(|&a| a.into()).collect()
    }

    /// The DHCP lease's search domains, once a lease is bound; none with a
    /// static address.
    async fn dns_search(&self) -> Vec<String> {
        if self.shared.state.borrow().dhcp.is_none() {
            return Vec::new();
        }
        self.wait_ipv4().await;
        self.shared.state.borrow().dns_search.clone()
    }
}

/// Converts a smoltcp endpoint to a socket address.
pub(crate) fn socket_addr(e: IpEndpoint) -> SocketAddr {
    SocketAddr::new(e.addr.into(), e.port)
}
