//! The resolver against a scripted DNS server on 127.0.0.1 (a thread with a
//! std UDP socket), over the host-socket stack: answers and their TTLs,
//! NXDOMAIN, silence, garbage, and a reply from the wrong transaction.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
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
}

/// Starts the server; returns its address and the count of queries seen.
fn server(script: Script) -> (SocketAddr, Arc<AtomicU32>) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            let query = &buf[..n];
            let reply = match script {
                Script::Silent => continue,
                Script::Garbage => b"\x00\x01garbage, not DNS".to_vec(),
                Script::Answer(ttl) => answer(query, 0, ttl, false),
                Script::NxDomain => answer(query, 3, 0, false),
                Script::WrongId => answer(query, 0, 60, true),
            };
            let _ = socket.send_to(&reply, from);
        }
    });
    (addr, seen)
}

/// A reply to `query` (one question) with response code `rcode` and, for
/// NOERROR, two A records with `ttl`, written by hand (RFC 1035 4.1).
fn answer(query: &[u8], rcode: u8, ttl: u32, wrong_id: bool) -> Vec<u8> {
    let mut r = query.to_vec();
    if wrong_id {
        r[0] ^= 0xff;
    }
    r[2] = 0x81; // QR, RD
    r[3] = 0x80 | rcode; // RA
    let answers: u16 = if rcode == 0 { 2 } else { 0 };
    r[6..8].copy_from_slice(&answers.to_be_bytes());
    for last in 1..=answers as u8 {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // the question's name, A, IN
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4, 192, 0, 2, last]);
    }
    r
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
) -> Vec<Result<Vec<std::net::IpAddr>, DnsError>> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    block_on(platform(), async move {
        let stack = SocketStack::new(platform());
        let resolver = Resolver::new(&stack, Random::new(), vec![server], settings());
        let mut out = Vec::new();
        for name in &names {
            out.push(resolver.lookup(name, Kind::A).await);
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
