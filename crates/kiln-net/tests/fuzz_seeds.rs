//! The Domain Search fuzz target of crates/kiln-net/fuzz over its seed
//! corpus (and any crash inputs added to it): every seed decodes to a
//! bounded list of valid names, never a panic, as under `cargo fuzz`.

use std::path::Path;

use kiln_net::domain_search::{MAX_DOMAINS, MAX_NAME, decode};

fn seeds() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/domain_search")
}

/// The target's body, with its bounds checked.
fn target(data: &[u8]) -> Vec<String> {
    let names = decode(data);
    assert!(names.len() <= MAX_DOMAINS, "{names:?}");
    for name in &names {
        assert!(name.len() <= MAX_NAME, "{name}");
        assert!(
            name.split('.').all(|label| !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'_')),
            "{name}"
        );
    }
    names
}

#[test]
fn domain_search_seeds() {
    kiln_testsupport::fuzz::replay_seeds(&seeds(), 8, target);
}

/// The seeds reach what they are for: names, compression across option
/// instances, the bound on the list, and each way a name fails.
#[test]
fn the_seeds_reach_every_outcome() {
    let run = |seed: &str| target(&std::fs::read(seeds().join(seed)).unwrap());
    let apple = ["eng.apple.com", "marketing.apple.com"];
    assert_eq!(run("rfc3397-example"), apple);
    assert_eq!(run("two-instances"), apple);
    assert_eq!(run("pointer-chain"), ["a"; MAX_DOMAINS]);
    assert_eq!(run("pointer-to-itself"), ["a.test"]);
    assert_eq!(run("seven-domains").len(), MAX_DOMAINS);
    assert_eq!(run("seven-domains")[0], "a.test");
    for nothing in [
        "pointer-forwards",
        "label-loop",
        "too-long",
        "reserved-label-type",
        "bad-characters",
    ] {
        assert_eq!(run(nothing), Vec::<String>::new(), "{nothing}");
    }
}
