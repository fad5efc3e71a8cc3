//! The resolver against a scripted DNS server on 127.0.0.1 (a thread with a
//! std UDP socket, and a TCP listener on the same port for truncated
//! replies), over the host-socket stack: answers and their TTLs, NXDOMAIN,
//! negative caching, silence, garbage, a reply from the wrong transaction,
//! and TCP replies good and hostile; EDNS(0) and a server without it;
//! search domains; A and AAAA together. Then the same against dnsmasq.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_dns::{DnsError, Kind, Resolver, Settings};
use kiln_rt::block_on;
use kiln_unix::{Random, SocketStack, platform};

/// How the scripted server answers a query.
#[derive(Clone, Copy)]
enum Script {
    /// A records 192.0.2.1 and 192.0.2.2 with this TTL.
    Answer(u32),
    NxDomain,
    Silent,
    Garbage,
    /// A well-formed answer with another transaction ID.
    WrongId,
    /// NXDOMAIN with an SOA record of this TTL (and MINIMUM).
    NxDomainSoa(u32),
    /// No error, no record, an SOA record of this TTL (and MINIMUM).
    NoDataSoa(u32),
    /// A truncated UDP reply; the TCP listener answers as told.
    Truncated(Tcp),
    /// To a query with an OPT record advertising 1232 bytes, 40 A records
    /// (a reply of 700-odd bytes); to any other, SERVFAIL.
    EdnsOnly,
    /// To a query with an OPT record, FORMERR with the header alone (a
    /// server that does not know EDNS); to any other, two A records.
    FormErrOnOpt,
    /// NXDOMAIN but for this name, which has 192.0.2.1.
    Only(&'static str),
    /// A: 192.0.2.1 and 192.0.2.2; AAAA: 2001:db8::1.
    DualStack,
}

/// How the scripted server answers over TCP.
#[derive(Clone, Copy, Debug)]
enum Tcp {
    /// Three A records 192.0.2.1 to .3, TTL 60.
    Answer,
    /// That answer with another transaction ID.
    WrongId,
    /// A length prefix of 65535 bytes.
    TooLong,
    /// A length prefix of 100 bytes, 10 of them, and the connection closed.
    Short,
    /// The connection reset without a reply.
    Reset,
    /// The query read, no reply, the connection held open.
    Silent,
}

/// Starts the server; returns its address and the count of queries seen
/// (over UDP and over TCP).
fn server(script: Script) -> (SocketAddr, Arc<AtomicU32>) {
    let (addr, seen, _) = logged_server(script);
    (addr, seen)
}

/// The name and type asked by `query` (`name A`, `name AAAA`), and whether
/// it carries an OPT record advertising 1232 bytes (the last record, as
/// kiln-dns writes it).
fn asked(query: &[u8]) -> (String, bool) {
    let mut labels = Vec::new();
    let mut at = 12;
    while let Some(&len) = query.get(at).filter(|&&l| l > 0) {
        let label = query.get(at + 1..at + 1 + usize::from(len)).unwrap_or(&[]);
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += 1 + usize::from(len);
    }
    let qtype = match query.get(at + 1..at + 3) {
        Some([0, 28]) => "AAAA",
        _ => "A",
    };
    let opt = query[10..12] == [0, 1] && query.ends_with(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    (format!("{} {qtype}", labels.join(".")), opt)
}

/// [`server`], with the log of the names and types asked over UDP.
fn logged_server(script: Script) -> (SocketAddr, Arc<AtomicU32>, Arc<Mutex<Vec<String>>>) {
    // A UDP and a TCP port of the same number.
    let (socket, listener) = (0..20)
        .find_map(|_| {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let listener = TcpListener::bind(socket.local_addr().unwrap()).ok()?;
            Some((socket, listener))
        })
        .expect("a UDP and a TCP port of one number");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let names = log.clone();
    if let Script::Truncated(tcp) = script {
        let count = seen.clone();
        std::thread::spawn(move || tcp_server(listener, tcp, &count));
    }
    let count = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            let query = &buf[..n];
            let (name, opt) = asked(query);
            names.lock().unwrap().push(name.clone());
            let reply = match script {
                Script::Silent => continue,
                Script::Garbage => b"\x00\x01garbage, not DNS".to_vec(),
                Script::Answer(ttl) => answer(query, 0, ttl, false),
                Script::NxDomain => answer(query, 3, 0, false),
                Script::WrongId => answer(query, 0, 60, true),
                Script::NxDomainSoa(ttl) => with_soa(answer(query, 3, 0, false), ttl),
                Script::NoDataSoa(ttl) => with_soa(answer(query, 0, 0, false), ttl),
                Script::Truncated(_) => {
                    let mut r = answer(query, 0, 0, false);
                    r[2] |= 0x02; // TC
                    r
                }
                Script::EdnsOnly if opt => answer_n(query, 0, 60, false, 40),
                Script::EdnsOnly => answer(query, 2, 0, false),
                Script::FormErrOnOpt if opt => {
                    let mut r = answer(query, 1, 0, false);
                    r.truncate(12);
                    r[4..12].fill(0);
                    r
                }
                Script::FormErrOnOpt => answer(query, 0, 60, false),
                Script::Only(only) if name.starts_with(&format!("{only} ")) => {
                    answer_n(query, 0, 60, false, 1)
                }
                Script::Only(_) => answer(query, 3, 0, false),
                Script::DualStack if name.ends_with(" AAAA") => {
                    let mut r = answer_n(query, 0, 60, false, 0);
                    r[7] = 1; // ANCOUNT
                    r.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
                    r.extend_from_slice(
                        &"2001:db8::1"
                            .parse::<std::net::Ipv6Addr>()
                            .unwrap()
                            .octets(),
                    );
                    r
                }
                Script::DualStack => answer(query, 0, 60, false),
            };
            let _ = socket.send_to(&reply, from);
        }
    });
    (addr, seen, log)
}

/// Answers the TCP connections of `listener` as `script` says.
fn tcp_server(listener: TcpListener, script: Tcp, seen: &AtomicU32) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { return };
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        if let Tcp::Reset = script {
            // Closing with the query unread resets the connection.
            std::thread::sleep(Duration::from_millis(100));
            seen.fetch_add(1, Ordering::SeqCst);
            drop(conn);
            continue;
        }
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            continue;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if conn.read_exact(&mut query).is_err() {
            continue;
        }
        seen.fetch_add(1, Ordering::SeqCst);
        let framed = |r: Vec<u8>| {
            let mut out = (r.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&r);
            out
        };
        let reply = match script {
            Tcp::Answer => framed(answer_n(&query, 0, 60, false, 3)),
            Tcp::WrongId => framed(answer_n(&query, 0, 60, true, 3)),
            Tcp::TooLong => vec![0xff; 300],
            Tcp::Short => {
                let mut r = vec![0, 100];
                r.extend_from_slice(&query[..10]);
                r
            }
            Tcp::Silent => {
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            Tcp::Reset => unreachable!(),
        };
        let _ = conn.write_all(&reply);
    }
}

/// `reply` with an SOA record of TTL and MINIMUM `ttl` in its authority
/// section.
fn with_soa(mut r: Vec<u8>, ttl: u32) -> Vec<u8> {
    r[9] = 1; // NSCOUNT
    // Owner: the question's name; SOA, IN.
    r.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1]);
    r.extend_from_slice(&ttl.to_be_bytes());
    let mut rdata = b"\x02ns\xc0\x0c\x05admin\xc0\x0c".to_vec();
    for field in [1, 3600, 600, 86400, ttl] {
        rdata.extend_from_slice(&field.to_be_bytes());
    }
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(&rdata);
    r
}

/// A reply to `query` (one question) with response code `rcode` and, for
/// NOERROR, two A records with `ttl`, written by hand (RFC 1035 4.1).
fn answer(query: &[u8], rcode: u8, ttl: u32, wrong_id: bool) -> Vec<u8> {
    answer_n(
        query,
        rcode,
        ttl,
        wrong_id,
        if rcode == 0 && ttl > 0 { 2 } else { 0 },
    )
}

/// [`answer`] with `answers` A records, 192.0.2.1 onwards.
fn answer_n(query: &[u8], rcode: u8, ttl: u32, wrong_id: bool, answers: u16) -> Vec<u8> {
    // The question alone: not the query's OPT record.
    let mut r = query.to_vec();
    if let Some(end) = question_end(query) {
        r.truncate(end);
    }
    r[10..12].fill(0); // ARCOUNT
    if wrong_id {
        r[0] ^= 0xff;
    }
    r[2] = 0x81; // QR, RD
    r[3] = 0x80 | rcode; // RA
    r[6..8].copy_from_slice(&answers.to_be_bytes());
    for last in 1..=answers as u8 {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // the question's name, A, IN
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4, 192, 0, 2, last]);
    }
    r
}

/// Where the question of `query` ends.
fn question_end(query: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            return Some(at + 4);
        }
        at += len;
    }
}

fn settings() -> Settings {
    Settings {
        timeout: Duration::from_millis(300),
        attempts: 2,
        ..Settings::default()
    }
}

fn resolve(
    server: SocketAddr,
    names: &[&str],
    pause: Duration,
) -> Vec<Result<Vec<IpAddr>, DnsError>> {
    let queries: Vec<(&str, Kind)> = names.iter().map(|&name| (name, Kind::A)).collect();
    resolve_kinds(server, &queries, pause, settings())
}

/// Looks up each of `queries` in turn with one resolver, `pause` after each.
fn resolve_kinds(
    server: SocketAddr,
    queries: &[(&str, Kind)],
    pause: Duration,
    settings: Settings,
) -> Vec<Result<Vec<IpAddr>, DnsError>> {
    let queries: Vec<(String, Kind)> = queries
        .iter()
        .map(|&(name, kind)| (name.to_string(), kind))
        .collect();
    block_on(platform(), async move {
        let stack = SocketStack::new(platform());
        let resolver = Resolver::new(&stack, Random::new(), vec![server], settings);
        let mut out = Vec::new();
        for (name, kind) in &queries {
            out.push(resolver.lookup(name, *kind).await);
            kiln_rt::sleep(pause).await;
        }
        out
    })
}

#[test]
fn answers_are_cached_until_their_ttl_expires() {
    let (addr, seen) = server(Script::Answer(1));
    let results = resolve(
        addr,
        &["www.example.test", "WWW.example.test.", "www.example.test"],
        Duration::from_millis(600),
    );
    let want: Vec<std::net::IpAddr> = vec![[192, 0, 2, 1].into(), [192, 0, 2, 2].into()];
    for r in &results {
        assert_eq!(r.as_ref().unwrap(), &want);
    }
    // The second lookup (0.6 s later, same name in another case) came from
    // the cache; the third, 1.2 s after the first, asked again.
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[test]
fn nxdomain_is_an_error_and_not_retried() {
    let (addr, seen) = server(Script::NxDomain);
    let results = resolve(addr, &["missing.example.test"], Duration::ZERO);
    assert_eq!(
        results[0],
        Err(DnsError::NxDomain("missing.example.test".into()))
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn a_silent_server_times_out_after_the_retries() {
    let (addr, seen) = server(Script::Silent);
    let start = std::time::Instant::now();
    let results = resolve(addr, &["slow.example.test"], Duration::ZERO);
    assert_eq!(results[0], Err(DnsError::Timeout));
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn garbage_and_replies_to_other_queries_are_not_believed() {
    let (addr, _) = server(Script::Garbage);
    assert_eq!(
        resolve(addr, &["a.example.test"], Duration::ZERO)[0],
        Err(DnsError::Malformed)
    );
    let (addr, _) = server(Script::WrongId);
    assert_eq!(
        resolve(addr, &["a.example.test"], Duration::ZERO)[0],
        Err(DnsError::Malformed)
    );
}

#[test]
fn no_server_and_bad_names_fail_at_once() {
    let results = block_on(platform(), async {
        let stack = SocketStack::new(platform());
        let resolver = Resolver::new(&stack, Random::new(), vec![], settings());
        (
            resolver.lookup("example.test", Kind::A).await,
            resolver.lookup("bad name", Kind::A).await,
            resolver.lookup_ip("192.0.2.7").await,
        )
    });
    assert_eq!(results.0, Err(DnsError::NoServer));
    assert_eq!(results.1, Err(DnsError::InvalidName("bad name".into())));
    assert_eq!(results.2, Ok(vec![[192, 0, 2, 7].into()]));
}

#[test]
fn nxdomain_is_cached_for_the_soa_ttl_and_every_kind() {
    let (addr, seen) = server(Script::NxDomainSoa(1));
    let missing = Err(DnsError::NxDomain("missing.example.test".into()));
    let results = resolve_kinds(
        addr,
        &[
            ("missing.example.test", Kind::A),
            ("Missing.example.test.", Kind::A),
            ("missing.example.test", Kind::Aaaa),
            ("missing.example.test", Kind::A),
        ],
        Duration::from_millis(400),
        settings(),
    );
    assert!(results.iter().all(|r| *r == missing), "{results:?}");
    // The second and third (0.4 s and 0.8 s later) came from the cache,
    // NXDOMAIN holding for AAAA too, within the SOA's second; the fourth
    // (1.2 s) asked again.
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[test]
fn nodata_is_cached_and_negative_ttls_are_capped() {
    let (addr, seen) = server(Script::NoDataSoa(3600));
    let capped = Settings {
        negative_max_ttl: Duration::from_millis(500),
        ..settings()
    };
    let results = resolve_kinds(
        addr,
        &[("v6only.example.test", Kind::A); 3],
        Duration::from_millis(300),
        capped,
    );
    assert!(results.iter().all(|r| *r == Ok(vec![])), "{results:?}");
    // The SOA's hour is capped at half a second: the second lookup (0.3 s)
    // came from the cache, the third (0.6 s) asked again.
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    // Without an SOA record, a negative answer is not kept.
    let (addr, seen) = server(Script::NxDomain);
    resolve(addr, &["missing.example.test"; 2], Duration::ZERO);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[test]
fn truncated_replies_are_asked_again_over_tcp() {
    let (addr, seen) = server(Script::Truncated(Tcp::Answer));
    let results = resolve(addr, &["big.example.test"; 2], Duration::ZERO);
    let want: Vec<IpAddr> = (1..=3).map(|i| [192, 0, 2, i].into()).collect();
    assert_eq!(results, vec![Ok(want.clone()), Ok(want)]);
    // One over UDP, one over TCP, then the cache.
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[test]
fn hostile_tcp_replies_are_errors() {
    for (tcp, want) in [
        (Tcp::WrongId, DnsError::Malformed),
        (
            Tcp::TooLong,
            DnsError::TcpReplyTooLarge {
                len: 65535,
                max: 16 * 1024,
            },
        ),
        (Tcp::Short, DnsError::TcpShortReply { got: 12, want: 102 }),
        (
            Tcp::Reset,
            DnsError::Stack(kiln_devices::StackError::ConnectionReset),
        ),
        (Tcp::Silent, DnsError::Timeout),
    ] {
        let (addr, _) = server(Script::Truncated(tcp));
        let start = std::time::Instant::now();
        let results = resolve(addr, &["big.example.test"], Duration::ZERO);
        assert_eq!(results[0], Err(want), "{tcp:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "{tcp:?}");
    }
}

/// `lookup_ip` of each of `hosts` in turn, with one resolver searching
/// `search`.
fn resolve_ip(
    server: SocketAddr,
    search: &[&str],
    settings: Settings,
    hosts: &[&str],
) -> Vec<Result<Vec<IpAddr>, DnsError>> {
    let search: Vec<String> = search.iter().map(|d| d.to_string()).collect();
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    block_on(platform(), async move {
        let stack = SocketStack::new(platform());
        let resolver = Resolver::new(&stack, Random::new(), vec![server], settings)
            .with_search(search)
            .unwrap();
        let mut out = Vec::new();
        for host in &hosts {
            out.push(resolver.lookup_ip(host).await);
        }
        out
    })
}

#[test]
fn queries_advertise_edns_and_read_replies_over_512_bytes() {
    let (addr, seen) = server(Script::EdnsOnly);
    let results = resolve(addr, &["big.example.test"], Duration::ZERO);
    let want: Vec<IpAddr> = (1..=40).map(|i| [192, 0, 2, i].into()).collect();
    assert_eq!(results, vec![Ok(want)]);
    // Over UDP alone.
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // Without EDNS, the server fails.
    let (addr, _) = server(Script::EdnsOnly);
    let plain = Settings {
        edns_payload: 0,
        ..settings()
    };
    let results = resolve_kinds(
        addr,
        &[("big.example.test", Kind::A)],
        Duration::ZERO,
        plain,
    );
    assert_eq!(results, vec![Err(DnsError::Server(2))]);
}

#[test]
fn a_server_without_edns_is_asked_again_without_it() {
    let (addr, _, log) = logged_server(Script::FormErrOnOpt);
    let results = resolve(addr, &["a.example.test", "b.example.test"], Duration::ZERO);
    let want: Vec<IpAddr> = vec![[192, 0, 2, 1].into(), [192, 0, 2, 2].into()];
    assert_eq!(results, vec![Ok(want.clone()), Ok(want)]);
    // The first name with EDNS (FORMERR) and again without; the second
    // without at once.
    assert_eq!(
        *log.lock().unwrap(),
        ["a.example.test A", "a.example.test A", "b.example.test A"]
    );
}

#[test]
fn short_names_are_tried_in_the_search_domains_first() {
    let (addr, _, log) = logged_server(Script::Only("www.b.test"));
    let results = resolve_ip(
        addr,
        &["a.test", "b.test"],
        settings(),
        &["www", "www.b.test", "nowhere"],
    );
    assert_eq!(results[0], Ok(vec![[192, 0, 2, 1].into()]));
    assert_eq!(results[1], Ok(vec![[192, 0, 2, 1].into()]));
    assert_eq!(
        results[2],
        Err(DnsError::NotFound {
            name: "nowhere".into(),
            tried: ["nowhere.a.test", "nowhere.b.test", "nowhere"]
                .map(|n| (n.to_string(), DnsError::NxDomain(n.into())))
                .to_vec()
        })
    );
    // A and AAAA of each name, at once (so in either order); www.b.test
    // (as many dots as ndots) as it is, first, its A record from the cache
    // the second time (the AAAA query's NODATA has no SOA to be kept by).
    let mut asked: Vec<String> = log.lock().unwrap().clone();
    asked.sort();
    let names = [
        "www.a.test",
        "www.b.test",
        "nowhere.a.test",
        "nowhere.b.test",
        "nowhere",
    ];
    let mut want: Vec<String> = names.iter().map(|n| format!("{n} A")).collect();
    want.extend(names.iter().map(|n| format!("{n} AAAA")));
    want.push("www.b.test AAAA".into());
    want.sort();
    assert_eq!(asked, want);
    let text = results[2].clone().unwrap_err().to_string();
    assert_eq!(
        text,
        "`nowhere` does not exist (tried nowhere.a.test: NXDOMAIN, nowhere.b.test: NXDOMAIN, \
         nowhere: NXDOMAIN)"
    );
}

#[test]
fn lookup_ip_gives_both_families_in_the_order_to_try() {
    let (addr, seen) = server(Script::DualStack);
    let results = resolve_ip(addr, &[], settings(), &["dual.example.test"]);
    let want: Vec<IpAddr> = vec![
        "2001:db8::1".parse().unwrap(),
        [192, 0, 2, 1].into(),
        [192, 0, 2, 2].into(),
    ];
    assert_eq!(results, vec![Ok(want)]);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

/// dnsmasq, authoritative for `test.` on a free port of 127.0.0.1: an A
/// set of 60 (a reply of 986 bytes) comes whole over UDP with EDNS; one of
/// 100 (1,626 bytes) too large for the 1,232 advertised, dnsmasq truncates
/// it and it comes whole over TCP; NXDOMAIN and NODATA carry dnsmasq's SOA
/// and are cached; a short name is found in the second search domain.
#[test]
fn against_dnsmasq() {
    const TEST: &str = "against_dnsmasq";
    if !kiln_testsupport::skip::have("dnsmasq", "--version") {
        kiln_testsupport::skip::skip(
            TEST,
            "dnsmasq is not installed (apt-get install dnsmasq-base)",
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("kiln-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hosts: String = (1..=60)
        .map(|i| format!("10.9.0.{i} big.test\n"))
        .chain((1..=100).map(|i| format!("10.9.1.{i} huge.test\n")))
        .collect();
    std::fs::write(dir.join("hosts"), hosts).unwrap();
    let log = dir.join("log");
    let port = (0..20)
        .map(|_| kiln_testsupport::ports::free_udp_port())
        .find(|&p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok())
        .unwrap();
    let child = std::process::Command::new("dnsmasq")
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--group=root",
            "--log-queries",
            "--log-facility=-",
            "--auth-zone=test",
            "--auth-server=ns.test,127.0.0.1",
            "--auth-ttl=60",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--addn-hosts={}", dir.join("hosts").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start dnsmasq");
    let mut dnsmasq = kiln_testsupport::process::ChildGuard(child);
    let server: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    // Ready once it answers.
    let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // A query for probe.test, A.
    let query =
        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05probe\x04test\x00\x00\x01\x00\x01";
    let ready = (0..50).any(|_| {
        let _ = probe.send_to(query, server);
        probe.recv_from(&mut [0u8; 512]).is_ok()
    });
    assert!(
        ready,
        "dnsmasq: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let results = resolve_kinds(
        server,
        &[
            ("big.test", Kind::A),
            ("missing.test", Kind::A),
            ("missing.test", Kind::Aaaa),
            ("big.test", Kind::Aaaa),
            ("big.test", Kind::Aaaa),
            ("huge.test", Kind::A),
        ],
        Duration::ZERO,
        settings(),
    );
    let searched = resolve_ip(server, &["nope.test", "test"], settings(), &["huge"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        dnsmasq.wait_for(Duration::ZERO).unwrap(),
        None,
        "dnsmasq exited"
    );
    drop(dnsmasq);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let mut big: Vec<IpAddr> = results[0].clone().unwrap();
    big.sort();
    let want: Vec<IpAddr> = (1..=60).map(|i| [10, 9, 0, i].into()).collect();
    assert_eq!(big, want, "{log}");
    let mut huge: Vec<IpAddr> = results[5].clone().unwrap();
    huge.sort();
    let want: Vec<IpAddr> = (1..=100).map(|i| [10, 9, 1, i].into()).collect();
    assert_eq!(huge, want, "{log}");
    let mut searched = searched[0].clone().unwrap();
    searched.sort();
    assert_eq!(searched, want, "{log}");
    let missing = Err(DnsError::NxDomain("missing.test".into()));
    assert_eq!(
        results[1..5],
        [missing.clone(), missing, Ok(vec![]), Ok(vec![])],
        "{log}"
    );
    // Asked: big.test A over UDP alone, missing.test A, big.test AAAA,
    // huge.test A over UDP and TCP; the rest came from the cache. Then, by
    // a resolver of its own, huge.nope.test (NXDOMAIN, for AAAA too from
    // the cache or asked at once), huge.test A (over UDP and TCP again)
    // and AAAA.
    let asked = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(asked("auth[A] big.test from"), 1, "{log}");
    assert_eq!(asked("auth[A] huge.test from"), 4, "{log}");
    assert_eq!(asked("auth[A] huge.nope.test from"), 1, "{log}");
    assert_eq!(asked("auth[AAAA] huge.test from"), 1, "{log}");
    assert_eq!(asked("auth[A] missing.test from"), 1, "{log}");
    assert_eq!(asked("auth[AAAA] missing.test from"), 0, "{log}");
    assert_eq!(asked("auth[AAAA] big.test from"), 1, "{log}");
}
