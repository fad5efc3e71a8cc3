//! A DNS stub resolver over any kiln [`Stack`]: A and AAAA queries over
//! UDP to the configured servers (`--dns=ADDR`, or what DHCP gave), with a
//! timeout per try, retries across servers, and a small cache that honours
//! the answers' TTLs. The same code on every target.
//!
//! [`Resolver::lookup_ip`] asks for A and AAAA at once (RFC 8305 section
//! 3) and returns every address in the order to try them: RFC 6724's
//! destination rules that need no source address (precedence from the
//! default policy table, then the smaller scope), then the families
//! interleaved (RFC 8305 section 4). A name with fewer dots than
//! [`Settings::ndots`] is tried with each search domain
//! ([`Resolver::with_search`]) before it is tried as it is, as
//! resolv.conf(5) does; one with more is tried as it is first; a trailing
//! dot means no search.
//!
//! Queries carry an EDNS(0) OPT record (RFC 6891) advertising
//! [`Settings::edns_payload`] bytes, and UDP replies up to that size are
//! read. A server that answers FORMERR or NOTIMP to it (one that does not
//! know EDNS) is asked again without, and from then on.
//!
//! A truncated UDP reply (the TC bit) is asked again over TCP (RFC 7766:
//! each message behind a two-byte length, one query per connection, a
//! fresh ID), connection and exchange within another
//! [`Settings::timeout`], the reply within [`Settings::tcp_max_reply`]
//! bytes.
//!
//! Negative answers are cached too (RFC 2308): NXDOMAIN (for every record
//! type of the name) and NODATA (for the type asked) are kept for the
//! smaller of the TTL and the MINIMUM field of the SOA record in the
//! reply's authority section, at most [`Settings::negative_max_ttl`]; a
//! negative reply without an SOA record is not cached.
//!
//! The wire format (RFC 1035 section 4) is `simple-dns`'s; this crate
//! chooses what to ask, and checks every reply before it believes it
//! (RFC 5452): the source address is the server asked, the transaction ID
//! (from the random device) and the question match, the response flag is
//! set. Anything else, or anything that does not parse, is dropped and the
//! wait goes on; only if no valid reply came does the malformed one show
//! in the error. (A FORMERR or NOTIMP reply may come without the question,
//! RFC 6891 section 7: the ID and source alone match it, and it only ever
//! makes the resolver ask again.)
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::Future;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::pin::pin;
use core::time::Duration;

use kiln_devices::{Instant, Random, Stack, StackError, TcpStream, UdpSocket as _};
use kiln_rt::Either;
use simple_dns::rdata::{OPT, RData};
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, TYPE};

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
    /// Neither the name nor the name in any search domain has an address:
    /// at least one does not exist or has none, the others' servers failed.
    #[error("`{name}` does not exist (tried {})", Tried(tried))]
    NotFound {
        /// The name looked up.
        name: String,
        /// The names asked, in order, and what each got.
        tried: Vec<(String, DnsError)>,
    },
    /// A search domain is not a valid DNS name.
    #[error("`{0}` is not a valid search domain\nhint: --dns-search=DOMAIN[,DOMAIN...]")]
    InvalidSearch(String),
    /// The name exists but has no address.
    #[error("`{0}` has no address")]
    NoAddress(String),
    /// No server answered within the tries.
    #[error("no answer from the DNS servers")]
    Timeout,
    /// Only replies that do not parse as DNS came back.
    #[error("malformed reply from the DNS server")]
    Malformed,
    /// A reply over TCP had the truncation bit set (RFC 7766 leaves no
    /// further fallback).
    #[error("truncated reply from the DNS server, even over TCP")]
    Truncated,
    /// A reply over TCP announced more bytes than the resolver accepts.
    #[error("DNS reply over TCP of {len} bytes exceeds the limit of {max}")]
    TcpReplyTooLarge {
        /// The length the server announced.
        len: usize,
        /// [`Settings::tcp_max_reply`].
        max: usize,
    },
    /// The server closed the TCP connection before the whole reply came.
    #[error("DNS reply over TCP cut short after {got} of {want} bytes")]
    TcpShortReply {
        /// Bytes read (of the length prefix and the message).
        got: usize,
        /// Bytes expected.
        want: usize,
    },
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

/// The names of a search and their failures, for a message.
struct Tried<'a>(&'a [(String, DnsError)]);

impl core::fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, (name, error)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            match error {
                DnsError::NxDomain(_) => write!(f, "{sep}{name}: NXDOMAIN")?,
                DnsError::NoAddress(_) => write!(f, "{sep}{name}: no address")?,
                DnsError::Server(rcode) => write!(f, "{sep}{name}: response code {rcode}")?,
                other => write!(f, "{sep}{name}: {other}")?,
            }
        }
        Ok(())
    }
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
    /// How long one try waits for a reply over UDP and, after a truncated
    /// one, for the TCP connection and exchange.
    pub timeout: Duration,
    /// Tries per server.
    pub attempts: u32,
    /// Answers kept in the cache.
    pub cache_entries: usize,
    /// The longest time an answer is kept, whatever its TTL.
    pub max_ttl: Duration,
    /// The longest time a negative answer (NXDOMAIN, NODATA) is kept,
    /// whatever its SOA says (RFC 2308 suggests one to three hours; a
    /// stub resolver in front of a cache keeps less). Zero: never.
    pub negative_max_ttl: Duration,
    /// The longest reply read over TCP (after a truncated UDP reply).
    pub tcp_max_reply: usize,
    /// The UDP payload size advertised in an EDNS(0) OPT record, and the
    /// longest UDP reply read (at least 512). Zero: no OPT record. The
    /// default, 1232, is what DNS Flag Day 2020 settled on: a reply that
    /// fits an IPv6 packet on a 1280-byte MTU, never fragmented.
    pub edns_payload: u16,
    /// A name with fewer dots than this is tried with each search domain
    /// first (resolv.conf's `ndots`).
    pub ndots: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: Duration::from_secs(2),
            attempts: 2,
            cache_entries: 64,
            max_ttl: Duration::from_secs(24 * 3600),
            negative_max_ttl: Duration::from_secs(300),
            tcp_max_reply: 16 * 1024,
            edns_payload: 1232,
            ndots: 1,
        }
    }
}

struct Cached {
    name: String,
    kind: Kind,
    /// The records (empty: NODATA), or `None` for NXDOMAIN, which holds
    /// for every kind (RFC 2308 section 5).
    addrs: Option<Vec<IpAddr>>,
    expires: Instant,
}

/// A server's final word on a question.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// The records (empty: NODATA) and how long they may be kept (the
    /// smallest TTL, or the negative TTL for NODATA; zero: not at all).
    Records(Vec<IpAddr>, Duration),
    /// NXDOMAIN, and how long it may be kept.
    NxDomain(Duration),
}

/// How a reply was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Not a reply to this query (does not parse, other ID or question).
    Foreign,
    /// The truncation bit is set: ask over TCP.
    Truncated,
    /// An error response code (SERVFAIL, REFUSED...).
    Failed(u8),
    /// The answer.
    Answer(Answer),
}

/// A stub resolver over the stack `S`, with transaction IDs from `R`.
pub struct Resolver<'s, S, R> {
    stack: &'s S,
    random: R,
    servers: Vec<SocketAddr>,
    settings: Settings,
    search: Vec<String>,
    cache: RefCell<Vec<Cached>>,
    /// The servers that refused EDNS (at most one entry per server).
    no_edns: RefCell<Vec<SocketAddr>>,
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

/// The names to ask for `name` (canonical, `absolute` if it had a trailing
/// dot), in order: `name` in each of `search` first if it has fewer than
/// `ndots` dots, after `name` itself otherwise; `name` alone if absolute.
/// Names that would be too long are left out.
fn candidates(name: &str, absolute: bool, search: &[String], ndots: u8) -> Vec<String> {
    if absolute || search.is_empty() {
        return alloc::vec![String::from(name)];
    }
    let searched = search.iter().filter_map(|domain| {
        let full = alloc::format!("{name}.{domain}");
        (full.len() <= 253).then_some(full)
    });
    let dots = name.bytes().filter(|&b| b == b'.').count();
    if dots < usize::from(ndots) {
        searched.chain([String::from(name)]).collect()
    } else {
        [String::from(name)].into_iter().chain(searched).collect()
    }
}

/// A search list: domains separated by commas (or spaces), as in
/// `--dns-search=a.test,b.test`; empty for an empty string.
pub fn parse_search(s: &str) -> Result<Vec<String>, DnsError> {
    s.split([',', ' '])
        .filter(|d| !d.is_empty())
        .map(|d| canonical(d).ok_or_else(|| DnsError::InvalidSearch(String::from(d))))
        .collect()
}

/// Where RFC 6724's default policy table (section 2.1) puts `addr`:
/// higher is tried first (rule 6).
fn precedence(addr: IpAddr) -> u8 {
    let v6 = match addr {
        IpAddr::V4(_) => return 35,
        IpAddr::V6(v6) => v6,
    };
    if v6.to_ipv4_mapped().is_some() {
        return 35;
    }
    let s = v6.segments();
    match s {
        [0, 0, 0, 0, 0, 0, 0, 1] => 50,
        [0x2002, ..] => 30,
        [0x2001, 0, ..] => 5,
        [first, ..] if first & 0xfe00 == 0xfc00 => 3,
        [0, 0, 0, 0, 0, 0, ..] => 1,
        [first, ..] if first & 0xffc0 == 0xfec0 => 1,
        [0x3ffe, ..] => 1,
        _ => 40,
    }
}

/// The scope of `addr` (RFC 6724 section 3.1, RFC 4291): smaller is tried
/// first (rule 8).
fn scope(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(v4) if v4.is_loopback() || v4.is_link_local() => 2,
        IpAddr::V4(_) => 14,
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() || first & 0xffc0 == 0xfe80 {
                2
            } else if first & 0xffc0 == 0xfec0 {
                5
            } else if first & 0xff00 == 0xff00 {
                (first & 0x000f) as u8
            } else {
                14
            }
        }
    }
}

/// `addrs` in the order to try them: RFC 6724 section 6's rules that need
/// no source address (6, precedence; 8, smaller scope; 10, the server's
/// order otherwise), then the families interleaved, the first address's
/// family first (RFC 8305 section 4).
pub fn order(mut addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    addrs.sort_by_key(|&a| (core::cmp::Reverse(precedence(a)), scope(a)));
    let first_v6 = addrs.first().is_some_and(IpAddr::is_ipv6);
    let (mut first, mut second): (Vec<IpAddr>, Vec<IpAddr>) =
        addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(first.len() + second.len());
    first.reverse();
    second.reverse();
    loop {
        match (first.pop(), second.pop()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// Both futures' outputs, the two run at once.
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    match kiln_rt::select(a.as_mut(), b.as_mut()).await {
        Either::Left(x) => (x, b.await),
        Either::Right(y) => (a.await, y),
    }
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
            search: Vec::new(),
            cache: RefCell::new(Vec::new()),
            no_edns: RefCell::new(Vec::new()),
        }
    }

    /// The resolver with the search list `domains` (see [`parse_search`]
    /// and [`Settings::ndots`]).
    pub fn with_search(mut self, domains: Vec<String>) -> Result<Self, DnsError> {
        self.search = domains
            .iter()
            .map(|d| canonical(d).ok_or_else(|| DnsError::InvalidSearch(d.clone())))
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// The addresses of `host` in the order to try them ([`order`]):
    /// itself if it is an IP address, else its A and AAAA records, of the
    /// first name of the search ([`candidates`]) that has any. A family
    /// whose lookup failed is left out if the other has addresses.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if let Ok(ip) = literal.unwrap_or(host).parse::<IpAddr>() {
            return Ok(alloc::vec![ip]);
        }
        let name = canonical(host).ok_or_else(|| DnsError::InvalidName(String::from(host)))?;
        let names = candidates(
            &name,
            host.ends_with('.'),
            &self.search,
            self.settings.ndots,
        );
        let mut tried = Vec::new();
        for candidate in names {
            match self.lookup_both(&candidate).await {
                Ok(addrs) => return Ok(order(addrs)),
                // Not there, or its server failed (as glibc goes on after
                // SERVFAIL): the next name of the search.
                Err(e @ (DnsError::NxDomain(_) | DnsError::NoAddress(_) | DnsError::Server(_))) => {
                    tried.push((candidate, e))
                }
                // No answer, or one not to be believed, ends the search
                // rather than answer for another name.
                Err(e) => return Err(e),
            }
        }
        let negative = tried
            .iter()
            .any(|(_, e)| matches!(e, DnsError::NxDomain(_) | DnsError::NoAddress(_)));
        if tried.len() > 1 && negative {
            return Err(DnsError::NotFound {
                name: String::from(host),
                tried,
            });
        }
        // One name, or every server failed: the first failure.
        Err(tried
            .into_iter()
            .next()
            .map_or_else(|| DnsError::NoAddress(String::from(host)), |(_, e)| e))
    }

    /// The A and AAAA records of `name`, asked at once; an error if it has
    /// none.
    async fn lookup_both(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let (v4, v6) = both(self.lookup(name, Kind::A), self.lookup(name, Kind::Aaaa)).await;
        match (v4, v6) {
            (Err(e @ DnsError::NxDomain(_)), _) | (_, Err(e @ DnsError::NxDomain(_))) => Err(e),
            (Ok(mut v4), Ok(v6)) => {
                v4.extend(v6);
                if v4.is_empty() {
                    return Err(DnsError::NoAddress(String::from(name)));
                }
                Ok(v4)
            }
            (Ok(addrs), Err(e)) | (Err(e), Ok(addrs)) if addrs.is_empty() => Err(e),
            (Ok(addrs), Err(_)) | (Err(_), Ok(addrs)) => Ok(addrs),
            (Err(e), Err(_)) => Err(e),
        }
    }

    /// The `kind` records of `name` (empty if it has none), from the cache
    /// while their TTL lasts; a cached NXDOMAIN or NODATA answers too.
    pub async fn lookup(&self, name: &str, kind: Kind) -> Result<Vec<IpAddr>, DnsError> {
        let name = canonical(name).ok_or_else(|| DnsError::InvalidName(String::from(name)))?;
        let now = kiln_rt::time::now();
        {
            let mut cache = self.cache.borrow_mut();
            cache.retain(|c| c.expires > now);
            let hit = cache
                .iter()
                .find(|c| c.name == name && (c.kind == kind || c.addrs.is_none()));
            if let Some(c) = hit {
                return c.addrs.clone().ok_or(DnsError::NxDomain(name));
            }
        }
        let (addrs, ttl) = match self.query(&name, kind).await? {
            Answer::Records(addrs, ttl) if addrs.is_empty() => {
                (Some(addrs), ttl.min(self.settings.negative_max_ttl))
            }
            Answer::Records(addrs, ttl) => (Some(addrs), ttl.min(self.settings.max_ttl)),
            Answer::NxDomain(ttl) => (None, ttl.min(self.settings.negative_max_ttl)),
        };
        if !ttl.is_zero() && self.settings.cache_entries > 0 {
            let mut cache = self.cache.borrow_mut();
            if cache.len() >= self.settings.cache_entries
                && let Some(soonest) = (0..cache.len()).min_by_key(|&i| cache[i].expires)
            {
                cache.swap_remove(soonest);
            }
            cache.push(Cached {
                name: name.clone(),
                kind,
                addrs: addrs.clone(),
                expires: kiln_rt::time::now() + ttl,
            });
        }
        addrs.ok_or(DnsError::NxDomain(name))
    }

    /// Asks the servers until one answers.
    async fn query(&self, name: &str, kind: Kind) -> Result<Answer, DnsError> {
        if self.servers.is_empty() {
            return Err(DnsError::NoServer);
        }
        let mut last = DnsError::Timeout;
        for _ in 0..self.settings.attempts.max(1) {
            for &server in &self.servers {
                match self.ask(server, name, kind).await {
                    // An answer, NXDOMAIN too, is authoritative: no other
                    // server is asked.
                    Ok(answer) => return Ok(answer),
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

    /// A query for `name` and `kind` with a fresh random ID, with an OPT
    /// record if `edns`.
    fn query_bytes(&self, name: &str, kind: Kind, edns: bool) -> Result<(u16, Vec<u8>), DnsError> {
        let id = (self.random.next_u64().map_err(DnsError::Random)? & 0xffff) as u16;
        let payload = edns.then_some(self.settings.edns_payload);
        Ok((id, build_query(id, name, kind, payload)?))
    }

    /// One try at one server: over UDP (again without EDNS if the server
    /// does not know it), and over TCP if the UDP reply was truncated.
    async fn ask(&self, server: SocketAddr, name: &str, kind: Kind) -> Result<Answer, DnsError> {
        let mut edns = self.settings.edns_payload > 0 && !self.no_edns.borrow().contains(&server);
        let mut verdict = self.ask_udp(server, name, kind, edns).await?;
        if edns && let Verdict::Failed(rcode @ (FORMERR | NOTIMP)) = verdict {
            // RFC 6891 section 7: a server that does not know EDNS answers
            // FORMERR (or NOTIMP). If it answers otherwise without, it is
            // asked without from now on.
            edns = false;
            verdict = self.ask_udp(server, name, kind, edns).await?;
            let mut no_edns = self.no_edns.borrow_mut();
            if verdict != Verdict::Failed(rcode) && !no_edns.contains(&server) {
                no_edns.push(server);
            }
        }
        let verdict = match verdict {
            Verdict::Truncated => {
                let exchange = self.ask_tcp(server, name, kind, edns);
                match kiln_rt::timeout(self.settings.timeout, exchange).await {
                    Ok(verdict) => verdict?,
                    Err(_) => return Err(DnsError::Timeout),
                }
            }
            verdict => verdict,
        };
        match verdict {
            Verdict::Answer(answer) => Ok(answer),
            Verdict::Failed(rcode) => Err(DnsError::Server(rcode)),
            Verdict::Truncated => Err(DnsError::Truncated),
            Verdict::Foreign => Err(DnsError::Malformed),
        }
    }

    /// The query over UDP, with an OPT record if `edns`: the first reply
    /// that matches, judged.
    async fn ask_udp(
        &self,
        server: SocketAddr,
        name: &str,
        kind: Kind,
        edns: bool,
    ) -> Result<Verdict, DnsError> {
        let (id, bytes) = self.query_bytes(name, kind, edns)?;
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
            // A reply longer than advertised is cut short here and does not
            // parse.
            let mut buf = alloc::vec![0u8; usize::from(self.settings.edns_payload).max(512)];
            loop {
                let (n, from) = match socket.recv_from(&mut buf).await {
                    Ok(r) => r,
                    Err(e) => return Err(DnsError::Stack(e)),
                };
                if from != server {
                    continue;
                }
                match check(buf.get(..n).unwrap_or(&buf), id, name, kind) {
                    Verdict::Foreign => malformed = true,
                    verdict => return Ok(verdict),
                }
            }
        };
        match kiln_rt::timeout(self.settings.timeout, wait).await {
            Ok(result) => result,
            Err(_) if malformed => Err(DnsError::Malformed),
            Err(_) => Err(DnsError::Timeout),
        }
    }

    /// The query over a TCP connection of its own (RFC 7766).
    async fn ask_tcp(
        &self,
        server: SocketAddr,
        name: &str,
        kind: Kind,
        edns: bool,
    ) -> Result<Verdict, DnsError> {
        let (id, bytes) = self.query_bytes(name, kind, edns)?;
        let mut stream = self
            .stack
            .connect_tcp(server)
            .await
            .map_err(DnsError::Stack)?;
        let reply = exchange_tcp(&mut stream, &bytes, self.settings.tcp_max_reply).await?;
        Ok(check(&reply, id, name, kind))
    }
}

/// The query `id` for `name` and `kind`, with an OPT record advertising
/// `edns_payload` bytes if given.
fn build_query(
    id: u16,
    name: &str,
    kind: Kind,
    edns_payload: Option<u16>,
) -> Result<Vec<u8>, DnsError> {
    let mut query = Packet::new_query(id);
    query.set_flags(PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).map_err(|_| DnsError::InvalidName(String::from(name)))?;
    query.questions.push(Question::new(
        qname,
        QTYPE::TYPE(kind.qtype()),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    if let Some(udp_packet_size) = edns_payload {
        // Version 0, no options, the DO bit clear: simple-dns writes the
        // OPT record's TTL as zero for these.
        *query.opt_mut() = Some(OPT {
            opt_codes: Vec::new(),
            udp_packet_size,
            version: 0,
        });
    }
    query
        .build_bytes_vec()
        .map_err(|_| DnsError::InvalidName(String::from(name)))
}

/// Sends `query` behind its two-byte length on `stream` and reads the
/// reply the same way, refusing one longer than `max` bytes.
async fn exchange_tcp<T: TcpStream>(
    stream: &mut T,
    query: &[u8],
    max: usize,
) -> Result<Vec<u8>, DnsError> {
    let len =
        u16::try_from(query.len()).map_err(|_| DnsError::Stack(StackError::MessageTooLarge))?;
    let mut message = Vec::with_capacity(2 + query.len());
    message.extend_from_slice(&len.to_be_bytes());
    message.extend_from_slice(query);
    stream.write_all(&message).await.map_err(DnsError::Stack)?;
    let mut prefix = [0u8; 2];
    read_exact(stream, &mut prefix, 0, 2).await?;
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > max {
        return Err(DnsError::TcpReplyTooLarge { len, max });
    }
    let mut reply = alloc::vec![0u8; len];
    read_exact(stream, &mut reply, 2, 2 + len).await?;
    Ok(reply)
}

/// Fills `buf`; a close before is a short reply of `before + read` of
/// `want` bytes.
async fn read_exact<T: TcpStream>(
    stream: &mut T,
    buf: &mut [u8],
    before: usize,
    want: usize,
) -> Result<(), DnsError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match stream.read(rest).await.map_err(DnsError::Stack)? {
            0 => {
                return Err(DnsError::TcpShortReply {
                    got: before + filled,
                    want,
                });
            }
            n => filled += n.min(rest.len()),
        }
    }
    Ok(())
}

/// How long a negative reply may be kept (RFC 2308 section 5): the smaller
/// of the TTL and the MINIMUM of the authority section's SOA record, or
/// zero without one.
fn negative_ttl(packet: &Packet<'_>) -> Duration {
    let ttl = packet
        .name_servers
        .iter()
        .filter_map(|record| match &record.rdata {
            RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
            _ => None,
        })
        .min()
        .unwrap_or(0);
    Duration::from_secs(u64::from(ttl))
}

/// Response code 1: the server could not read the query.
const FORMERR: u8 = 1;
/// Response code 4: the server does not do what the query asks.
const NOTIMP: u8 = 4;

/// How `reply` answers the query `id` for `name` and `kind`.
fn check(reply: &[u8], id: u16, name: &str, kind: Kind) -> Verdict {
    let Ok(packet) = Packet::parse(reply) else {
        return Verdict::Foreign;
    };
    if packet.id() != id || !packet.has_flags(PacketFlag::RESPONSE) {
        return Verdict::Foreign;
    }
    // The header's four bits: simple-dns reads an OPT record's extended
    // response code from the wrong bits of its TTL (version 0 queries
    // never get one that matters).
    let rcode = reply.get(3).map_or(0, |b| b & 0x0f);
    let Some(question) = packet.questions.first() else {
        // A server that does not know EDNS may answer FORMERR without the
        // question (RFC 6891 section 7).
        if packet.questions.is_empty() && matches!(rcode, FORMERR | NOTIMP) {
            return Verdict::Failed(rcode);
        }
        return Verdict::Foreign;
    };
    let asked = question.qname.to_string();
    let asked = asked.strip_suffix('.').unwrap_or(&asked);
    if packet.questions.len() != 1
        || !asked.eq_ignore_ascii_case(name)
        || question.qtype != QTYPE::TYPE(kind.qtype())
    {
        return Verdict::Foreign;
    }
    if packet.has_flags(PacketFlag::TRUNCATION) {
        return Verdict::Truncated;
    }
    match rcode {
        0 => {}
        3 => return Verdict::Answer(Answer::NxDomain(negative_ttl(&packet))),
        other => return Verdict::Failed(other),
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
    let ttl = if addrs.is_empty() {
        negative_ttl(&packet)
    } else {
        Duration::from_secs(u64::from(ttl))
    };
    Verdict::Answer(Answer::Records(addrs, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use core::future::Future;
    use core::pin::pin;
    use core::task::{Context, Poll, Waker};

    /// A reply to a query for `a.example.test` (ID 0x1234, type `qtype`)
    /// with `rcode`, the A records `answers` (TTL 60) and, if given, an
    /// SOA record with this TTL and MINIMUM in the authority section,
    /// written by hand (RFC 1035 4.1).
    fn reply(qtype: u8, rcode: u8, answers: &[[u8; 4]], soa: Option<(u32, u32)>) -> Vec<u8> {
        let mut r = alloc::vec![0x12, 0x34, 0x81, 0x80 | rcode, 0, 1];
        r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        r.extend_from_slice(&[0, u8::from(soa.is_some()), 0, 0]);
        r.extend_from_slice(b"\x01a\x07example\x04test\x00");
        r.extend_from_slice(&[0, qtype, 0, 1]);
        for a in answers {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            r.extend_from_slice(a);
        }
        if let Some((ttl, minimum)) = soa {
            // Owner example.test (offset 14), SOA, IN.
            r.extend_from_slice(&[0xc0, 14, 0, 6, 0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            let mut rdata = b"\x02ns\xc0\x0e\x05admin\xc0\x0e".to_vec();
            for field in [2026u32, 3600, 600, 86400, minimum] {
                rdata.extend_from_slice(&field.to_be_bytes());
            }
            r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            r.extend_from_slice(&rdata);
        }
        r
    }

    const NAME: &str = "a.example.test";

    #[test]
    fn answers_carry_their_ttls() {
        let r = reply(1, 0, &[[192, 0, 2, 1], [192, 0, 2, 2]], None);
        let want = alloc::vec![IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2])];
        assert_eq!(
            check(&r, 0x1234, NAME, Kind::A),
            Verdict::Answer(Answer::Records(want, Duration::from_secs(60)))
        );
        assert_eq!(check(&r, 0x4321, NAME, Kind::A), Verdict::Foreign);
        assert_eq!(
            check(&r, 0x1234, "b.example.test", Kind::A),
            Verdict::Foreign
        );
        assert_eq!(check(&r, 0x1234, NAME, Kind::Aaaa), Verdict::Foreign);
    }

    #[test]
    fn negative_answers_last_as_long_as_their_soa_says() {
        // NXDOMAIN: the smaller of the SOA's TTL and its MINIMUM.
        for (ttl, minimum, want) in [(900, 30, 30), (20, 3600, 20)] {
            let r = reply(1, 3, &[], Some((ttl, minimum)));
            assert_eq!(
                check(&r, 0x1234, NAME, Kind::A),
                Verdict::Answer(Answer::NxDomain(Duration::from_secs(want)))
            );
        }
        // NODATA (no error, no AAAA record).
        let r = reply(28, 0, &[], Some((900, 45)));
        assert_eq!(
            check(&r, 0x1234, NAME, Kind::Aaaa),
            Verdict::Answer(Answer::Records(Vec::new(), Duration::from_secs(45)))
        );
        // Without an SOA record: not to be cached.
        for (qtype, rcode, kind) in [(1, 3, Kind::A), (28, 0, Kind::Aaaa)] {
            let expect = if rcode == 3 {
                Answer::NxDomain(Duration::ZERO)
            } else {
                Answer::Records(Vec::new(), Duration::ZERO)
            };
            let r = reply(qtype, rcode, &[], None);
            assert_eq!(check(&r, 0x1234, NAME, kind), Verdict::Answer(expect));
        }
    }

    #[test]
    fn truncated_and_failed_replies_are_told_apart() {
        let mut r = reply(1, 0, &[], None);
        r[2] |= 0x02; // TC
        assert_eq!(check(&r, 0x1234, NAME, Kind::A), Verdict::Truncated);
        let r = reply(1, 2, &[], None);
        assert_eq!(check(&r, 0x1234, NAME, Kind::A), Verdict::Failed(2));
        // Every prefix of a valid reply is foreign, never a panic.
        let r = reply(1, 3, &[], Some((60, 60)));
        for n in 0..r.len() {
            assert_eq!(
                check(&r[..n], 0x1234, NAME, Kind::A),
                Verdict::Foreign,
                "{n}"
            );
        }
    }

    /// One scripted read: bytes, or an error.
    type Read<'a> = Result<&'a [u8], StackError>;

    /// A TCP connection playing back scripted reads.
    struct Scripted {
        reads: VecDeque<Result<Vec<u8>, StackError>>,
        written: Vec<u8>,
    }

    impl Scripted {
        fn new(reads: &[Result<&[u8], StackError>]) -> Self {
            Scripted {
                reads: reads.iter().map(|r| r.map(<[u8]>::to_vec)).collect(),
                written: Vec::new(),
            }
        }
    }

    impl TcpStream for Scripted {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, StackError> {
            let Some(next) = self.reads.pop_front() else {
                return Ok(0);
            };
            let mut chunk = next?;
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.reads.push_front(Ok(chunk.split_off(n)));
            }
            Ok(n)
        }
        async fn write(&mut self, buf: &[u8]) -> Result<usize, StackError> {
            // A byte at a time: the framing must not assume one write.
            self.written.push(buf[0]);
            Ok(1)
        }
        async fn shutdown(&mut self) -> Result<(), StackError> {
            Ok(())
        }
        fn peer_addr(&self) -> SocketAddr {
            (Ipv4Addr::LOCALHOST, 53).into()
        }
        fn local_addr(&self) -> SocketAddr {
            (Ipv4Addr::LOCALHOST, 40000).into()
        }
    }

    /// Runs a future that never waits (the scripted stream's).
    fn now<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("the scripted stream never waits"),
        }
    }

    #[test]
    fn tcp_messages_are_framed_by_their_length() {
        let body = reply(1, 0, &[[192, 0, 2, 9]], None);
        let mut framed = (body.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        // The reply in one piece, and a byte at a time.
        let pieces: Vec<Result<&[u8], StackError>> = framed.chunks(1).map(Ok).collect();
        for reads in [alloc::vec![Ok(&framed[..])], pieces] {
            let mut stream = Scripted::new(&reads);
            let got = now(exchange_tcp(&mut stream, b"query", 512));
            assert_eq!(got.as_deref(), Ok(&body[..]));
            assert_eq!(stream.written, b"\x00\x05query");
        }
    }

    #[test]
    fn hostile_tcp_replies_are_typed_errors() {
        let cases: [(&[Read<'_>], DnsError); 5] = [
            (
                &[Ok(b"\xff\xff")],
                DnsError::TcpReplyTooLarge {
                    len: 65535,
                    max: 512,
                },
            ),
            (&[], DnsError::TcpShortReply { got: 0, want: 2 }),
            (&[Ok(b"\x00")], DnsError::TcpShortReply { got: 1, want: 2 }),
            (
                &[Ok(b"\x00\x20"), Ok(b"0123456789")],
                DnsError::TcpShortReply { got: 12, want: 34 },
            ),
            (
                &[Ok(b"\x00\x20\x01"), Err(StackError::ConnectionReset)],
                DnsError::Stack(StackError::ConnectionReset),
            ),
        ];
        for (reads, want) in cases {
            let mut stream = Scripted::new(reads);
            assert_eq!(now(exchange_tcp(&mut stream, b"q", 512)), Err(want));
        }
    }

    #[test]
    fn names_are_checked_and_lowercased() {
        assert_eq!(canonical("Example.ORG.").as_deref(), Some("example.org"));
        for bad in ["", ".", "a..b", "a b", "-\u{e9}", &"x".repeat(64)] {
            assert_eq!(canonical(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn queries_advertise_the_edns_payload() {
        let plain = build_query(0x1234, NAME, Kind::A, None).unwrap();
        let edns = build_query(0x1234, NAME, Kind::A, Some(1232)).unwrap();
        // ARCOUNT 1, then the OPT record (RFC 6891 6.1.2): the root name,
        // type 41, the payload size as its class, a zero TTL (extended
        // RCODE, version 0, DO clear), no options.
        assert_eq!(&plain[10..12], [0, 0]);
        assert_eq!(&edns[10..12], [0, 1]);
        assert_eq!(&edns[..10], &plain[..10]);
        assert_eq!(&edns[12..plain.len()], &plain[12..]);
        assert_eq!(
            &edns[plain.len()..],
            [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]
        );
    }

    /// [`reply`] with an OPT record (payload 1232, DO set) in its
    /// additional section, as an EDNS server sends it.
    fn with_opt(mut r: Vec<u8>) -> Vec<u8> {
        r[11] += 1; // ARCOUNT
        r.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
        r
    }

    #[test]
    fn edns_replies_are_read_like_any_other() {
        let r = with_opt(reply(1, 0, &[[192, 0, 2, 1]], None));
        assert_eq!(
            check(&r, 0x1234, NAME, Kind::A),
            Verdict::Answer(Answer::Records(
                alloc::vec![IpAddr::from([192, 0, 2, 1])],
                Duration::from_secs(60)
            ))
        );
        let r = with_opt(reply(1, 3, &[], Some((60, 30))));
        assert_eq!(
            check(&r, 0x1234, NAME, Kind::A),
            Verdict::Answer(Answer::NxDomain(Duration::from_secs(30)))
        );
    }

    #[test]
    fn formerr_without_the_question_is_a_failure_of_this_query() {
        // RFC 6891 section 7: a server without EDNS may answer the header
        // alone. FORMERR and NOTIMP so are this query's (by ID); any other
        // reply without the question is not.
        for (rcode, want) in [
            (1, Verdict::Failed(1)),
            (4, Verdict::Failed(4)),
            (0, Verdict::Foreign),
            (2, Verdict::Foreign),
        ] {
            let r = [0x12, 0x34, 0x81, 0x80 | rcode, 0, 0, 0, 0, 0, 0, 0, 0];
            assert_eq!(check(&r, 0x1234, NAME, Kind::A), want, "{rcode}");
            assert_eq!(check(&r, 0x1235, NAME, Kind::A), Verdict::Foreign);
        }
        // With the question, FORMERR is a failure as before.
        let r = reply(1, 1, &[], None);
        assert_eq!(check(&r, 0x1234, NAME, Kind::A), Verdict::Failed(1));
    }

    #[test]
    fn the_search_list_comes_first_below_ndots() {
        let search = [String::from("a.test"), String::from("b.test")];
        let names = |name, absolute, ndots| candidates(name, absolute, &search, ndots);
        assert_eq!(names("www", false, 1), ["www.a.test", "www.b.test", "www"]);
        assert_eq!(
            names("www.c", false, 1),
            ["www.c", "www.c.a.test", "www.c.b.test"]
        );
        assert_eq!(
            names("www.c", false, 2),
            ["www.c.a.test", "www.c.b.test", "www.c"]
        );
        // A trailing dot: the name alone.
        assert_eq!(names("www", true, 1), ["www"]);
        // No search list: the name alone, whatever ndots.
        assert_eq!(candidates("www", false, &[], 5), ["www"]);
        // A name too long with a domain is not tried with it.
        let long = alloc::vec!["x".repeat(61); 4].join(".");
        assert_eq!(names(&long, false, 9), [long]);
    }

    #[test]
    fn search_lists_are_checked() {
        assert_eq!(
            parse_search("A.test, b.test.,"),
            Ok(alloc::vec![String::from("a.test"), String::from("b.test")])
        );
        assert_eq!(parse_search(""), Ok(Vec::new()));
        assert_eq!(
            parse_search("a.test,bad..name"),
            Err(DnsError::InvalidSearch(String::from("bad..name")))
        );
    }

    #[test]
    fn addresses_are_ordered_by_rfc_6724_and_interleaved() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let ips = |s: &[&str]| s.iter().map(|a| ip(a)).collect::<Vec<_>>();
        // Global IPv6 before IPv4, then the families alternate, each in
        // the server's order.
        assert_eq!(
            order(ips(&[
                "192.0.2.1",
                "192.0.2.2",
                "192.0.2.3",
                "2001:db8::1",
                "2001:db8::2"
            ])),
            ips(&[
                "2001:db8::1",
                "192.0.2.1",
                "2001:db8::2",
                "192.0.2.2",
                "192.0.2.3"
            ])
        );
        // Unique local (precedence 3) and Teredo (5) after IPv4 (35), 6to4
        // (30) too; loopback (50) first.
        assert_eq!(
            order(ips(&["fd00::1", "2001::1", "2002::1", "192.0.2.1", "::1"])),
            ips(&["::1", "192.0.2.1", "2002::1", "2001::1", "fd00::1"])
        );
        // Within a precedence, the smaller scope first.
        assert_eq!(
            order(ips(&["192.0.2.1", "169.254.0.1"])),
            ips(&["169.254.0.1", "192.0.2.1"])
        );
        assert_eq!(order(Vec::new()), Vec::<IpAddr>::new());
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
