//! The fuzz targets of crates/kiln-tls/fuzz over their seed corpora (and
//! any crash inputs added to them): every seed must end in a value or a
//! typed error, never a panic, as under `cargo fuzz`.

#[allow(dead_code, unreachable_pub)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz;

use std::path::Path;

/// Runs `target` over every file in `fuzz/seeds/NAME`; at least `min` seeds.
fn replay(name: &str, min: usize, target: fn(&[u8]) -> fuzz::Outcome) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(name);
    kiln_testsupport::fuzz::replay_seeds(&dir, min, target);
}

#[test]
fn server_seeds() {
    replay("server", 5, fuzz::server);
}

#[test]
fn client_seeds() {
    replay("client", 5, fuzz::client);
}

/// The harness reaches the handshake: a real ClientHello gets the server's
/// flight (ServerHello and the encrypted rest) before the input ends.
#[test]
fn a_client_hello_gets_the_servers_flight() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/server");
    for seed in [
        "tls13-client-hello",
        "tls13-client-hello-7-byte-reads",
        "tls12-client-hello",
    ] {
        let hello = std::fs::read(dir.join(seed)).unwrap();
        let out = fuzz::server(&hello);
        assert!(
            out.written > 500,
            "{seed}: the server wrote {} bytes",
            out.written
        );
        assert_eq!(out.error, Some(kiln_tls::TlsError::UnexpectedEof), "{seed}");
    }
    // Garbage gets an alert (7 bytes) and a typed error.
    let out = fuzz::server(b"\0GET / HTTP/1.1\r\n\r\n");
    assert!(
        matches!(out.error, Some(kiln_tls::TlsError::Protocol(_))),
        "{out:?}"
    );
    assert_eq!(out.written, 7);
}
