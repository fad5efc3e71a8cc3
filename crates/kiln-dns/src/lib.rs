//! A DNS stub resolver over any kiln [`Stack`]: A and AAAA queries over
//! UDP to the configured servers (`--dns=ADDR`, or what DHCP gave), with a
//! timeout per try, retries across servers, and a small cache that honours
//! the answers' TTLs. The same code on every target.
//!
//! The wire format (RFC 1035 section 4) is `simple-dns`'s; this crate
//! chooses what to ask, and checks every reply before it believes it
//! (RFC 5452): the source address is the server asked, the transaction ID
//! (from the random device) and the question match, the response flag is
//! set. Anything else, or anything that does not parse, is dropped and the
//! wait goes on; only if no valid reply came does the malformed one show
//! in the error.
//!
//! Not supported yet: TCP fallback for truncated replies (a truncated
//! reply is [`DnsError::Truncated`]), negative caching, search domains.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use kiln_devices::{Instant, Random, Stack, StackError, UdpSocket as _};
use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};

/// Why a name could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// No DNS server is configured.
    #[error("no DNS server configured\nhint: pass --dns=ADDR")]
    NoServer,
    /// The name is not a valid DNS name.
    #[error("`{0}` is not a valid DNS name")]
    InvalidName(String),
    /// The name does not exist (NXDOMAIN).
    #[error("`{0}` does not exist (NXDOMAIN)")]
    NxDomain(String),
    /// The name exists but has no address.
    #[error("`{0}` has no address")]
    NoAddress(String),
    /// No server answered within the tries.
    #[error("no answer from the DNS servers")]
    Timeout,
    /// Only replies that do not parse as DNS came back.
    #[error("malformed reply from the DNS server")]
    Malformed,
    /// The reply was truncated (it needs TCP, which this resolver lacks).
    #[error("truncated reply from the DNS server")]
    Truncated,
    /// Every server failed with this response code (SERVFAIL, REFUSED...).
    #[error("the DNS server failed (response code {0})")]
    Server(u8),
    /// The stack failed.
    #[error("network: {0}")]
    Stack(StackError),
    /// The random device failed (transaction IDs).
    #[error("no random transaction ID: {0}")]
    Random(kiln_devices::RandomError),
}

/// A record type the resolver asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
}

impl Kind {
    fn qtype(self) -> TYPE {
        match self {
            Kind::A => TYPE::A,
            Kind::Aaaa => TYPE::AAAA,
        }
    }
}

/// The resolver's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long one try waits for a reply.
    pub timeout: Duration,
    /// Tries per server.
    pub attempts: u32,
    /// Answers kept in the cache.
    pub cache_entries: usize,
    /// The longest time an answer is kept, whatever its TTL.
    pub max_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: Duration::from_secs(2),
            attempts: 2,
            cache_entries: 64,
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

struct Cached {
    name: String,
    kind: Kind,
    addrs: Vec<IpAddr>,
    expires: Instant,
}

/// A stub resolver over the stack `S`, with transaction IDs from `R`.
pub struct Resolver<'s, S, R> {
    stack: &'s S,
    random: R,
    servers: Vec<SocketAddr>,
    settings: Settings,
    cache: RefCell<Vec<Cached>>,
}

/// A DNS name, lowercased, without a trailing dot; `None` if invalid.
fn canonical(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| name.to_ascii_lowercase())
}

/// A server address: an IP address with an optional port (53 by default).
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

impl<'s, S: Stack, R: Random> Resolver<'s, S, R> {
    /// A resolver asking `servers` in order.
    pub fn new(stack: &'s S, random: R, servers: Vec<SocketAddr>, settings: Settings) -> Self {
        Resolver {
            stack,
            random,
            servers,
            settings,
            cache: RefCell::new(Vec::new()),
        }
    }

    /// The addresses of `host`: itself if it is an IP address, else its A
    /// records, or its AAAA records if it has no A record.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if let Ok(ip) = literal.unwrap_or(host).parse::<IpAddr>() {
            return Ok(alloc::vec![ip]);
        }
        let v4 = self.lookup(host, Kind::A).await?;
        if !v4.is_empty() {
            return Ok(v4);
        }
        let v6 = self.lookup(host, Kind::Aaaa).await?;
        if v6.is_empty() {
            return Err(DnsError::NoAddress(String::from(host)));
        }
        Ok(v6)
    }

    /// The `kind` records of `name` (empty if it has none), from the cache
    /// while their TTL lasts.
    pub async fn lookup(&self, name: &str, kind: Kind) -> Result<Vec<IpAddr>, DnsError> {
        let name = canonical(name).ok_or_else(|| DnsError::InvalidName(String::from(name)))?;
        let now = kiln_rt::time::now();
        {
            let mut cache = self.cache.borrow_mut();
            cache.retain(|c| c.expires > now);
            if let Some(c) = cache.iter().find(|c| c.name == name && c.kind == kind) {
                return Ok(c.addrs.clone());
            }
        }
        let (addrs, ttl) = self.query(&name, kind).await?;
        let ttl = ttl.min(self.settings.max_ttl);
        if !ttl.is_zero() && self.settings.cache_entries > 0 {
            let mut cache = self.cache.borrow_mut();
            if cache.len() >= self.settings.cache_entries
                && let Some(soonest) = (0..cache.len()).min_by_key(|&i| cache[i].expires)
            {
                cache.swap_remove(soonest);
            }
            cache.push(Cached {
                name,
                kind,
                addrs: addrs.clone(),
                expires: kiln_rt::time::now() + ttl,
            });
        }
        Ok(addrs)
    }

    /// Asks the servers; the records and the smallest TTL among them.
    async fn query(&self, name: &str, kind: Kind) -> Result<(Vec<IpAddr>, Duration), DnsError> {
        if self.servers.is_empty() {
            return Err(DnsError::NoServer);
        }
        let mut last = DnsError::Timeout;
        for _ in 0..self.settings.attempts.max(1) {
            for &server in &self.servers {
                match self.ask(server, name, kind).await {
                    Ok(answer) => return Ok(answer),
                    // The answer is authoritative: no other server is asked.
                    Err(e @ (DnsError::NxDomain(_) | DnsError::Truncated)) => return Err(e),
                    Err(e @ DnsError::Random(_)) => return Err(e),
                    Err(e) => {
                        // A reply of any kind says more than a timeout.
                        if last == DnsError::Timeout || e != DnsError::Timeout {
                            last = e;
                        }
                    }
                }
            }
        }
        Err(last)
    }

    /// One try at one server.
    async fn ask(
        &self,
        server: SocketAddr,
        name: &str,
        kind: Kind,
    ) -> Result<(Vec<IpAddr>, Duration), DnsError> {
        let id = (self.random.next_u64().map_err(DnsError::Random)? & 0xffff) as u16;
        let mut query = Packet::new_query(id);
        query.set_flags(PacketFlag::RECURSION_DESIRED);
        let qname = Name::new(name).map_err(|_| DnsError::InvalidName(String::from(name)))?;
        query.questions.push(Question::new(
            qname,
            QTYPE::TYPE(kind.qtype()),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        let bytes = query
            .build_bytes_vec()
            .map_err(|_| DnsError::InvalidName(String::from(name)))?;
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = self.stack.bind_udp(local).await.map_err(DnsError::Stack)?;
        socket
            .send_to(&bytes, server)
            .await
            .map_err(DnsError::Stack)?;
        let mut malformed = false;
        let wait = async {
            let mut buf = alloc::vec![0u8; 1500];
            loop {
                let (n, from) = match socket.recv_from(&mut buf).await {
                    Ok(r) => r,
                    Err(e) => return Err(DnsError::Stack(e)),
                };
                if from != server {
                    continue;
                }
                match check(&buf[..n], id, name, kind) {
                    Some(result) => return result,
                    None => malformed = true,
                }
            }
        };
        match kiln_rt::timeout(self.settings.timeout, wait).await {
            Ok(result) => result,
            Err(_) if malformed => Err(DnsError::Malformed),
            Err(_) => Err(DnsError::Timeout),
        }
    }
}

/// The answer in `reply` to the query `id` for `name` and `kind`, or
/// `None` if the reply is not one (does not parse, other ID or question).
fn check(
    reply: &[u8],
    id: u16,
    name: &str,
    kind: Kind,
) -> Option<Result<(Vec<IpAddr>, Duration), DnsError>> {
    let packet = Packet::parse(reply).ok()?;
    if packet.id() != id || !packet.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    let question = packet.questions.first()?;
    let asked = question.qname.to_string();
    let asked = asked.strip_suffix('.').unwrap_or(&asked);
    if packet.questions.len() != 1
        || !asked.eq_ignore_ascii_case(name)
        || question.qtype != QTYPE::TYPE(kind.qtype())
    {
        return None;
    }
    if packet.has_flags(PacketFlag::TRUNCATION) {
        return Some(Err(DnsError::Truncated));
    }
    match packet.rcode() {
        RCODE::NoError => {}
        RCODE::NameError => return Some(Err(DnsError::NxDomain(String::from(name)))),
        other => return Some(Err(DnsError::Server(other as u8))),
    }
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for record in &packet.answers {
        let addr = match (&record.rdata, kind) {
            (RData::A(a), Kind::A) => IpAddr::V4(Ipv4Addr::from(a.address)),
            (RData::AAAA(a), Kind::Aaaa) => IpAddr::V6(Ipv6Addr::from(a.address)),
            _ => continue,
        };
        ttl = ttl.min(record.ttl);
        addrs.push(addr);
    }
    let ttl = if addrs.is_empty() { 0 } else { ttl };
    Some(Ok((addrs, Duration::from_secs(u64::from(ttl)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_lowercased() {
        assert_eq!(canonical("Example.ORG.").as_deref(), Some("example.org"));
        for bad in ["", ".", "a..b", "a b", "-\u{e9}", &"x".repeat(64)] {
            assert_eq!(canonical(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn servers_default_to_port_53() {
        assert_eq!(
            parse_server("10.0.0.1"),
            Some("10.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_server("[::1]:5353"),
            Some("[::1]:5353".parse().unwrap())
        );
        assert_eq!(parse_server("resolver"), None);
    }
}
