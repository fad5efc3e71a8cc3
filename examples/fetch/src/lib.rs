//! An HTTPS client unikernel: parses an `https://` URL, resolves its host
//! (`kiln-dns`), connects, verifies the server's certificate chain, name and
//! validity against CA roots read from a store (`kiln-tls`), sends one
//! `GET`, and prints the response's status and the SHA-256 of its body.
//! Any failure (DNS, TCP, a certificate that does not verify, a truncated
//! body) is an error: exit status 1.
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
use core::net::SocketAddr;
use core::time::Duration;

use kiln_devices::{Console, KvRo, Random, Stack, StackError, WallClock};
use kiln_dns::{DnsError, Resolver, Settings};
use kiln_tls::{ClientSettings, TlsError};

/// How long to wait for the network's DNS servers (a DHCP lease).
pub const DNS_CONFIG_WAIT: Duration = Duration::from_secs(10);

/// How long the whole fetch may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Why the fetch failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// The URL is not `https://HOST[:PORT]/PATH`.
    #[error("invalid URL `{0}`\nhint: --url=https://HOST[:PORT]/PATH")]
    Url(String),
    /// `--dns` is not an address.
    #[error("invalid DNS server `{0}`\nhint: --dns=ADDR or --dns=ADDR:PORT")]
    DnsServer(String),
    /// The host could not be resolved.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        source: DnsError,
    },
    /// No TCP connection to the server.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        source: StackError,
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
    log::debug!("DNS servers: {servers:?}");
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
        );
        let addrs =
            resolver
                .lookup_ip(&target.host)
                .await
                .map_err(|source| FetchError::Resolve {
                    host: target.host.clone(),
                    source,
                })?;
        log::debug!("{} is {addrs:?}", target.host);
        let addr = SocketAddr::new(addrs[0], target.port);
        let tcp = stack
            .connect_tcp(addr)
            .await
            .map_err(|source| FetchError::Connect { addr, source })?;
        log::debug!("connected to {addr}");
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
