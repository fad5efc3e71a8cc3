//! Server and client configurations: the provider (RustCrypto, with kiln's
//! random device), the wall clock as rustls's time, identities and CA roots
//! in PEM from a key-value store.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use kiln_devices::{KvRo, Random, WallClock};
use rustls::client::ClientSessionMemoryCache;
use rustls::crypto::CryptoProvider;
use rustls::lock::{Lock, MakeMutex, MutexGuard, Poisoned};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::TlsError;
use crate::entropy::{self, DeviceRandom};
use crate::sni::{ByName, UnknownName};
use crate::tickets;

/// Sessions a server remembers for resumption by TLS 1.2 session ID (and
/// TLS 1.3 stateful tickets with [`ServerSettings::no_tickets`]), about 200
/// bytes each. Tickets otherwise carry their session sealed
/// ([`crate::tickets`]).
pub const SESSION_CACHE: usize = 1024;

/// Whether AES-GCM runs on the CPU's AES-NI and carry-less multiply here.
/// Freestanding images (`x86_64-unknown-none`, soft-float) use RustCrypto's
/// portable AES and GHASH, which cost about four times ChaCha20-Poly1305's
/// portable code per byte (docs/tls.md); unix builds pick AES-NI at run
/// time.
pub const AES_HARDWARE: bool = !cfg!(target_os = "none");

/// Whether `suite` is one of the ChaCha20-Poly1305 suites.
fn is_chacha20(suite: &rustls::SupportedCipherSuite) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        suite.suite(),
        S::TLS13_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// The crypto provider every configuration uses: RustCrypto's cipher
/// suites, key exchanges and signatures, kiln's random device. Without
/// [`AES_HARDWARE`] the ChaCha20-Poly1305 suites come first (servers then
/// choose by their own order, see [`server_config`]).
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls_rustcrypto::provider();
    order_suites(&mut provider.cipher_suites, AES_HARDWARE);
    Arc::new(CryptoProvider {
        secure_random: &DeviceRandom,
        ..provider
    })
}

/// Without `aes_hardware`, ChaCha20-Poly1305 first among the TLS 1.3
/// suites and among the TLS 1.2 ones; a stable sort keeps the rest of the
/// order.
fn order_suites(suites: &mut [rustls::SupportedCipherSuite], aes_hardware: bool) {
    if !aes_hardware {
        suites.sort_by_key(|s| (s.tls13().is_none(), !is_chacha20(s)));
    }
}

/// A wall clock as rustls's time (certificate validity).
struct Clock<W>(W);

impl<W> fmt::Debug for Clock<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

impl<W: WallClock + Send + Sync> TimeProvider for Clock<W> {
    fn current_time(&self) -> Option<UnixTime> {
        let nanos = self.0.now().as_unix_nanos();
        Some(UnixTime::since_unix_epoch(
            core::time::Duration::from_nanos(nanos),
        ))
    }
}

/// A certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct Identity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key (PKCS#8, SEC1 or PKCS#1).
    pub key: PrivateKeyDer<'static>,
}

async fn read(store: &impl KvRo, key: &str) -> Result<Vec<u8>, TlsError> {
    store
        .get(key)
        .await
        .map(|v| v.into_owned())
        .map_err(|source| TlsError::Store {
            key: key.to_string(),
            source,
        })
}

/// Every certificate of a PEM text.
pub fn certificates_from_pem(
    key: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::Pem {
            key: key.to_string(),
            what: "malformed PEM",
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            key: key.to_string(),
            what: "no CERTIFICATE block",
        });
    }
    Ok(certs)
}

impl Identity {
    /// Reads the chain from `chain_key` and the private key from `key_key`
    /// of `store`, both PEM.
    pub async fn load(
        store: &impl KvRo,
        chain_key: &str,
        key_key: &str,
    ) -> Result<Identity, TlsError> {
        let chain = certificates_from_pem(chain_key, &read(store, chain_key).await?)?;
        let key_pem = read(store, key_key).await?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
            key: key_key.to_string(),
            what: "no PRIVATE KEY block",
        })?;
        Ok(Identity { chain, key })
    }

    /// Every identity under the dictionary `dir` of `store`: each
    /// sub-dictionary `dir/NAME` holding `cert.pem` (the chain) and
    /// `key.pem`, in the store's (name) order, with `NAME`. No `dir` in
    /// the store: none. Entries of `dir` that are values are ignored.
    pub async fn load_dir(
        store: &impl KvRo,
        dir: &str,
    ) -> Result<Vec<(String, Identity)>, TlsError> {
        let entries = match store.list(dir).await {
            Ok(entries) => entries,
            Err(kiln_devices::KvError::NotFound) => return Ok(Vec::new()),
            Err(source) => {
                return Err(TlsError::Store {
                    key: dir.to_string(),
                    source,
                });
            }
        };
        let mut identities = Vec::new();
        for (name, kind) in entries {
            if kind != kiln_devices::EntryKind::Dictionary {
                continue;
            }
            let base = alloc::format!("{}/{name}", dir.trim_end_matches('/'));
            let identity = Identity::load(
                store,
                &alloc::format!("{base}/cert.pem"),
                &alloc::format!("{base}/key.pem"),
            )
            .await?;
            identities.push((name, identity));
        }
        Ok(identities)
    }
}

/// What a server offers beyond its identity.
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    /// ALPN protocols in order of preference (`http/1.1`, ...); empty for
    /// no ALPN.
    pub alpn: Vec<Vec<u8>>,
    /// Only TLS 1.3 (no 1.2).
    pub tls13_only: bool,
    /// No stateless tickets: TLS 1.3 resumes from the session cache (each
    /// ticket once), TLS 1.2 by session ID only.
    pub no_tickets: bool,
    /// What a server name none of the certificates has gets.
    pub unknown_name: UnknownName,
    /// Verify client certificates against these roots (mutual TLS):
    /// clients without a certificate that chains to one of them are
    /// refused. `None`: no client certificates asked for.
    pub client_roots: Option<RootCertStore>,
}

/// A server configuration with one identity: [`server_config_by_name`]
/// without others.
pub fn server_config<R, W>(
    random: R,
    clock: W,
    identity: Identity,
    settings: &ServerSettings,
) -> Result<Arc<ServerConfig>, TlsError>
where
    R: Random + Send + Sync + 'static,
    W: WallClock + Send + Sync + 'static,
{
    server_config_by_name(random, clock, identity, Vec::new(), settings)
}

/// rustls's time as a `'static` reference, as its ticket rotation wants
/// it, and as an `Arc` for the configuration.
#[derive(Debug)]
struct StaticClock(&'static dyn TimeProvider);

impl TimeProvider for StaticClock {
    fn current_time(&self) -> Option<UnixTime> {
        self.0.current_time()
    }
}

/// A server configuration: TLS 1.3 and 1.2; `default` for ClientHellos
/// without a server name, `others` chosen by name ([`crate::sni`]);
/// resumption by stateless tickets ([`crate::tickets`]) and TLS 1.2
/// session IDs from an in-memory cache of [`SESSION_CACHE`] sessions;
/// client certificates if [`ServerSettings::client_roots`]. `random`
/// becomes the TLS random source (and the tickets' keys), `clock` rustls's
/// time (certificate validity, ticket key rotation). The clock lives as
/// long as the image (one small allocation per configuration).
pub fn server_config_by_name<R, W>(
    random: R,
    clock: W,
    default: Identity,
    others: Vec<Identity>,
    settings: &ServerSettings,
) -> Result<Arc<ServerConfig>, TlsError>
where
    R: Random + Send + Sync + 'static,
    W: WallClock + Send + Sync + 'static,
{
    entropy::install(random);
    let clock: &'static Clock<W> = Box::leak(Box::new(Clock(clock)));
    let provider = provider();
    let resolver = ByName::new(default, others, settings.unknown_name, &provider)?;
    let versions: &[&rustls::SupportedProtocolVersion] = if settings.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder =
        ServerConfig::builder_with_details(provider.clone(), Arc::new(StaticClock(clock)))
            .with_protocol_versions(versions)?;
    let builder = match &settings.client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider)
                    .build()
                    .map_err(|e| TlsError::ClientRoots(alloc::format!("{e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = settings.alpn.clone();
    config.session_storage = ServerSessionMemoryCache::new::<SpinMutex>(SESSION_CACHE);
    if !settings.no_tickets {
        config.ticketer = tickets::ticketer(clock)?;
    }
    config.max_early_data_size = 0;
    // Without AES hardware the server's order (ChaCha20-Poly1305 first)
    // wins over a client's preference for AES-GCM, as BoringSSL's servers
    // do for clients without AES hardware; a client that offers no
    // ChaCha20 still gets AES-GCM.
    config.ignore_client_order = !AES_HARDWARE;
    Ok(Arc::new(config))
}

/// What a client verifies against and offers.
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    /// ALPN protocols to offer.
    pub alpn: Vec<Vec<u8>>,
    /// Only TLS 1.2 (no 1.3).
    pub tls12_only: bool,
}

/// Reads CA certificates (PEM, one or more) from `key` of `store`.
pub async fn roots_from_store(store: &impl KvRo, key: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates_from_pem(key, &read(store, key).await?)? {
        roots.add(cert).map_err(|_| TlsError::Pem {
            key: key.to_string(),
            what: "not a usable CA certificate",
        })?;
    }
    Ok(roots)
}

/// A client configuration that verifies servers against `roots` (chain,
/// name and validity at `clock`'s time), TLS 1.3 and 1.2.
pub fn client_config<R, W>(
    random: R,
    clock: W,
    roots: RootCertStore,
    settings: &ClientSettings,
) -> Result<Arc<ClientConfig>, TlsError>
where
    R: Random + Send + Sync + 'static,
    W: WallClock + Send + Sync + 'static,
{
    entropy::install(random);
    let versions: &[&rustls::SupportedProtocolVersion] = if settings.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = ClientConfig::builder_with_details(provider(), Arc::new(Clock(clock)))
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = settings.alpn.clone();
    config.resumption = rustls::client::Resumption::store(Arc::new(
        ClientSessionMemoryCache::new::<SpinMutex>(SESSION_CACHE),
    ));
    Ok(Arc::new(config))
}

/// rustls's locks without std: spin locks (a kiln unikernel has one thread,
/// so they are never contended).
#[derive(Debug)]
pub(crate) struct SpinMutex;

struct SpinLock<T>(spin::Mutex<T>);

impl<T> fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpinLock")
    }
}

impl<T: Send> Lock<T> for SpinLock<T> {
    fn lock(&self) -> Result<MutexGuard<'_, T>, Poisoned> {
        Ok(Box::new(self.0.lock()))
    }
}

impl MakeMutex for SpinMutex {
    fn make_mutex<T: Send + 'static>(value: T) -> Arc<dyn Lock<T>> {
        Arc::new(SpinLock(spin::Mutex::new(value)))
    }
}

/// A DNS name or IP address as a server name for [`crate::connect`].
pub fn server_name(name: &str) -> Result<rustls_pki_types::ServerName<'static>, TlsError> {
    rustls_pki_types::ServerName::try_from(String::from(name))
        .map_err(|_| TlsError::ServerName(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite as S;

    #[test]
    fn chacha20_comes_first_without_aes_hardware() {
        let names = |aes_hardware| {
            let mut suites = rustls_rustcrypto::provider().cipher_suites;
            order_suites(&mut suites, aes_hardware);
            suites.iter().map(|s| s.suite()).collect::<Vec<_>>()
        };
        let soft = names(false);
        assert_eq!(soft[0], S::TLS13_CHACHA20_POLY1305_SHA256);
        let first12 = soft
            .iter()
            .position(|s| u16::from(*s) >> 8 == 0xc0 || u16::from(*s) >> 8 == 0xcc)
            .unwrap();
        assert!(matches!(
            soft[first12],
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        ));
        // Every TLS 1.3 suite (0x13xx) before every TLS 1.2 one.
        assert!(soft[..first12].iter().all(|s| u16::from(*s) >> 8 == 0x13));
        assert!(soft[first12..].iter().all(|s| u16::from(*s) >> 8 != 0x13));
        // The same suites, and the provider's own order with AES hardware.
        let hard = names(true);
        let provider: Vec<_> = rustls_rustcrypto::provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(hard, provider);
        let mut a = soft.iter().map(|s| u16::from(*s)).collect::<Vec<_>>();
        let mut b = hard.iter().map(|s| u16::from(*s)).collect::<Vec<_>>();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }
}
