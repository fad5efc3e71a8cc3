//! The fuzz target of crates/kiln-dns/fuzz over its seed corpus (and any
//! crash inputs added to it): every seed must end in addresses or a typed
//! error, never a panic, as under `cargo fuzz`.

#[allow(dead_code, unreachable_pub)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz;

use std::net::IpAddr;
use std::path::Path;

use kiln_dns::DnsError;

fn seeds() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/reply")
}

#[test]
fn reply_seeds() {
    kiln_testsupport::fuzz::replay_seeds(&seeds(), 8, fuzz::reply);
}

/// The harness reaches what it is for: the seeds get answers over UDP
/// (with an OPT record, and longer than 512 bytes) and over TCP, negative
/// answers, FORMERR without the question, and the TCP errors.
#[test]
fn the_seeds_reach_every_outcome() {
    let run = |seed: &str| fuzz::reply(&std::fs::read(seeds().join(seed)).unwrap());
    let three: Vec<IpAddr> = (1..=3).map(|i| [192, 0, 2, i].into()).collect();
    assert_eq!(run("udp-answer"), Ok(vec![[192, 0, 2, 1].into()]));
    assert_eq!(run("tcp-answer"), Ok(three.clone()));
    assert_eq!(run("tcp-answer-1-byte-reads"), Ok(three));
    assert_eq!(
        run("nxdomain-soa"),
        Err(DnsError::NxDomain(fuzz::NAME.into()))
    );
    assert_eq!(run("nodata-soa"), Ok(vec![]));
    assert_eq!(
        run("tcp-too-long"),
        Err(DnsError::TcpReplyTooLarge {
            len: 65535,
            max: 16 * 1024
        })
    );
    assert_eq!(
        run("tcp-short"),
        Err(DnsError::TcpShortReply { got: 12, want: 102 })
    );
    assert_eq!(run("garbage"), Err(DnsError::Malformed));
    assert_eq!(run("udp-answer-edns"), Ok(vec![[192, 0, 2, 1].into()]));
    let sixty: Vec<IpAddr> = (1..=60).map(|i| [192, 0, 2, i].into()).collect();
    assert_eq!(run("udp-answer-edns-long"), Ok(sixty));
    // Asked again without EDNS, the same reply: the server's failure.
    assert_eq!(run("formerr-header-only"), Err(DnsError::Server(1)));
}
