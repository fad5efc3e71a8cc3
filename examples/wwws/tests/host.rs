//! wwws on the unix platform's host-socket stack, in this process, driven
//! over 127.0.0.1 by `curl` and `openssl s_client` with a certificate made
//! by `openssl` for the test: pages byte for byte over TLS 1.3 and 1.2,
//! keep-alive, ALPN, resumption, a wrong SNI, clients offering only
//! ciphers the server lacks, renegotiation, the plain-HTTP redirect, and
//! 1,000 garbage handshakes and truncated records after which the server
//! still serves; certificates chosen by SNI (and unknown names refused with
//! `--sni-strict`), stateless tickets resuming TLS 1.3 and 1.2 sessions
//! more than once, client certificates against a CA from the store, and
//! typed errors for bad identities and CAs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_baked::{Baked, Entry, digest_of};
use kiln_rt::{block_on, timeout};
use kiln_testsupport::pki;
use kiln_testsupport::platform::in_thread;
use kiln_testsupport::ports::free_tcp_port;
use kiln_testsupport::process::stdout_of;
use kiln_testsupport::skip::{have, skip};
use kiln_unix::{Random, SocketStack, WallClock, platform};

/// The site, as the code generator bakes it.
const SITE: &[(&str, &[u8])] = &[
    ("big.txt", include_bytes!("../htdocs/big.txt")),
    ("index.html", include_bytes!("../htdocs/index.html")),
    ("robots.txt", include_bytes!("../htdocs/robots.txt")),
];

fn bake(files: &[(&'static str, &'static [u8])]) -> Baked {
    let entries: Vec<Entry> = files
        .iter()
        .map(|&(path, data)| Entry {
            path,
            data,
            digest: digest_of(data),
        })
        .collect();
    Baked::new(Box::leak(entries.into_boxed_slice())).expect("a valid store")
}

/// A directory with `cert.pem` and `key.pem` for `localhost`, made by
/// openssl, and whatever else a test makes there; removed on drop.
struct Pki(tempfile::TempDir);

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kiln-wwws-{tag}-"))
            .tempdir()
            .unwrap();
        let pki = Pki(dir);
        pki.self_signed(
            "cert.pem",
            "key.pem",
            "localhost",
            "DNS:localhost,IP:127.0.0.1",
        );
        pki
    }

    /// A self-signed P-256 certificate `cert` for `/CN=cn` with `san`, and
    /// its key `key`.
    fn self_signed(&self, cert: &str, key: &str, cn: &str, san: &str) {
        pki::self_signed(self.0.path(), cert, key, cn, san);
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.path().join(file)
    }

    fn cert(&self) -> PathBuf {
        self.path("cert.pem")
    }

    /// A store of the files of the directory: `(key, file)` pairs.
    fn store_of(&self, files: &[(&'static str, &str)]) -> Baked {
        let read = |f: &str| -> &'static [u8] {
            Box::leak(std::fs::read(self.path(f)).unwrap().into_boxed_slice())
        };
        let files: Vec<(&'static str, &'static [u8])> =
            files.iter().map(|&(key, f)| (key, read(f))).collect();
        bake(&files)
    }

    fn store(&self) -> Baked {
        self.store_of(&[("cert.pem", "cert.pem"), ("key.pem", "key.pem")])
    }
}

/// The Strict-Transport-Security max-age every test server sends.
const HSTS: u32 = 31_536_000;

fn tools_or_skip(test: &str) -> bool {
    for tool in [("curl", "--version"), ("openssl", "version")] {
        if !have(tool.0, tool.1) {
            skip(
                test,
                &format!("`{}` is not installed (scripts/test installs it)", tool.0),
            );
            return false;
        }
    }
    true
}

/// Serves the site over HTTPS on a free port (and plain HTTP on another)
/// and runs `client(tls_port, http_port, cert)` in a thread.
fn with_server(
    test: &str,
    client: impl FnOnce(u16, u16, &Path) -> Result<(), String> + Send + 'static,
) {
    if !tools_or_skip(test) {
        return;
    }
    let pki = Pki::new(test);
    let store = pki.store();
    let cert = pki.cert();
    let options = wwws::TlsOptions {
        cert: "cert.pem".into(),
        key: "key.pem".into(),
        sni_dir: "sni".into(),
        ..wwws::TlsOptions::default()
    };
    serve(test, store, options, move |tls_port, http_port| {
        client(tls_port, http_port, &cert)
    });
    drop(pki);
}

/// Serves the site over HTTPS from `store` with `options` on a free port
/// (and plain HTTP on another) and runs `client(tls_port, http_port)` in a
/// thread.
fn serve(
    test: &str,
    store: Baked,
    options: wwws::TlsOptions,
    client: impl FnOnce(u16, u16) -> Result<(), String> + Send + 'static,
) {
    let (tls_port, http_port) = (free_tcp_port(), free_tcp_port());
    let result = block_on(
        platform(),
        timeout(Duration::from_secs(120), async move {
            kiln_rt::spawn(async move {
                let stack = SocketStack::new(platform());
                let result = wwws::start(
                    stack,
                    bake(SITE),
                    store,
                    Random::new(),
                    WallClock::new(),
                    tls_port,
                    http_port,
                    options.cert,
                    options.key,
                    HSTS,
                    options.sni_dir,
                    options.sni_strict,
                    options.client_ca,
                )
                .await;
                panic!("wwws stopped: {result:?}");
            });
            kiln_rt::sleep(Duration::from_millis(50)).await;
            in_thread(Duration::from_secs(110), move || {
                client(tls_port, http_port)
            })
            .await
            .unwrap_or_else(|| Err("the client did not finish within 110 s".into()))
        }),
    );
    result
        .expect("the test finished in time")
        .unwrap_or_else(|e| panic!("{test}: {e}"));
}

fn curl(args: &[&str]) -> Result<Vec<u8>, String> {
    stdout_of(
        Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args),
    )
    .map_err(|e| e.to_string())
}

/// `openssl s_client` to 127.0.0.1:`port` with `args` and `stdin`; its
/// stdout and stderr together, whatever its exit status.
fn s_client(port: u16, args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new("timeout")
        .args([
            "10",
            "openssl",
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    let out = child.wait_with_output().expect("openssl s_client ends");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check_pages(port: u16, cert: &Path, version: &[&str]) -> Result<(), String> {
    let cert = cert.to_str().unwrap();
    for (path, want) in SITE {
        let url = format!("https://localhost:{port}/{path}");
        let got = curl(&[&["--cacert", cert], version, &[&url]].concat())?;
        if got != *want {
            return Err(format!("{path} over {version:?} differs from the file"));
        }
    }
    Ok(())
}

#[test]
fn pages_are_byte_identical_over_tls13_and_tls12() {
    with_server(
        "pages_are_byte_identical_over_tls13_and_tls12",
        |port, _, cert| {
            check_pages(port, cert, &["--tlsv1.3"])?;
            check_pages(port, cert, &["--tlsv1.2", "--tls-max", "1.2"])
        },
    );
}

#[test]
fn keep_alive_alpn_and_resumption() {
    with_server("keep_alive_alpn_and_resumption", |port, _, cert| {
        // Two requests, one connection.
        let url = format!("https://localhost:{port}/robots.txt");
        let out = curl(&[
            "--cacert",
            cert.to_str().unwrap(),
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{num_connects} ",
            &url,
            &url,
        ])?;
        if String::from_utf8_lossy(&out) != "1 0 " {
            return Err(format!(
                "connections per request: {}",
                String::from_utf8_lossy(&out)
            ));
        }
        let out = s_client(port, &["-alpn", "h2,http/1.1"], b"");
        if !out.contains("ALPN protocol: http/1.1") {
            return Err(format!("no ALPN http/1.1:\n{out}"));
        }
        let session = std::env::temp_dir().join(format!("kiln-wwws-session-{port}"));
        let session = session.to_str().unwrap();
        let first = s_client(port, &["-tls1_2", "-sess_out", session], b"");
        let second = s_client(port, &["-tls1_2", "-sess_in", session], b"");
        let _ = std::fs::remove_file(session);
        if !first.contains("New, TLSv1.2") || !second.contains("Reused, TLSv1.2") {
            return Err(format!(
                "TLS 1.2 session not resumed:\n{first}\n---\n{second}"
            ));
        }
        Ok(())
    });
}

#[test]
fn bad_clients_get_alerts_and_the_server_keeps_serving() {
    with_server(
        "bad_clients_get_alerts_and_the_server_keeps_serving",
        |port, _, cert| {
            // Only ciphers the server lacks: a handshake_failure alert.
            for args in [
                &["-tls1_2", "-cipher", "DHE-RSA-AES128-SHA"][..],
                &["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256"],
            ] {
                let out = s_client(port, args, b"");
                if !out.contains("alert handshake failure") {
                    return Err(format!("{args:?}: no handshake_failure alert:\n{out}"));
                }
            }
            // A name the certificate does not have: the server answers with the
            // certificate it has and the client refuses it.
            let out = s_client(
                port,
                &[
                    "-servername",
                    "other.example",
                    "-verify_hostname",
                    "other.example",
                    "-CAfile",
                    cert.to_str().unwrap(),
                ],
                b"",
            );
            if !out.contains("Verification error: hostname mismatch") {
                return Err(format!("wrong SNI:\n{out}"));
            }
            // Renegotiation (TLS 1.2) is refused.
            let out = s_client(port, &["-tls1_2"], b"R\n");
            if !out.contains("RENEGOTIATING") || !out.contains("no renegotiation") {
                return Err(format!("renegotiation:\n{out}"));
            }
            // 1,000 connections with garbage, a ClientHello header with
            // garbage inside, or a record cut short.
            let mut seed = 0x2545_f491_4f6c_dd1d_u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for i in 0..1000 {
                let mut bytes: Vec<u8> = (0..(next() % 600)).map(|_| next() as u8).collect();
                match i % 3 {
                    0 => {}
                    1 => bytes
                        .splice(
                            0..0,
                            [
                                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                            ],
                        )
                        .for_each(drop),
                    _ => bytes
                        .splice(0..0, [0x16, 0x03, 0x03, 0x40, 0x00])
                        .for_each(drop),
                }
                let mut tcp = TcpStream::connect(("127.0.0.1", port))
                    .map_err(|e| format!("connection {i}: {e}"))?;
                tcp.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let _ = tcp.write_all(&bytes);
                let _ = tcp.shutdown(std::net::Shutdown::Write);
                let _ = tcp.read(&mut [0u8; 64]);
            }
            check_pages(port, cert, &[])
        },
    );
}

#[test]
fn every_https_response_has_hsts_and_bodies_are_untouched() {
    with_server(
        "every_https_response_has_hsts_and_bodies_are_untouched",
        |port, _, cert| {
            // On one connection: a HEAD, a GET of a body sent apart from its
            // head (over 64 KiB), a 404, a GET.
            let base = format!("https://localhost:{port}");
            let out = curl(&[
                "--cacert",
                cert.to_str().unwrap(),
                "-i",
                "-I",
                &format!("{base}/index.html"),
                "--next",
                "--cacert",
                cert.to_str().unwrap(),
                "-i",
                &format!("{base}/big.txt"),
                "--next",
                "--cacert",
                cert.to_str().unwrap(),
                "-i",
                &format!("{base}/missing"),
                "--next",
                "--cacert",
                cert.to_str().unwrap(),
                "-i",
                &format!("{base}/robots.txt"),
            ])?;
            let text = String::from_utf8_lossy(&out);
            let header = format!("strict-transport-security: max-age={HSTS}\r\n");
            let count = text.to_ascii_lowercase().matches(&header).count();
            if count != 4 {
                return Err(format!(
                    "{count} responses of 4 had {header:?}:\n{}",
                    &text[..text.len().min(2000)]
                ));
            }
            let big = std::str::from_utf8(SITE[0].1).unwrap();
            if !text.contains(big) || !text.ends_with(std::str::from_utf8(SITE[2].1).unwrap()) {
                return Err("a body changed".into());
            }
            Ok(())
        },
    );
}

#[test]
fn plain_http_is_redirected() {
    with_server("plain_http_is_redirected", |port, http_port, _| {
        let out = curl(&[
            "-i",
            &format!("http://localhost:{http_port}/index.html?x=1"),
        ])?;
        let out = String::from_utf8_lossy(&out);
        let want = format!("location: https://localhost:{port}/index.html?x=1\r\n");
        if !out.starts_with("HTTP/1.1 308") || !out.to_ascii_lowercase().contains(&want) {
            return Err(format!("no redirect to {want}:\n{out}"));
        }
        Ok(())
    });
}

fn options(sni_strict: bool, client_ca: &str) -> wwws::TlsOptions {
    wwws::TlsOptions {
        cert: "cert.pem".into(),
        key: "key.pem".into(),
        sni_dir: "sni".into(),
        sni_strict,
        client_ca: client_ca.into(),
    }
}

/// Whether `openssl s_client`'s output shows the server's leaf as
/// `/CN=cn`.
fn subject_is(out: &str, cn: &str) -> bool {
    out.lines().any(|l| {
        l.strip_prefix("subject=")
            .is_some_and(|s| s.replace(' ', "") == format!("CN={cn}"))
    })
}

/// A store with the default identity (`localhost`) and two more under
/// `sni/`: `one.test`, and `two.test` with `*.two.test`.
fn sni_store(pki: &Pki) -> Baked {
    pki.self_signed("one.pem", "one.key", "one.test", "DNS:one.test");
    pki.self_signed(
        "two.pem",
        "two.key",
        "two.test",
        "DNS:two.test,DNS:*.two.test",
    );
    pki.store_of(&[
        ("cert.pem", "cert.pem"),
        ("key.pem", "key.pem"),
        ("sni/one/cert.pem", "one.pem"),
        ("sni/one/key.pem", "one.key"),
        ("sni/two/cert.pem", "two.pem"),
        ("sni/two/key.pem", "two.key"),
    ])
}

#[test]
fn sni_chooses_the_certificate_by_name() {
    let test = "sni_chooses_the_certificate_by_name";
    if !tools_or_skip(test) {
        return;
    }
    let pki = Pki::new(test);
    let store = sni_store(&pki);
    let dir = pki.0.path().to_path_buf();
    serve(test, store, options(false, ""), move |port, _| {
        // Each name verified against its own certificate alone, over TLS
        // 1.3 and 1.2.
        for version in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"]] {
            for (name, ca) in [
                ("one.test", "one.pem"),
                ("two.test", "two.pem"),
                ("www.two.test", "two.pem"),
                ("localhost", "cert.pem"),
            ] {
                let resolve = format!("{name}:{port}:127.0.0.1");
                let ca = dir.join(ca);
                let url = format!("https://{name}:{port}/robots.txt");
                let args = [
                    &["--resolve", &resolve, "--cacert", ca.to_str().unwrap()][..],
                    version,
                    &[&url],
                ]
                .concat();
                let got = curl(&args).map_err(|e| format!("{name} {version:?}: {e}"))?;
                if got != SITE[2].1 {
                    return Err(format!("{name} {version:?}: another body"));
                }
            }
        }
        // The leaf's subject for each name; the default for an unknown
        // name, for no name, and for a name two labels under a wildcard.
        for (args, cn) in [
            (&["-servername", "one.test"][..], "one.test"),
            (&["-servername", "ONE.test", "-tls1_2"], "one.test"),
            (&["-servername", "two.test"], "two.test"),
            (&["-servername", "a.two.test"], "two.test"),
            (&["-servername", "a.b.two.test"], "localhost"),
            (&["-servername", "other.test"], "localhost"),
            (&["-noservername"], "localhost"),
        ] {
            let out = s_client(port, args, b"");
            if !subject_is(&out, cn) {
                return Err(format!("{args:?}: not the certificate of {cn}:\n{out}"));
            }
        }
        Ok(())
    });
    drop(pki);
}

#[test]
fn sni_strict_refuses_unknown_names() {
    let test = "sni_strict_refuses_unknown_names";
    if !tools_or_skip(test) {
        return;
    }
    let pki = Pki::new(test);
    let store = sni_store(&pki);
    serve(test, store, options(true, ""), move |port, _| {
        for version in ["-tls1_3", "-tls1_2"] {
            let out = s_client(port, &["-servername", "other.test", version], b"");
            if !out.contains("alert access denied") || subject_is(&out, "localhost") {
                return Err(format!(
                    "{version}: an unknown name was not refused:\n{out}"
                ));
            }
            for (args, cn) in [
                (&["-servername", "one.test", version][..], "one.test"),
                (&["-servername", "localhost", version], "localhost"),
                (&["-noservername", version], "localhost"),
            ] {
                let out = s_client(port, args, b"");
                if !subject_is(&out, cn) {
                    return Err(format!("{args:?}: not the certificate of {cn}:\n{out}"));
                }
            }
        }
        Ok(())
    });
    drop(pki);
}

#[test]
fn stateless_tickets_resume_tls13_and_tls12_more_than_once() {
    with_server(
        "stateless_tickets_resume_tls13_and_tls12_more_than_once",
        |port, _, _| {
            // A request that makes the server close, so that s_client reads
            // the tickets that follow the handshake before it ends.
            let request =
                b"GET /robots.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
            for (version, name) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
                let session =
                    std::env::temp_dir().join(format!("kiln-wwws-ticket-{port}{version}"));
                let session = session.to_str().unwrap();
                let first = s_client(port, &[version, "-ign_eof", "-sess_out", session], request);
                // The same ticket twice: a stateless ticket opens as often as
                // it is offered (a cached TLS 1.3 session resumes once).
                let again: Vec<String> = (0..2)
                    .map(|_| s_client(port, &[version, "-ign_eof", "-sess_in", session], request))
                    .collect();
                let _ = std::fs::remove_file(session);
                if !first.contains(&format!("New, {name}"))
                    || !first.contains("TLS session ticket:")
                {
                    return Err(format!("{name}: no ticket:\n{first}"));
                }
                for (i, out) in again.iter().enumerate() {
                    if !out.contains(&format!("Reused, {name}")) || !out.contains("User-agent") {
                        return Err(format!("{name}: resumption {} failed:\n{out}", i + 1));
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn client_certificates_from_the_store_ca_are_required() {
    let test = "client_certificates_from_the_store_ca_are_required";
    if !tools_or_skip(test) {
        return;
    }
    let pki = Pki::new(test);
    let dir = pki.0.path().to_path_buf();
    pki::ca(&dir, "ca");
    pki::client(&dir, "client", "client", "ca");
    // A certificate of the same name that the CA did not issue.
    pki.self_signed("stranger.pem", "stranger.key", "client", "DNS:client");
    let store = pki.store_of(&[
        ("cert.pem", "cert.pem"),
        ("key.pem", "key.pem"),
        ("clients.pem", "ca.pem"),
    ]);
    serve(
        test,
        store,
        options(false, "clients.pem"),
        move |port, _| {
            let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
            let url = format!("https://localhost:{port}/robots.txt");
            for version in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"]] {
                let ca = path("cert.pem");
                let base = [&["--cacert", &ca][..], version].concat();
                let with = |cert: &str, key: &str| {
                    curl(
                        &[
                            &base[..],
                            &["--cert", &path(cert), "--key", &path(key), &url],
                        ]
                        .concat(),
                    )
                };
                match with("client.pem", "client.key") {
                    Ok(body) if body == SITE[2].1 => {}
                    other => return Err(format!("{version:?}: the CA's client: {other:?}")),
                }
                if let Ok(body) = with("stranger.pem", "stranger.key") {
                    return Err(format!("{version:?}: a stranger got {body:?}"));
                }
                if let Ok(body) = curl(&[&base[..], &[&url]].concat()) {
                    return Err(format!("{version:?}: no certificate got {body:?}"));
                }
            }
            Ok(())
        },
    );
    drop(pki);
}

#[test]
fn bad_identities_and_client_cas_are_typed_errors() {
    let test = "bad_identities_and_client_cas_are_typed_errors";
    if !tools_or_skip(test) {
        return;
    }
    let pki = Pki::new(test);
    let store = pki.store_of(&[
        ("cert.pem", "cert.pem"),
        ("key.pem", "key.pem"),
        ("sni/half/cert.pem", "cert.pem"),
        ("garbage.pem", "key.pem"),
    ]);
    let config = |o: wwws::TlsOptions| {
        block_on(
            platform(),
            wwws::tls_config(&store, Random::new(), WallClock::new(), &o),
        )
        .map(|_| ())
    };
    let err = config(options(false, "")).unwrap_err();
    assert!(
        err.to_string().contains("`sni/half/key.pem`"),
        "a half identity: {err}"
    );
    let ok = wwws::TlsOptions {
        sni_dir: "none".into(),
        ..options(false, "")
    };
    config(ok.clone()).expect("no sni dictionary is no more identities");
    let err = config(wwws::TlsOptions {
        client_ca: "garbage.pem".into(),
        ..ok.clone()
    })
    .unwrap_err();
    assert!(matches!(err, wwws::WwwsError::ClientCa(_)), "{err}");
    let err = config(wwws::TlsOptions {
        client_ca: "missing.pem".into(),
        ..ok
    })
    .unwrap_err();
    assert!(matches!(err, wwws::WwwsError::ClientCa(_)), "{err}");
}
