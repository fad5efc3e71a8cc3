//! A kiln-tls client and server talking over the host's sockets on
//! 127.0.0.1, with a CA and certificates made by `openssl` for the test:
//! both protocol versions, ALPN, resumption, large transfers, close_notify
//! against a bare TCP close, and each way a server certificate fails to
//! verify (unknown CA, wrong name, expired).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kiln_devices::kv::{Digest, EntryKind, KvError, KvRo};
use kiln_devices::{Stack, TcpListener as _, Timestamp, WallClock};
use kiln_rt::{block_on, timeout};
use kiln_testsupport::pki;
use kiln_testsupport::skip::{have, skip};
use kiln_tls::{ClientSettings, Identity, ServerSettings, TlsError};
use kiln_unix::{Random, SocketStack, platform};

/// A store of PEM files in memory.
struct Files(BTreeMap<String, Vec<u8>>);

impl KvRo for Files {
    async fn exists(&self, key: &str) -> Result<Option<EntryKind>, KvError> {
        Ok(self.0.contains_key(key).then_some(EntryKind::Value))
    }
    async fn get(&self, key: &str) -> Result<std::borrow::Cow<'static, [u8]>, KvError> {
        self.0
            .get(key)
            .map(|v| v.clone().into())
            .ok_or(KvError::NotFound)
    }
    async fn get_partial(
        &self,
        key: &str,
        offset: u64,
        len: usize,
    ) -> Result<std::borrow::Cow<'static, [u8]>, KvError> {
        let v = self.0.get(key).ok_or(KvError::NotFound)?;
        let start = usize::try_from(offset).map_err(|_| KvError::OutOfRange)?;
        let rest = v.get(start..).ok_or(KvError::OutOfRange)?;
        Ok(rest[..rest.len().min(len)].to_vec().into())
    }
    async fn list(&self, _key: &str) -> Result<Vec<(String, EntryKind)>, KvError> {
        Ok(self
            .0
            .keys()
            .map(|k| (k.clone(), EntryKind::Value))
            .collect())
    }
    async fn size(&self, key: &str) -> Result<u64, KvError> {
        Ok(self.0.get(key).ok_or(KvError::NotFound)?.len() as u64)
    }
    async fn digest(&self, _key: &str) -> Result<Digest, KvError> {
        Err(KvError::NotFound)
    }
}

/// The wall clock, or a fixed time.
#[derive(Debug, Clone, Copy)]
enum Clock {
    Host,
    At(u64),
}

impl WallClock for Clock {
    fn now(&self) -> Timestamp {
        match self {
            Clock::Host => kiln_unix::WallClock.now(),
            Clock::At(secs) => Timestamp::from_unix_nanos(secs * 1_000_000_000),
        }
    }
}

/// A CA, a second unrelated CA, and a leaf for `localhost` and 127.0.0.1
/// signed by the first, as PEM files in a store.
fn pki() -> Files {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("kiln-tls-pki-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    pki::ca(&dir, "ca");
    pki::ca(&dir, "other");
    pki::leaf(
        &dir,
        "leaf",
        "localhost",
        "DNS:localhost,IP:127.0.0.1",
        "30",
        "ca",
    );
    let files = ["ca.pem", "other.pem", "leaf.pem", "leaf.key"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    Files(files)
}

/// What one client connection saw.
#[derive(Debug)]
struct Seen {
    alpn: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
    resumed: bool,
    body: Vec<u8>,
}

const BODY_LEN: usize = 300_000;

fn body() -> Vec<u8> {
    (0..BODY_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

/// Starts a server that answers each connection's first line with
/// [`body`] and then closes with close_notify (or, with `bare_close`, by
/// dropping the TCP connection); runs `clients` against it.
fn with_server<T: 'static>(
    files: Files,
    bare_close: bool,
    clients: impl AsyncFnOnce(SocketAddr, Arc<Files>) -> T + 'static,
) -> T {
    let files = Arc::new(files);
    block_on(
        platform(),
        timeout(Duration::from_secs(60), async move {
            let stack = SocketStack::new(platform());
            let listener = stack
                .listen_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .await
                .expect("listen");
            let addr = listener.local_addr();
            let identity = Identity::load(&*files, "leaf.pem", "leaf.key")
                .await
                .expect("load the identity");
            let settings = ServerSettings {
                alpn: vec![b"kiln-test".to_vec(), b"http/1.1".to_vec()],
                ..ServerSettings::default()
            };
            let config = kiln_tls::server_config(Random::new(), Clock::Host, identity, &settings)
                .expect("server config");
            kiln_rt::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let config = config.clone();
                    kiln_rt::spawn(async move {
                        let Ok(mut tls) = kiln_tls::accept(tcp, &config).await else {
                            return;
                        };
                        let mut line = [0u8; 64];
                        if tls.read_tls(&mut line).await.is_err() {
                            return;
                        }
                        let body = body();
                        let mut sent = 0;
                        while sent < body.len() {
                            match tls.write_tls(&body[sent..]).await {
                                Ok(n) => sent += n,
                                Err(_) => return,
                            }
                        }
                        if !bare_close {
                            let _ = tls.close().await;
                        }
                    });
                }
            });
            clients(addr, files).await
        }),
    )
    .expect("the test finished within 60 s")
}

async fn fetch(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<Seen, TlsError> {
    let stack = SocketStack::new(platform());
    let tcp = stack.connect_tcp(addr).await?;
    let mut tls = kiln_tls::connect(tcp, config, name).await?;
    tls.write_tls(b"hello\n").await?;
    let mut body = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read_tls(&mut buf).await? {
            0 => break,
            n => body.extend_from_slice(&buf[..n]),
        }
    }
    Ok(Seen {
        alpn: tls.alpn_protocol().map(<[u8]>::to_vec),
        version: tls.protocol_version(),
        resumed: tls.resumed(),
        body,
    })
}

async fn client(
    files: &Files,
    roots: &str,
    clock: Clock,
    tls12_only: bool,
) -> Arc<rustls::ClientConfig> {
    let roots = kiln_tls::config::roots_from_store(files, roots)
        .await
        .expect("load the roots");
    let settings = ClientSettings {
        alpn: vec![b"http/1.1".to_vec()],
        tls12_only,
    };
    kiln_tls::client_config(Random::new(), clock, roots, &settings).expect("client config")
}

fn openssl_or_skip(test: &str) -> bool {
    if have("openssl", "version") {
        return true;
    }
    skip(
        test,
        "`openssl` is not installed (scripts/test installs it)",
    );
    false
}

#[test]
fn both_versions_with_alpn_resumption_and_close_notify() {
    if !openssl_or_skip("both_versions_with_alpn_resumption_and_close_notify") {
        return;
    }
    let seen = with_server(pki(), false, async |addr, files| {
        let mut seen = Vec::new();
        for tls12_only in [false, true] {
            let config = client(&files, "ca.pem", Clock::Host, tls12_only).await;
            for _ in 0..2 {
                seen.push(fetch(addr, &config, "localhost").await);
            }
        }
        seen
    });
    let versions = [
        rustls::ProtocolVersion::TLSv1_3,
        rustls::ProtocolVersion::TLSv1_3,
        rustls::ProtocolVersion::TLSv1_2,
        rustls::ProtocolVersion::TLSv1_2,
    ];
    for (i, (seen, version)) in seen.into_iter().zip(versions).enumerate() {
        let seen = seen.unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(seen.version, Some(version), "connection {i}");
        assert_eq!(
            seen.alpn.as_deref(),
            Some(&b"http/1.1"[..]),
            "connection {i}"
        );
        // The second connection of each client resumes the first's session.
        assert_eq!(seen.resumed, i % 2 == 1, "connection {i}");
        assert!(seen.body == body(), "connection {i}: the body differs");
    }
}

#[test]
fn a_tcp_close_without_close_notify_is_a_truncation() {
    if !openssl_or_skip("a_tcp_close_without_close_notify_is_a_truncation") {
        return;
    }
    let result = with_server(pki(), true, async |addr, files| {
        let config = client(&files, "ca.pem", Clock::Host, false).await;
        fetch(addr, &config, "localhost").await
    });
    assert_eq!(result.unwrap_err(), TlsError::UnexpectedEof);
}

#[test]
fn bad_server_certificates_are_refused() {
    if !openssl_or_skip("bad_server_certificates_are_refused") {
        return;
    }
    // 2100-01-01: long after the leaf's 30 days.
    const LATER: u64 = 4_102_444_800;
    let results = with_server(pki(), false, async |addr, files| {
        let good = client(&files, "ca.pem", Clock::Host, false).await;
        let other = client(&files, "other.pem", Clock::Host, false).await;
        let later = client(&files, "ca.pem", Clock::At(LATER), false).await;
        vec![
            fetch(addr, &other, "localhost").await,
            fetch(addr, &good, "wrong.example").await,
            fetch(addr, &later, "localhost").await,
            // The server is still serving after the failed handshakes.
            fetch(addr, &good, "127.0.0.1").await,
        ]
    });
    let mut results = results.into_iter();
    // rustls names the variant, with or without context (`ExpiredContext`).
    let mut expect = |what: &str, want: &str| match results.next().expect("a result") {
        Err(TlsError::Protocol(rustls::Error::InvalidCertificate(got))) => {
            assert!(
                format!("{got:?}").starts_with(want),
                "{what}: {got:?}, expected {want}"
            );
        }
        other => panic!("{what}: {other:?}, expected {want}"),
    };
    expect("unknown CA", "UnknownIssuer");
    expect("wrong name", "NotValidForName");
    expect("expired", "Expired");
    let last = results
        .next()
        .expect("a result")
        .expect("the server still serves");
    assert!(last.body == body());
}
