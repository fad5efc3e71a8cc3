//! A DNS stub resolver over any kiln [`Stack`]: A and AAAA queries over
//! UDP to the configured servers (`--dns=ADDR`, or what DHCP gave), with a
//! timeout per try, retries across servers, and a small cache that honours
//! the answers' TTLs. The same code on every target.
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
//! in the error.
//!
//! Not supported yet: search domains, EDNS(0) (UDP replies stay within
//! 512 bytes; longer ones come over TCP).
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use kiln_devices::{Instant, Random, Stack, StackError, TcpStream, UdpSocket as _};
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

    /// A query for `name` and `kind` with a fresh random ID.
    fn query_bytes(&self, name: &str, kind: Kind) -> Result<(u16, Vec<u8>), DnsError> {
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
        Ok((id, bytes))
    }

    /// One try at one server: over UDP, and over TCP if the UDP reply
    /// was truncated.
    async fn ask(&self, server: SocketAddr, name: &str, kind: Kind) -> Result<Answer, DnsError> {
        let (id, bytes) = self.query_bytes(name, kind)?;
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
                    Verdict::Foreign => malformed = true,
                    verdict => return Ok(verdict),
                }
            }
        };
        let verdict = match kiln_rt::timeout(self.settings.timeout, wait).await {
            Ok(result) => result?,
            Err(_) if malformed => return Err(DnsError::Malformed),
            Err(_) => return Err(DnsError::Timeout),
        };
        drop(socket);
        let verdict = match verdict {
            Verdict::Truncated => {
                let exchange = self.ask_tcp(server, name, kind);
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

    /// The query over a TCP connection of its own (RFC 7766).
    async fn ask_tcp(
        &self,
        server: SocketAddr,
        name: &str,
        kind: Kind,
    ) -> Result<Verdict, DnsError> {
        let (id, bytes) = self.query_bytes(name, kind)?;
        let mut stream = self
            .stack
            .connect_tcp(server)
            .await
            .map_err(DnsError::Stack)?;
        let reply = exchange_tcp(&mut stream, &bytes, self.settings.tcp_max_reply).await?;
        Ok(check(&reply, id, name, kind))
    }
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

/// How `reply` answers the query `id` for `name` and `kind`.
fn check(reply: &[u8], id: u16, name: &str, kind: Kind) -> Verdict {
    let Ok(packet) = Packet::parse(reply) else {
        return Verdict::Foreign;
    };
    if packet.id() != id || !packet.has_flags(PacketFlag::RESPONSE) {
        return Verdict::Foreign;
    }
    let Some(question) = packet.questions.first() else {
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
    match packet.rcode() {
        RCODE::NoError => {}
        RCODE::NameError => return Verdict::Answer(Answer::NxDomain(negative_ttl(&packet))),
        other => return Verdict::Failed(other as u8),
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
