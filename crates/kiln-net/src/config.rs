//! The stack's configuration and the parser of its runtime arguments.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};
use core::str::FromStr;
use core::time::Duration;

use alloc::vec::Vec;

/// An address with its prefix length, as `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr<A> {
    /// The address.
    pub addr: A,
    /// The prefix length in bits.
    pub prefix: u8,
}

impl<A: fmt::Display> fmt::Display for Cidr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Sizes of the buffers the stack allocates for each socket, and the
/// bounds on how many TCP sockets it holds.
///
/// Every TCP socket costs `tcp_rx + tcp_tx` bytes of buffers (48 KiB with
/// the defaults) plus about 1 KiB of state, and the stack never holds more
/// than `max_connections` of them; up to `bulk_connections` of them have
/// `bulk_rx + bulk_tx` instead (192 KiB), so TCP takes at most about
/// `max_connections × (tcp_rx + tcp_tx + 1 KiB) + bulk_connections ×
/// (bulk_rx + bulk_tx - tcp_rx - tcp_tx)`: 49 + 4.5 MiB with the defaults,
/// whatever the peers do. A listener that asks for a larger receive or
/// send buffer ([`kiln_devices::ListenOptions`]) gives its bulk sockets
/// up to `max_rx` instead of `bulk_rx` and up to `max_tx` instead of
/// `bulk_tx`: in that sum `bulk_rx` and `bulk_tx` become the largest
/// buffers asked for, at most `max_rx` and `max_tx` (1 MiB each: 34.5 MiB
/// more with 32 bulk sockets for the receive side alone, 62.5 MiB for
/// both), and only for a unikernel whose listener asks.
///
/// On a platform whose heap is known (hvt, spt, virtio: the guest's
/// memory), [`Config::fit_heap`] lowers `bulk_connections`, `max_rx`,
/// `max_tx` and `max_connections`, where the command line did not set
/// them, so that this sum ([`Buffers::tcp_bound`], with `max_rx` for
/// `bulk_rx` and `max_tx` for `bulk_tx`) stays within half of the heap
/// left free when the stack is made:
/// connections beyond it are refused, as at `max_connections`, instead
/// of the guest running out of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffers {
    /// Bytes each TCP connection buffers on receive (the advertised
    /// window; `--tcp-rx-buffer`).
    pub tcp_rx: usize,
    /// Bytes each TCP connection buffers on send (the most it has in
    /// flight; `--tcp-tx-buffer`).
    pub tcp_tx: usize,
    /// TCP sockets that get `bulk_rx` and `bulk_tx` instead of `tcp_rx`
    /// and `tcp_tx` (`--tcp-bulk-connections`): each new socket, listening
    /// ones included, gets them while fewer than this many sockets have
    /// them. A window of 16 KiB held a transfer from the host over a tap
    /// to about 1 Gbit/s, 64 KiB to about 5 (docs/bulk.md); the bound
    /// keeps what a flood of connections can take as it was.
    pub bulk_connections: usize,
    /// Receive buffer of the bulk sockets (`--tcp-bulk-rx-buffer`).
    pub bulk_rx: usize,
    /// Send buffer of the bulk sockets (`--tcp-bulk-tx-buffer`).
    pub bulk_tx: usize,
    /// The largest receive buffer a listener may ask for its bulk sockets
    /// (`--tcp-max-rx-buffer`; [`kiln_devices::ListenOptions::recv_buffer`]):
    /// a larger ask is cut to it. The bulk sockets' count still bounds
    /// how many hold it.
    pub max_rx: usize,
    /// The largest send buffer a listener may ask for its bulk sockets
    /// (`--tcp-max-tx-buffer`; [`kiln_devices::ListenOptions::send_buffer`]):
    /// a larger ask is cut to it, as for `max_rx`.
    pub max_tx: usize,
    /// Listening sockets kept ready per TCP listener. The driver refills
    /// them after every frame it hands to smoltcp, and a frame carries at
    /// most one SYN, so one would do; each holds its buffers (the bulk
    /// ones while there are bulk buffers to give) from the moment it
    /// listens, so a few are kept, not more.
    pub backlog: usize,
    /// Half-open connections (SYN received, handshake not complete) a
    /// listener holds, and connections established that nobody accepted
    /// yet (`--syn-backlog`). When a SYN arrives with this many half-open,
    /// the oldest is dropped without a word: a flood of spoofed SYNs never
    /// locks new clients out, it only shortens how long each half-open
    /// connection may take to complete (`max_pending / SYN rate`). With
    /// this many established but not accepted, further SYNs are refused.
    pub max_pending: usize,
    /// TCP sockets the stack holds at most, whatever their state
    /// (listening, half-open, established, closing; `--max-connections`).
    /// At it, a connection the application has dropped and that is still
    /// closing gives way to a new one; without such, new connection
    /// attempts are refused with a RST and `connect` fails with
    /// `AddressInUse`; nothing is allocated.
    pub max_connections: usize,
    /// How long a connection may stay half-open (SYN received, no ACK for
    /// our SYN-ACK) before it is dropped (`--handshake-timeout`).
    pub handshake_timeout: Duration,
    /// How long a connection the application dropped may take to close
    /// gracefully (its queued data and FIN acknowledged) before it is
    /// reset and its socket reclaimed.
    pub close_timeout: Duration,
    /// Bytes of datagram payload each UDP socket buffers, each way.
    pub udp_payload: usize,
    /// Datagrams each UDP socket buffers, each way.
    pub udp_packets: usize,
}

/// Bytes of state a TCP socket holds beside its buffers, about.
const TCP_SOCKET_STATE: usize = 1024;

/// The fewest TCP sockets [`Config::fit_heap`] leaves: two listeners'
/// ready sockets (`backlog`), so that a tiny heap still serves a client
/// or a few at a time.
pub const MIN_HEAP_CONNECTIONS: usize = 8;

impl Buffers {
    /// Bytes more than an ordinary socket's that a bulk socket may hold:
    /// its buffers at the most a listener may ask for (`max_rx`,
    /// `max_tx`).
    fn bulk_extra(&self) -> usize {
        self.bulk_rx
            .max(self.max_rx)
            .saturating_add(self.bulk_tx.max(self.max_tx))
            .saturating_sub(self.tcp_rx.saturating_add(self.tcp_tx))
    }

    /// Bytes of an ordinary TCP socket: its buffers and its state.
    fn tcp_socket_bytes(&self) -> usize {
        self.tcp_rx
            .saturating_add(self.tcp_tx)
            .saturating_add(TCP_SOCKET_STATE)
    }

    /// The most the stack's TCP sockets hold, whatever the peers do:
    /// `max_connections` ordinary sockets (buffers and about 1 KiB of
    /// state each) and what `bulk_connections` of them hold more, each with
    /// a receive buffer of `max_rx` (or `bulk_rx`, the larger) and a send
    /// buffer of `max_tx` (or `bulk_tx`).
    pub fn tcp_bound(&self) -> usize {
        self.max_connections
            .saturating_mul(self.tcp_socket_bytes())
            .saturating_add(self.bulk_connections.saturating_mul(self.bulk_extra()))
    }
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers {
            // A request, or a few segments of an upload in flight: 16 KiB
            // is 11 full segments, enough for the bandwidth-delay product
            // of a tap or a LAN.
            tcp_rx: 16 * 1024,
            tcp_tx: 32 * 1024,
            // Listeners' ready sockets (4 each), then connections.
            bulk_connections: 32,
            bulk_rx: 64 * 1024,
            bulk_tx: 128 * 1024,
            // What examples/bulk asks for: on hvt's receive path 1 MiB
            // measured better than 512 KiB, 2 MiB no better (docs/bulk.md).
            max_rx: 1024 * 1024,
            // What examples/bulk asks for its iperf3 port, from which
            // `iperf3 -R` has at most this much in flight (docs/bulk.md).
            max_tx: 1024 * 1024,
            // 16 ready sockets, all with bulk buffers, held 3 MiB of a
            // guest's heap before the first connection: www needed
            // --mem=6 instead of 4 (docs/bulk.md).
            backlog: 4,
            max_pending: 256,
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            udp_payload: 64 * 1024,
            udp_packets: 64,
        }
    }
}

/// How the stack configures its interface.
///
/// The defaults: no static address, DHCPv4 on, IPv6 link-local plus SLAAC
/// from router advertisements, [`Buffers::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A static IPv4 address; when set, DHCP is not used.
    pub ipv4: Option<Cidr<Ipv4Addr>>,
    /// The IPv4 default gateway (with a static address).
    pub ipv4_gateway: Option<Ipv4Addr>,
    /// A static IPv6 address, in addition to the link-local one.
    pub ipv6: Option<Cidr<Ipv6Addr>>,
    /// The IPv6 default gateway (SLAAC learns one from router
    /// advertisements otherwise).
    pub ipv6_gateway: Option<Ipv6Addr>,
    /// Whether to ask for an IPv4 address with DHCP when none is given.
    pub dhcp: bool,
    /// Whether to configure IPv6 addresses from router advertisements.
    pub slaac: bool,
    /// Socket buffer sizes.
    pub buffers: Buffers,
    /// The bounds the command line set, which [`Config::fit_heap`] keeps.
    explicit: Explicit,
}

/// Which of the bounds [`Config::fit_heap`] may lower were set by
/// [`Config::set`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Explicit {
    max_connections: bool,
    bulk_connections: bool,
    max_rx: bool,
    max_tx: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ipv4: None,
            ipv4_gateway: None,
            ipv6: None,
            ipv6_gateway: None,
            dhcp: true,
            slaac: true,
            buffers: Buffers::default(),
            explicit: Explicit::default(),
        }
    }
}

/// A runtime argument the stack understands: its name (without `--`), the
/// shape of its value (`None` for a flag without value) and its doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// The name, without the leading `--`.
    pub name: &'static str,
    /// How its value is written, or `None` for a flag that takes no value.
    pub value: Option<&'static str>,
    /// One line for `--help`.
    pub doc: &'static str,
}

/// Every runtime argument [`Config::set`] accepts, for `--help`.
pub const FLAGS: &[Flag] = &[
    Flag {
        name: "ipv4",
        value: Some("ADDR/PREFIX"),
        doc: "Static IPv4 address of the interface, e.g. 10.0.0.2/24 (default: DHCP)",
    },
    Flag {
        name: "ipv4-gateway",
        value: Some("ADDR"),
        doc: "IPv4 default gateway",
    },
    Flag {
        name: "ipv6",
        value: Some("ADDR/PREFIX"),
        doc: "Static IPv6 address, e.g. fd00::2/64 (link-local and SLAAC addresses are automatic)",
    },
    Flag {
        name: "ipv6-gateway",
        value: Some("ADDR"),
        doc: "IPv6 default gateway (default: learnt from router advertisements)",
    },
    Flag {
        name: "no-dhcp",
        value: None,
        doc: "Do not ask for an IPv4 address with DHCP",
    },
    Flag {
        name: "no-slaac",
        value: None,
        doc: "Do not configure IPv6 addresses from router advertisements",
    },
    Flag {
        name: "max-connections",
        value: Some("N"),
        doc: "Most TCP sockets the stack holds (listening, half-open, open, closing); more are refused (default 1024, fewer in a small guest heap)",
    },
    Flag {
        name: "syn-backlog",
        value: Some("N"),
        doc: "Half-open connections per listener; the oldest is dropped when a SYN finds it full (default 256)",
    },
    Flag {
        name: "handshake-timeout",
        value: Some("SECS"),
        doc: "Seconds a half-open connection may wait for the client's ACK (default 10)",
    },
    Flag {
        name: "tcp-rx-buffer",
        value: Some("BYTES"),
        doc: "Receive buffer (window) of each TCP connection (default 16384)",
    },
    Flag {
        name: "tcp-tx-buffer",
        value: Some("BYTES"),
        doc: "Send buffer of each TCP connection (default 32768)",
    },
    Flag {
        name: "tcp-bulk-connections",
        value: Some("N"),
        doc: "TCP sockets (listening ones included) that get the bulk buffers while fewer have them (default 32, fewer in a small guest heap)",
    },
    Flag {
        name: "tcp-bulk-rx-buffer",
        value: Some("BYTES"),
        doc: "Receive buffer (window) of the bulk TCP sockets (default 65536)",
    },
    Flag {
        name: "tcp-bulk-tx-buffer",
        value: Some("BYTES"),
        doc: "Send buffer of the bulk TCP sockets (default 131072)",
    },
    Flag {
        name: "tcp-max-rx-buffer",
        value: Some("BYTES"),
        doc: "Largest receive buffer a listener may ask for its bulk TCP sockets (default 1048576, less in a small guest heap)",
    },
    Flag {
        name: "tcp-max-tx-buffer",
        value: Some("BYTES"),
        doc: "Largest send buffer a listener may ask for its bulk TCP sockets (default 1048576, less in a small guest heap)",
    },
];

/// Parses an unsigned number within `min..=max`.
fn parse_count(
    f: &'static Flag,
    value: &str,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let n: usize = value
        .parse()
        .map_err(|_| invalid(f, value, "expected an unsigned number"))?;
    if !(min..=max).contains(&n) {
        return Err(invalid(f, value, "out of range"));
    }
    Ok(n)
}

/// Why a stack argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The flag is not one of [`FLAGS`].
    #[error(
        "unknown stack argument --{flag}\nhint: the stack accepts --ipv4, --ipv4-gateway, --ipv6, --ipv6-gateway, --no-dhcp, --no-slaac, --max-connections, --syn-backlog, --handshake-timeout, --tcp-rx-buffer, --tcp-tx-buffer, --tcp-bulk-connections, --tcp-bulk-rx-buffer, --tcp-bulk-tx-buffer, --tcp-max-rx-buffer, --tcp-max-tx-buffer"
    )]
    UnknownFlag {
        /// The flag, without `--`.
        flag: alloc::string::String,
    },
    /// A flag that needs a value came without one.
    #[error("missing value for --{flag}\nhint: write --{flag}={shape}")]
    MissingValue {
        /// The flag.
        flag: &'static str,
        /// How its value is written.
        shape: &'static str,
    },
    /// A flag without value was given one.
    #[error("--{flag} takes no value, got '{value}'")]
    UnexpectedValue {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: alloc::string::String,
    },
    /// A value did not parse.
    #[error("invalid value '{value}' for --{flag}: {reason}\nhint: write --{flag}={shape}")]
    InvalidValue {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: alloc::string::String,
        /// What is wrong with it.
        reason: &'static str,
        /// How a valid value is written.
        shape: &'static str,
    },
    /// A gateway was given without an address of its family.
    #[error("--{flag} needs a static address\nhint: add --{needs}=ADDR/PREFIX")]
    GatewayWithoutAddress {
        /// The gateway flag.
        flag: &'static str,
        /// The address flag it needs.
        needs: &'static str,
    },
}

fn flag(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

fn invalid(f: &'static Flag, value: &str, reason: &'static str) -> ConfigError {
    ConfigError::InvalidValue {
        flag: f.name,
        value: value.into(),
        reason,
        shape: f.value.unwrap_or(""),
    }
}

/// Parses `ADDR/PREFIX` with a prefix of at most `max` bits.
fn parse_cidr<A: FromStr>(f: &'static Flag, value: &str, max: u8) -> Result<Cidr<A>, ConfigError> {
    let (addr, prefix) = value
        .split_once('/')
        .ok_or_else(|| invalid(f, value, "expected an address and a prefix length"))?;
    let addr = addr
        .parse()
        .map_err(|_| invalid(f, value, "the address does not parse"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=max).contains(p))
        .ok_or_else(|| invalid(f, value, "the prefix length is out of range"))?;
    Ok(Cidr { addr, prefix })
}

impl Config {
    /// Applies one runtime argument: `name` without `--` (one of [`FLAGS`]),
    /// `value` as given after `=` (or `None`). A later value replaces an
    /// earlier one.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<(), ConfigError> {
        let f = flag(name).ok_or_else(|| ConfigError::UnknownFlag { flag: name.into() })?;
        let value = match (f.value, value) {
            (Some(shape), None) => {
                return Err(ConfigError::MissingValue {
                    flag: f.name,
                    shape,
                });
            }
            (None, Some(v)) => {
                return Err(ConfigError::UnexpectedValue {
                    flag: f.name,
                    value: v.into(),
                });
            }
            (_, v) => v.unwrap_or(""),
        };
        match f.name {
            "ipv4" => {
                let cidr: Cidr<Ipv4Addr> = parse_cidr(f, value, 32)?;
                let a = cidr.addr;
                if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                    return Err(invalid(f, value, "not a unicast address"));
                }
                self.ipv4 = Some(cidr);
            }
            "ipv6" => {
                let cidr: Cidr<Ipv6Addr> = parse_cidr(f, value, 128)?;
                if cidr.addr.is_unspecified() || cidr.addr.is_multicast() {
                    return Err(invalid(f, value, "not a unicast address"));
                }
                self.ipv6 = Some(cidr);
            }
            "ipv4-gateway" => {
                let gw: Ipv4Addr = value
                    .parse()
                    .map_err(|_| invalid(f, value, "the address does not parse"))?;
                if gw.is_unspecified() || gw.is_multicast() || gw.is_broadcast() {
                    return Err(invalid(f, value, "not a unicast address"));
                }
                self.ipv4_gateway = Some(gw);
            }
            "ipv6-gateway" => {
                let gw: Ipv6Addr = value
                    .parse()
                    .map_err(|_| invalid(f, value, "the address does not parse"))?;
                if gw.is_unspecified() || gw.is_multicast() {
                    return Err(invalid(f, value, "not a unicast address"));
                }
                self.ipv6_gateway = Some(gw);
            }
            "no-dhcp" => self.dhcp = false,
            "no-slaac" => self.slaac = false,
            // At least one connection beside a listening socket.
            "max-connections" => {
                self.buffers.max_connections = parse_count(f, value, 2, 1 << 20)?;
                self.explicit.max_connections = true;
            }
            "syn-backlog" => self.buffers.max_pending = parse_count(f, value, 1, 1 << 16)?,
            "handshake-timeout" => {
                let secs = parse_count(f, value, 1, 3600)?;
                self.buffers.handshake_timeout = Duration::from_secs(secs as u64);
            }
            // smoltcp's window scaling reaches 1 GiB; a buffer must hold
            // at least a segment.
            "tcp-rx-buffer" => self.buffers.tcp_rx = parse_count(f, value, 1024, 1 << 30)?,
            "tcp-bulk-connections" => {
                self.buffers.bulk_connections = parse_count(f, value, 0, 1 << 20)?;
                self.explicit.bulk_connections = true;
            }
            "tcp-bulk-rx-buffer" => self.buffers.bulk_rx = parse_count(f, value, 1024, 1 << 30)?,
            "tcp-bulk-tx-buffer" => self.buffers.bulk_tx = parse_count(f, value, 1024, 1 << 30)?,
            "tcp-max-rx-buffer" => {
                self.buffers.max_rx = parse_count(f, value, 1024, 1 << 30)?;
                self.explicit.max_rx = true;
            }
            "tcp-max-tx-buffer" => {
                self.buffers.max_tx = parse_count(f, value, 1024, 1 << 30)?;
                self.explicit.max_tx = true;
            }
            _ => self.buffers.tcp_tx = parse_count(f, value, 1024, 1 << 30)?,
        }
        Ok(())
    }

    /// Builds a configuration from `--name=value`, `--name value` and
    /// `--flag` arguments (only those of [`FLAGS`]), then checks it with
    /// [`Config::validate`].
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let body = arg
                .strip_prefix("--")
                .ok_or_else(|| ConfigError::UnknownFlag {
                    flag: arg.trim_start_matches('-').into(),
                })?;
            match body.split_once('=') {
                Some((name, value)) => config.set(name, Some(value))?,
                None => {
                    let takes_value = flag(body).is_some_and(|f| f.value.is_some());
                    let value = if takes_value { args.next() } else { None };
                    config.set(body, value)?;
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Takes the stack's arguments (those of [`FLAGS`], as `--name=value`,
    /// `--name value` or `--flag`) out of a unikernel's command line and
    /// returns the configuration they give (checked with
    /// [`Config::validate`]) and the other arguments, in order, for the
    /// unikernel's own parser.
    pub fn extract<'a>(
        args: impl IntoIterator<Item = &'a str>,
    ) -> Result<(Config, Vec<&'a str>), ConfigError> {
        let mut config = Config::default();
        let mut rest = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(body) = arg.strip_prefix("--") else {
                rest.push(arg);
                continue;
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(f) = flag(name) else {
                rest.push(arg);
                continue;
            };
            let value = match (value, f.value) {
                (None, Some(_)) => args.next(),
                (v, _) => v,
            };
            config.set(name, value)?;
        }
        config.validate()?;
        Ok((config, rest))
    }

    /// Checks combinations: a gateway needs a static address of its family
    /// (an IPv6 gateway also works with SLAAC or link-local addresses, so
    /// only IPv4 is checked).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ipv4_gateway.is_some() && self.ipv4.is_none() {
            return Err(ConfigError::GatewayWithoutAddress {
                flag: "ipv4-gateway",
                needs: "ipv4",
            });
        }
        Ok(())
    }

    /// Fits the TCP bounds to `heap` bytes of free heap: lowers
    /// `bulk_connections` so that their bulk buffers take at most a
    /// quarter of them, `max_rx` and `max_tx` so that the bulk sockets
    /// still do when they hold both (what is left over the bulk buffers
    /// is shared half and half, a side that needs less leaving the rest
    /// to the other), and then `max_connections` to the rest of half of
    /// them (but not below [`MIN_HEAP_CONNECTIONS`]), each only where
    /// [`Config::set`] did not set it, so that [`Buffers::tcp_bound`]
    /// stays within half of `heap`. The other half is left to the application and the rest of
    /// the stack. A connection attempt beyond `max_connections` is
    /// refused, so network clients can fill the stack's share of the heap
    /// but not the heap.
    ///
    /// The generated programs of hvt, spt and virtio call it with what
    /// the guest's heap (`--mem`) has free once its devices are open
    /// (hvt's network queues take 1 MiB or more); a host process (unix)
    /// has no such bound.
    #[must_use]
    pub fn fit_heap(mut self, heap: usize) -> Config {
        let e = self.explicit;
        let b = &mut self.buffers;
        let budget = heap / 2;
        let per = b.tcp_socket_bytes();
        let small = b.tcp_rx.saturating_add(b.tcp_tx);
        let extra_at = |rx: usize, tx: usize| rx.saturating_add(tx).saturating_sub(small);
        let before = (b.max_connections, b.bulk_connections, b.max_rx, b.max_tx);
        let share = if e.max_connections {
            budget.saturating_sub(b.max_connections.saturating_mul(per))
        } else {
            budget / 2
        };
        // What a bulk socket holds at least: the bulk buffers, or the
        // largest ones a listener may ask for where the command line set
        // them (they count in full).
        let rx_floor = if e.max_rx {
            b.bulk_rx.max(b.max_rx)
        } else {
            b.bulk_rx
        };
        let tx_floor = if e.max_tx {
            b.bulk_tx.max(b.max_tx)
        } else {
            b.bulk_tx
        };
        if !e.bulk_connections {
            // None when a bulk socket costs no more than another.
            if let Some(n) = share.checked_div(extra_at(rx_floor, tx_floor)) {
                b.bulk_connections = b.bulk_connections.min(n);
            }
        }
        // The largest buffers a listener may ask for shrink so that the
        // bulk sockets fit their share holding them.
        if let Some(each) = share.checked_div(b.bulk_connections) {
            let spare = each
                .saturating_add(small)
                .saturating_sub(rx_floor.saturating_add(tx_floor));
            let want_rx = if e.max_rx {
                0
            } else {
                b.max_rx.saturating_sub(b.bulk_rx)
            };
            let want_tx = if e.max_tx {
                0
            } else {
                b.max_tx.saturating_sub(b.bulk_tx)
            };
            let grow_rx = want_rx.min((spare / 2).max(spare.saturating_sub(want_tx)));
            let grow_tx = want_tx.min(spare.saturating_sub(grow_rx));
            if !e.max_rx {
                b.max_rx = b.max_rx.min(b.bulk_rx.saturating_add(grow_rx));
            }
            if !e.max_tx {
                b.max_tx = b.max_tx.min(b.bulk_tx.saturating_add(grow_tx));
            }
        }
        if !e.max_connections {
            let room =
                budget.saturating_sub(b.bulk_connections.saturating_mul(b.bulk_extra())) / per;
            b.max_connections = b.max_connections.min(room.max(MIN_HEAP_CONNECTIONS));
        }
        if before != (b.max_connections, b.bulk_connections, b.max_rx, b.max_tx) {
            log::info!(
                "{} KiB of heap free: at most {} TCP sockets, {} with bulk buffers, receive and send buffers asked for of at most {} and {} KiB (--max-connections, --tcp-bulk-connections, --tcp-max-rx-buffer, --tcp-max-tx-buffer)",
                heap / 1024,
                b.max_connections,
                b.bulk_connections,
                b.max_rx / 1024,
                b.max_tx / 1024
            );
        }
        self
    }

    /// Whether the stack runs a DHCPv4 client: DHCP is on and no static
    /// IPv4 address is given.
    pub fn uses_dhcp(&self) -> bool {
        self.dhcp && self.ipv4.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn parses_every_flag_in_both_forms() {
        let c = Config::parse([
            "--ipv4=10.0.0.2/24",
            "--ipv4-gateway",
            "10.0.0.1",
            "--ipv6=fd00::2/64",
            "--ipv6-gateway=fd00::1",
            "--no-slaac",
        ])
        .unwrap();
        assert_eq!(
            c.ipv4,
            Some(Cidr {
                addr: Ipv4Addr::new(10, 0, 0, 2),
                prefix: 24
            })
        );
        assert_eq!(c.ipv4_gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.ipv6.unwrap().to_string(), "fd00::2/64");
        assert_eq!(c.ipv6_gateway, Some("fd00::1".parse().unwrap()));
        assert!(!c.slaac);
        assert!(c.dhcp && !c.uses_dhcp(), "a static address turns DHCP off");
        let c = Config::parse(["--no-dhcp"]).unwrap();
        assert!(!c.uses_dhcp());
        assert!(Config::parse([]).unwrap().uses_dhcp());
    }

    #[test]
    fn extract_leaves_other_arguments_in_order() {
        let (c, rest) = Config::extract([
            "--port=80",
            "--ipv4",
            "10.0.0.2/24",
            "--net:service=tap0",
            "--no-slaac",
            "--help",
            "--ipv6=fd00::2/64",
            "word",
        ])
        .unwrap();
        assert_eq!(rest, ["--port=80", "--net:service=tap0", "--help", "word"]);
        assert_eq!(c.ipv4.unwrap().to_string(), "10.0.0.2/24");
        assert_eq!(c.ipv6.unwrap().to_string(), "fd00::2/64");
        assert!(!c.slaac && !c.uses_dhcp());
        assert!(matches!(
            Config::extract(["--ipv4=bad"]),
            Err(ConfigError::InvalidValue { flag: "ipv4", .. })
        ));
        assert!(matches!(
            Config::extract(["--ipv4"]),
            Err(ConfigError::MissingValue { flag: "ipv4", .. })
        ));
    }

    #[test]
    fn fit_heap_lowers_only_the_bounds_not_given() {
        let heap = 8 << 20;
        let b = Config::default().fit_heap(heap).buffers;
        assert!(b.tcp_bound() <= heap / 2, "{b:?}");
        assert!(b.max_connections >= MIN_HEAP_CONNECTIONS && b.max_connections < 1024);
        assert!(b.bulk_connections < 32);
        // The default heap of hvt and spt (512 MiB) keeps the defaults.
        assert_eq!(
            Config::default().fit_heap(512 << 20).buffers,
            Buffers::default()
        );
        // A tiny heap still holds a few sockets.
        let b = Config::default().fit_heap(512 << 10).buffers;
        assert_eq!(
            (b.max_connections, b.bulk_connections),
            (MIN_HEAP_CONNECTIONS, 0)
        );
        let c = Config::parse([
            "--max-connections=100",
            "--tcp-bulk-connections=2",
            "--tcp-max-rx-buffer=2097152",
        ])
        .unwrap();
        let b = c.fit_heap(heap).buffers;
        assert_eq!(
            (b.max_connections, b.bulk_connections, b.max_rx),
            (100, 2, 2 << 20)
        );
        // A given largest receive buffer counts in full.
        let b = Config::parse(["--tcp-max-rx-buffer=1048576"])
            .unwrap()
            .fit_heap(heap)
            .buffers;
        assert_eq!((b.bulk_connections, b.max_rx), (1, 1 << 20));
        assert!(b.tcp_bound() <= heap / 2, "{b:?}");
        // Given connections leave the bulk ones the rest of the budget.
        let b = Config::parse(["--max-connections=40"])
            .unwrap()
            .fit_heap(heap)
            .buffers;
        assert_eq!(b.max_connections, 40);
        assert!(b.tcp_bound() <= heap / 2, "{b:?}");
    }

    #[test]
    fn parses_the_largest_send_buffer() {
        let d = Buffers::default();
        assert_eq!(d.max_tx, 1 << 20);
        let c = Config::parse(["--tcp-max-tx-buffer=2097152"]).unwrap();
        assert_eq!(c.buffers.max_tx, 2 << 20);
        assert_eq!(c.buffers.max_rx, d.max_rx, "the receive side is its own");
        let (c, rest) =
            Config::extract(["--tcp-max-tx-buffer", "65536", "--send-buffer=1"]).unwrap();
        assert_eq!(
            (c.buffers.max_tx, rest),
            (65536, alloc::vec!["--send-buffer=1"])
        );
        for bad in ["--tcp-max-tx-buffer=1023", "--tcp-max-tx-buffer=x"] {
            assert!(
                matches!(
                    Config::parse([bad]),
                    Err(ConfigError::InvalidValue {
                        flag: "tcp-max-tx-buffer",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(
            ConfigError::UnknownFlag { flag: "x".into() }
                .to_string()
                .contains("--tcp-max-tx-buffer")
        );
        assert!(FLAGS.iter().any(|f| f.name == "tcp-max-tx-buffer"));
    }

    #[test]
    fn the_bound_counts_the_largest_send_buffer() {
        let d = Buffers::default();
        let small = d.tcp_rx + d.tcp_tx;
        let per = small + TCP_SOCKET_STATE;
        assert_eq!(
            d.tcp_bound(),
            d.max_connections * per + d.bulk_connections * (d.max_rx + d.max_tx - small)
        );
        // A send buffer no listener may grow leaves the bound as it was
        // with the receive side alone.
        let b = Buffers {
            max_tx: 0,
            ..Buffers::default()
        };
        assert_eq!(
            b.tcp_bound(),
            d.max_connections * per + d.bulk_connections * (d.max_rx + d.bulk_tx - small)
        );
    }

    #[test]
    fn fit_heap_shares_the_bulk_room_between_both_directions() {
        let d = Buffers::default();
        let small = d.tcp_rx + d.tcp_tx;
        for heap in [8 << 20, 16 << 20, 64 << 20, 128 << 20, 200 << 20] {
            let b = Config::default().fit_heap(heap).buffers;
            assert!(b.tcp_bound() <= heap / 2, "{heap}: {b:?}");
            assert!(
                b.max_rx >= b.bulk_rx && b.max_tx >= b.bulk_tx,
                "{heap}: {b:?}"
            );
        }
        // 64 MiB: 16 MiB for the 32 bulk sockets, 512 KiB each with their
        // small buffers; 368 KiB over the bulk ones, half to each side.
        let b = Config::default().fit_heap(64 << 20).buffers;
        assert_eq!(b.bulk_connections, 32);
        let spare = (16 << 20) / 32 + small - d.bulk_rx - d.bulk_tx;
        assert_eq!(
            (b.max_rx, b.max_tx),
            (d.bulk_rx + spare / 2, d.bulk_tx + spare - spare / 2)
        );
        // A side that asks for less leaves the rest to the other.
        let b = Config::parse(["--tcp-max-tx-buffer=1048576"])
            .unwrap()
            .fit_heap(64 << 20)
            .buffers;
        assert_eq!(b.max_tx, 1 << 20, "given, it counts in full");
        let each = (16 << 20) / b.bulk_connections;
        assert_eq!(b.bulk_connections, 15);
        assert_eq!(b.max_rx, each + small - (1 << 20), "{b:?}");
        assert!(b.tcp_bound() <= (64 << 20) / 2, "{b:?}");
        let b = Config::parse(["--tcp-max-rx-buffer=65536"])
            .unwrap()
            .fit_heap(64 << 20)
            .buffers;
        assert_eq!(b.max_rx, d.bulk_rx);
        assert_eq!(b.max_tx, d.bulk_tx + spare, "{b:?}");
        // A given send buffer lowers how many bulk sockets fit.
        let b = Config::parse(["--tcp-max-tx-buffer=4194304"])
            .unwrap()
            .fit_heap(8 << 20)
            .buffers;
        assert_eq!((b.bulk_connections, b.max_tx), (0, 4 << 20));
        assert!(b.tcp_bound() <= (8 << 20) / 2, "{b:?}");
    }

    #[test]
    fn refuses_bad_values_with_a_hint() {
        let e = Config::parse(["--ipv4=10.0.0.300/24"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value '10.0.0.300/24' for --ipv4: the address does not parse\nhint: write --ipv4=ADDR/PREFIX"
        );
        for bad in [
            "--ipv4=10.0.0.2",
            "--ipv4=10.0.0.2/33",
            "--ipv4=10.0.0.2/0",
            "--ipv4=224.0.0.1/4",
            "--ipv6=fd00::2/129",
            "--ipv6=ff02::1/64",
            "--ipv4-gateway=x",
        ] {
            assert!(
                matches!(Config::parse([bad]), Err(ConfigError::InvalidValue { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            Config::parse(["--ipv4"]),
            Err(ConfigError::MissingValue { flag: "ipv4", .. })
        ));
        assert!(matches!(
            Config::parse(["--no-dhcp=yes"]),
            Err(ConfigError::UnexpectedValue { .. })
        ));
        assert!(matches!(
            Config::parse(["--port=80"]),
            Err(ConfigError::UnknownFlag { .. })
        ));
        assert_eq!(
            Config::parse(["--ipv4-gateway=10.0.0.1"]).unwrap_err(),
            ConfigError::GatewayWithoutAddress {
                flag: "ipv4-gateway",
                needs: "ipv4"
            }
        );
    }
}
