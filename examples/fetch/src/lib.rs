//! An HTTPS client unikernel: parses an `https://` URL, resolves its host
//! (`kiln-dns`, with the search domains of `--dns-search` or the
//! network's), connects to the first of its addresses that accepts (each
//! in the resolver's order, the next after a refusal, an error or
//! [`CONNECT_TIMEOUT`]), verifies the server's certificate chain, name and
//! validity against CA roots read from a store (`kiln-tls`), sends one
//! `GET`, and prints the response's status and the SHA-256 of its body.
//! Any failure (DNS, TCP on every address, a certificate that does not
//! verify, a truncated body) is an error: exit status 1.
//!
//! The three result lines are the program's output, written to the
//! console. Its progress (the DNS servers used, the addresses resolved,
//! the connection and the handshake) is logged through the `log` facade at
//! `debug` (target `fetch`): `--log=info,fetch=debug` shows it.
//!
//! Modules: [`url`] (the URL), [`http`] (the request and the response's
//! framing: Content-Length, chunked, or to the end).
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

pub mod http;
pub mod url;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use kiln_devices::{Console, KvRo, Random, Stack, StackError, TcpStream, WallClock};
use kiln_dns::{DnsError, Resolver, Settings};
use kiln_tls::{ClientSettings, TlsError};

/// How long to wait for the network's DNS servers (a DHCP lease).
pub const DNS_CONFIG_WAIT: Duration = Duration::from_secs(10);

/// How long the whole fetch may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How long one address may take to accept the connection before the
/// next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the fetch failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// The URL is not `https://HOST[:PORT]/PATH`.
    #[error("invalid URL `{0}`\nhint: --url=https://HOST[:PORT]/PATH")]
    Url(String),
    /// `--dns` is not an address.
    #[error("invalid DNS server `{0}`\nhint: --dns=ADDR or --dns=ADDR:PORT")]
    DnsServer(String),
    /// `--dns-search` names an invalid domain.
    #[error("invalid search list: {0}")]
    DnsSearch(DnsError),
    /// The host could not be resolved.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        source: DnsError,
    },
    /// No address of the server accepted a TCP connection.
    #[error("cannot connect to {host}: {}", Tried(tried))]
    Connect {
        /// The host.
        host: String,
        /// Each address tried, in order, and why it failed.
        tried: Vec<(SocketAddr, StackError)>,
    },
    /// TLS failed: the certificate did not verify, or the connection broke.
    #[error("TLS with {host}: {source}")]
    Tls {
        /// The host.
        host: String,
        /// Why.
        source: TlsError,
    },
    /// The response is not HTTP/1.1 as expected.
    #[error("bad HTTP response: {0}")]
    Http(&'static str),
    /// The fetch took longer than [`DEADLINE`].
    #[error("no complete response within {} s", DEADLINE.as_secs())]
    TimedOut,
}

/// The addresses tried and their failures, for a message.
struct Tried<'a>(&'a [(SocketAddr, StackError)]);

impl fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (addr, error)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{addr} ({error})")?;
        }
        if self.0.is_empty() {
            f.write_str("no address")?;
        }
        Ok(())
    }
}

/// A TCP connection to the first of `addrs` (with `port`) that accepts
/// within `timeout`, trying each in turn; else every address tried and
/// why it failed.
pub async fn connect_any<S: Stack>(
    stack: &S,
    addrs: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<S::TcpStream, Vec<(SocketAddr, StackError)>> {
    let mut tried = Vec::new();
    for &ip in addrs {
        let addr = SocketAddr::new(ip, port);
        let error = match kiln_rt::timeout(timeout, stack.connect_tcp(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => e,
            Err(_) => StackError::TimedOut,
        };
        log::debug!("cannot connect to {addr}: {error}");
        tried.push((addr, error));
    }
    Err(tried)
}

/// Fetches `url` and prints `status: N`, `sha256: HEX` and `bytes: N`.
#[allow(clippy::too_many_arguments)]
pub async fn start<S, K, R, W, C>(
    stack: S,
    roots: K,
    random: R,
    wall_clock: W,
    console: C,
    url: String,
    dns: String,
    ca: String,
    dns_search: String,
) -> Result<(), FetchError>
where
    S: Stack,
    K: KvRo,
    R: Random + Send + Sync + 'static,
    W: WallClock + Send + Sync + 'static,
    C: Console,
{
    let target = url::Url::parse(&url).ok_or_else(|| FetchError::Url(url.clone()))?;
    let servers = match dns.as_str() {
        // The network's own (DHCP's, or the host's resolver configuration),
        // unless the host is an address.
        "" if url::is_ip_literal(&target.host) => vec![],
        "" => kiln_rt::timeout(DNS_CONFIG_WAIT, stack.dns_servers())
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 53))
            .collect(),
        s => vec![kiln_dns::parse_server(s).ok_or_else(|| FetchError::DnsServer(dns.clone()))?],
    };
    let mut search = kiln_dns::parse_search(&dns_search).map_err(FetchError::DnsSearch)?;
    if dns_search.is_empty() && dns.is_empty() && !url::is_ip_literal(&target.host) {
        // The network's own, as its servers; a domain that is not a valid
        // name is left out.
        let network = kiln_rt::timeout(DNS_CONFIG_WAIT, stack.dns_search())
            .await
            .unwrap_or_default();
        search = network
            .iter()
            .filter_map(|d| kiln_dns::parse_search(d).ok())
            .flatten()
            .collect();
    }
    log::debug!("DNS servers: {servers:?}, search: {search:?}");
    let tls_error = |source| FetchError::Tls {
        host: target.host.clone(),
        source,
    };
    let cas = kiln_tls::config::roots_from_store(&roots, &ca)
        .await
        .map_err(tls_error)?;
    let settings = ClientSettings {
        alpn: vec![b"http/1.1".to_vec()],
        ..ClientSettings::default()
    };
    let config = kiln_tls::client_config(random, wall_clock, cas, &settings).map_err(tls_error)?;
    let fetch = async {
        let resolver = Resolver::new(
            &stack,
            kiln_tls::entropy::Installed,
            servers,
            Settings::default(),
        )
        .with_search(search)
        .map_err(FetchError::DnsSearch)?;
        let addrs =
            resolver
                .lookup_ip(&target.host)
                .await
                .map_err(|source| FetchError::Resolve {
                    host: target.host.clone(),
                    source,
                })?;
        log::debug!("{} is {addrs:?}", target.host);
        let tcp = connect_any(&stack, &addrs, target.port, CONNECT_TIMEOUT)
            .await
            .map_err(|tried| FetchError::Connect {
                host: target.host.clone(),
                tried,
            })?;
        log::debug!("connected to {}", tcp.peer_addr());
        let name = target.host.trim_start_matches('[').trim_end_matches(']');
        let mut tls = kiln_tls::connect(tcp, &config, name)
            .await
            .map_err(tls_error)?;
        log::debug!("TLS handshake with {name} done, certificate verified");
        http::get(&mut tls, &target).await
    };
    let response = kiln_rt::timeout(DEADLINE, fetch)
        .await
        .map_err(|_| FetchError::TimedOut)??;
    let _ = console.logf(format_args!("status: {}", response.status));
    let _ = console.logf(format_args!(
        "sha256: {}",
        kiln_devices::Digest(response.sha256)
    ));
    let _ = console.logf(format_args!("bytes: {}", response.length));
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::future::pending;
    use core::sync::atomic::{AtomicU64, Ordering};
    use kiln_devices::{Instant, TcpListener, UdpSocket};
    use std::cell::RefCell;

    /// A stack whose connections to 192.0.2.1 are refused, to 192.0.2.2
    /// never answered, to 2001:db8::1 unreachable, and accepted elsewhere;
    /// it records each address asked.
    #[derive(Default)]
    struct Fake {
        asked: RefCell<Vec<SocketAddr>>,
    }

    struct Conn(SocketAddr);

    impl TcpStream for Conn {
        async fn read(&mut self, _: &mut [u8]) -> Result<usize, StackError> {
            Ok(0)
        }
        async fn write(&mut self, buf: &[u8]) -> Result<usize, StackError> {
            Ok(buf.len())
        }
        async fn shutdown(&mut self) -> Result<(), StackError> {
            Ok(())
        }
        fn peer_addr(&self) -> SocketAddr {
            self.0
        }
        fn local_addr(&self) -> SocketAddr {
            self.0
        }
    }

    struct NoListener;

    impl TcpListener for NoListener {
        type Stream = Conn;
        async fn accept(&self) -> Result<(Conn, SocketAddr), StackError> {
            pending().await
        }
        fn local_addr(&self) -> SocketAddr {
            SocketAddr::new([0, 0, 0, 0].into(), 0)
        }
    }

    struct NoSocket;

    impl UdpSocket for NoSocket {
        async fn send_to(&self, _: &[u8], _: SocketAddr) -> Result<(), StackError> {
            Err(StackError::InvalidInput)
        }
        async fn recv_from(&self, _: &mut [u8]) -> Result<(usize, SocketAddr), StackError> {
            pending().await
        }
        fn local_addr(&self) -> SocketAddr {
            SocketAddr::new([0, 0, 0, 0].into(), 0)
        }
    }

    impl Stack for Fake {
        type TcpListener = NoListener;
        type TcpStream = Conn;
        type UdpSocket = NoSocket;

        async fn listen_tcp(&self, _: SocketAddr) -> Result<NoListener, StackError> {
            Err(StackError::InvalidInput)
        }
        async fn connect_tcp(&self, addr: SocketAddr) -> Result<Conn, StackError> {
            self.asked.borrow_mut().push(addr);
            match addr.ip() {
                ip if ip == IpAddr::from([192, 0, 2, 1]) => Err(StackError::ConnectionRefused),
                ip if ip == IpAddr::from([192, 0, 2, 2]) => pending().await,
                IpAddr::V6(_) => Err(StackError::Unreachable),
                _ => Ok(Conn(addr)),
            }
        }
        async fn bind_udp(&self, _: SocketAddr) -> Result<NoSocket, StackError> {
            Err(StackError::InvalidInput)
        }
    }

    /// A clock that jumps to the next timer, so timeouts take no time.
    struct Virtual(AtomicU64);

    impl kiln_rt::Platform for Virtual {
        fn now(&self) -> Instant {
            Instant::from_nanos(self.0.load(Ordering::Relaxed))
        }
        fn wait(&self, deadline: Option<Instant>) {
            let d = deadline.expect("a timer is pending");
            self.0.fetch_max(d.as_nanos(), Ordering::Relaxed);
        }
    }

    fn connect(addrs: &[&str]) -> (Result<SocketAddr, String>, Vec<SocketAddr>) {
        static CLOCK: Virtual = Virtual(AtomicU64::new(0));
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        let stack = Fake::default();
        let result = kiln_rt::block_on(&CLOCK, async {
            connect_any(&stack, &addrs, 443, CONNECT_TIMEOUT).await
        });
        let result = result.map(|c| c.peer_addr()).map_err(|tried| {
            let e = FetchError::Connect {
                host: "site.test".into(),
                tried,
            };
            alloc::format!("{e}")
        });
        (result, stack.asked.into_inner())
    }

    #[test]
    fn every_address_is_tried_until_one_accepts() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        // Refused, unreachable, silent past the timeout: the next each time.
        let (result, asked) = connect(&["192.0.2.1", "2001:db8::1", "192.0.2.2", "192.0.2.9"]);
        assert_eq!(result, Ok(sa("192.0.2.9:443")));
        assert_eq!(
            asked,
            [
                sa("192.0.2.1:443"),
                sa("[2001:db8::1]:443"),
                sa("192.0.2.2:443"),
                sa("192.0.2.9:443")
            ]
        );
        // The first that accepts ends the search.
        let (result, asked) = connect(&["192.0.2.9", "192.0.2.1"]);
        assert_eq!(result, Ok(sa("192.0.2.9:443")));
        assert_eq!(asked.len(), 1);
    }

    #[test]
    fn the_error_lists_every_address_tried() {
        let (result, _) = connect(&["192.0.2.1", "2001:db8::1", "192.0.2.2"]);
        assert_eq!(
            result,
            Err(String::from(
                "cannot connect to site.test: 192.0.2.1:443 (connection refused), \
                 [2001:db8::1]:443 (destination unreachable), 192.0.2.2:443 (timed out)"
            ))
        );
        let (result, _) = connect(&[]);
        assert_eq!(
            result,
            Err(String::from("cannot connect to site.test: no address"))
        );
    }
}
