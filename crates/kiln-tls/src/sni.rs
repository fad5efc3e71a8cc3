//! Several identities on one server, chosen by the ClientHello's server
//! name (SNI), as a [`ResolvesServerCert`].
//!
//! Each identity serves the DNS names its certificate lists as subject
//! alternative names, read once when the configuration is made. For a
//! server name, the first identity (the default first, then the others in
//! the order given) with exactly that name wins; failing that, the first
//! with a wildcard `*.rest` where the name is one label followed by
//! `.rest`. A ClientHello without a server name (or with an IP address,
//! which SNI cannot carry) gets the default identity; one with a name no
//! certificate has gets the default too, or, with
//! [`UnknownName::Refuse`], an `access_denied` alert.
//!
//! The choice is only a choice: the client still verifies the certificate
//! against the name it wanted.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::TlsError;
use crate::config::Identity;

/// What a server does with a server name none of its certificates has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnknownName {
    /// Answer with the default identity (the client will refuse it unless
    /// it covers the name some other way); as nginx's default server does.
    #[default]
    Default,
    /// End the handshake with an `access_denied` alert.
    Refuse,
}

struct Named {
    /// DNS names of the certificate, lowercase, wildcards as `*.rest`.
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// Chooses among identities by server name (module documentation).
pub struct ByName {
    /// The default first.
    identities: Vec<Named>,
    unknown: UnknownName,
}

impl fmt::Debug for ByName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByName")
            .field(
                "names",
                &self.identities.iter().map(|i| &i.names).collect::<Vec<_>>(),
            )
            .field("unknown", &self.unknown)
            .finish()
    }
}

/// The DNS names (subject alternative names) of `identity`'s leaf,
/// lowercase: the names it is chosen for.
pub fn names_of(identity: &Identity) -> Result<Vec<String>, TlsError> {
    let leaf = identity
        .chain
        .first()
        .ok_or(TlsError::Protocol(rustls::Error::NoCertificatesPresented))?;
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|_| {
        TlsError::Protocol(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))
    })?;
    Ok(cert
        .valid_dns_names()
        .map(|n| n.to_ascii_lowercase())
        .collect())
}

impl ByName {
    /// `default` for no server name and (with [`UnknownName::Default`])
    /// unknown ones, `others` for the names their certificates have. Each
    /// key must be one `provider` can sign with and match its leaf.
    pub fn new(
        default: Identity,
        others: Vec<Identity>,
        unknown: UnknownName,
        provider: &CryptoProvider,
    ) -> Result<ByName, TlsError> {
        let mut identities = Vec::with_capacity(1 + others.len());
        for identity in core::iter::once(default).chain(others) {
            let names = names_of(&identity)?;
            let key = CertifiedKey::from_der(identity.chain, identity.key, provider)?;
            identities.push(Named {
                names,
                key: Arc::new(key),
            });
        }
        Ok(ByName {
            identities,
            unknown,
        })
    }

    /// The index of the identity for `name` (0 is the default), or `None`
    /// for a name no certificate has.
    pub fn choose(&self, name: &str) -> Option<usize> {
        pick(self.identities.iter().map(|i| i.names.as_slice()), name)
    }
}

/// The index of the first name list with exactly `name`, else of the first
/// with a wildcard covering it (one label followed by the wildcard's rest).
fn pick<'a>(lists: impl Iterator<Item = &'a [String]> + Clone, name: &str) -> Option<usize> {
    if name.contains('*') {
        return None;
    }
    let exact = lists
        .clone()
        .position(|names| names.iter().any(|n| n.eq_ignore_ascii_case(name)));
    exact.or_else(|| {
        let (first, rest) = name.split_once('.')?;
        if first.is_empty() || rest.is_empty() {
            return None;
        }
        lists.clone().position(|names| {
            names.iter().any(|n| {
                n.strip_prefix("*.")
                    .is_some_and(|suffix| suffix.eq_ignore_ascii_case(rest))
            })
        })
    })
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let index = match hello.server_name() {
            None => 0,
            Some(name) => match (self.choose(name), self.unknown) {
                (Some(i), _) => i,
                (None, UnknownName::Default) => 0,
                (None, UnknownName::Refuse) => return None,
            },
        };
        self.identities.get(index).map(|i| i.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn exact_names_win_over_wildcards_then_order() {
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let lists = [
            list(&["default.example"]),
            list(&["*.example.org"]),
            list(&["a.example.org", "b.example"]),
            list(&["*.example.org", "example.org"]),
        ];
        let pick = |name| pick(lists.iter().map(|l| l.as_slice()), name);
        assert_eq!(pick("default.example"), Some(0));
        assert_eq!(pick("A.Example.ORG"), Some(2));
        assert_eq!(pick("c.example.org"), Some(1));
        assert_eq!(pick("example.org"), Some(3));
        assert_eq!(pick("b.example"), Some(2));
        // A wildcard covers one label only, and not itself.
        assert_eq!(pick("x.c.example.org"), None);
        assert_eq!(pick("*.example.org"), None);
        assert_eq!(pick(".example.org"), None);
        assert_eq!(pick("other.example"), None);
        assert_eq!(pick(""), None);
    }
}
