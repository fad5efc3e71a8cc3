//! `https://HOST[:PORT]/PATH` URLs (RFC 3986's authority and path, without
//! user information).

use alloc::string::String;

/// A parsed `https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The host: a DNS name, an IPv4 address or a bracketed IPv6 address.
    pub host: String,
    /// The port (443 by default).
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `s`; `None` unless it is an `https` URL with a host.
    pub fn parse(s: &str) -> Option<Url> {
        let rest = s.strip_prefix("https://")?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                (&authority[..i], authority[i + 1..].parse().ok()?)
            }
            _ => (authority, 443),
        };
        let valid_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_[]:".contains(&b));
        let valid_path = path.bytes().all(|b| b.is_ascii_graphic());
        if !valid_host || !valid_path || port == 0 {
            return None;
        }
        let path = if path.starts_with('?') {
            alloc::format!("/{path}")
        } else {
            String::from(path)
        };
        Some(Url {
            host: String::from(host),
            port,
            path,
        })
    }
}

/// Whether `host` is an IP address (IPv6 in brackets).
pub fn is_ip_literal(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    bare.unwrap_or(host).parse::<core::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_path() {
        let u = Url::parse("https://example.org/a/b?c=d").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("example.org", 443, "/a/b?c=d")
        );
        let u = Url::parse("https://10.0.0.1:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.0.1", 8443, "/")
        );
        let u = Url::parse("https://[::1]:4443/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 4443));
    }

    #[test]
    fn refuses_other_urls() {
        for bad in [
            "http://example.org/",
            "https://",
            "https://:443/",
            "https://a b/",
            "https://host:0/",
            "https://host:99999/",
            "https://host/a\r\nX: y",
        ] {
            assert_eq!(Url::parse(bad), None, "{bad}");
        }
    }
}
