//! The plain-HTTP port: every request gets `308 Permanent Redirect` to the
//! same host and path over HTTPS (RFC 9110 section 15.4.9), then the
//! connection closes.

use alloc::format;
use alloc::string::String;
use core::time::Duration;

use kiln_devices::{TcpListener, TcpStream};

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The response to `head` (a request head): a redirect to `https://` on
/// `tls_port`, or `400` if it has no usable Host or target.
pub fn response(head: &[u8], tls_port: u16) -> String {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let target = match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {
            req.path.filter(|p| p.starts_with('/')).and_then(|path| {
                // Exactly one Host field (RFC 9112 section 3.2).
                let mut hosts = req
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("host"));
                let host = hosts
                    .next()
                    .and_then(|h| core::str::from_utf8(h.value).ok())?;
                if hosts.next().is_some() {
                    return None;
                }
                // The host without its port (an IPv6 literal keeps its brackets).
                let name = match host.rfind(':') {
                    Some(i) if !host[i..].contains(']') => &host[..i],
                    _ => host,
                };
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b));
                valid.then(|| match tls_port {
                    443 => format!("https://{name}{path}"),
                    port => format!("https://{name}:{port}{path}"),
                })
            })
        }
        _ => None,
    };
    match target {
        Some(location) => format!(
            "HTTP/1.1 308 Permanent Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        None => String::from(
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
    }
}

/// Reads one request head from `stream` and answers it.
async fn redirect_one<S: TcpStream>(stream: &mut S, tls_port: u16) {
    let mut buf = alloc::vec![0u8; MAX_HEAD];
    let mut filled = 0;
    let read_head = async {
        while filled < buf.len() {
            match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => filled += n,
            }
            if buf[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
                return true;
            }
        }
        true
    };
    if !matches!(kiln_rt::timeout(REQUEST_TIMEOUT, read_head).await, Ok(true)) {
        return;
    }
    let resp = response(&buf[..filled], tls_port);
    let _ = kiln_rt::timeout(REQUEST_TIMEOUT, stream.write_all(resp.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// Answers every connection on `listener` with a redirect.
pub async fn run<L>(listener: L, tls_port: u16)
where
    L: TcpListener,
    L::Stream: 'static,
{
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                kiln_rt::spawn(async move { redirect_one(&mut stream, tls_port).await });
            }
            Err(e) => {
                log::error!("accept failed on the HTTP port: {e}");
                kiln_rt::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_to_the_same_host_and_path() {
        let r = response(
            b"GET /a/b?c HTTP/1.1\r\nHost: example.org:8080\r\n\r\n",
            443,
        );
        assert!(r.starts_with("HTTP/1.1 308"), "{r}");
        assert!(r.contains("Location: https://example.org/a/b?c\r\n"), "{r}");
        let r = response(b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", 8443);
        assert!(r.contains("Location: https://[::1]:8443/\r\n"), "{r}");
    }

    #[test]
    fn refuses_requests_without_a_usable_host() {
        for head in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: evil.org\r\nX: y\r\nHost: x\"y\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x16\x03\x01garbage",
        ] {
            let r = response(head, 443);
            assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        }
        // A Host with characters that could split the header is refused.
        let r = response(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 443);
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    }
}
