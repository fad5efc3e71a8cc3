//! One HTTP/1.1 connection: parsing requests (RFC 9112 message syntax, with
//! `httparse`), answering them from the store (RFC 9110 semantics: GET,
//! HEAD, conditional requests with `If-None-Match`), keep-alive, and the
//! timeouts that keep a slow or silent client from holding a task forever.

use alloc::borrow::Cow;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use kiln_devices::kv::normalize;
use kiln_devices::{EntryKind, Instant, KvError, KvRo, StackError, TcpStream};
use kiln_rt::{Either, select, sleep_until, timeout};

use crate::clients::Ticket;
use crate::metrics::Metrics;
use crate::mime::content_type;

/// Most header fields accepted in one request.
const MAX_HEADERS: usize = 64;

/// Bounds on what one connection may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and header fields) in bytes;
    /// larger ones get 431.
    pub max_head: usize,
    /// How long a kept-alive connection may sit idle between requests.
    pub idle: Duration,
    /// How long a client may take to send a whole request head, from its
    /// first byte; slower ones get 408.
    pub request: Duration,
    /// How long writing one response may take (a client that stops
    /// reading).
    pub write: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8 * 1024,
            idle: Duration::from_secs(15),
            request: Duration::from_secs(10),
            write: Duration::from_secs(30),
        }
    }
}

/// What a connection did before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Responses sent (error responses included).
    pub responses: u32,
}

/// What a connection does besides serving files: the metrics page and
/// the counting of its responses. The default does neither.
#[derive(Debug, Clone, Default)]
pub struct Observe {
    /// The path the metrics page is served at (`--metrics-path`); `None`:
    /// nowhere, the path is looked up in the store like any other.
    pub metrics_path: Option<Rc<str>>,
    /// Where responses are counted; `None`: not counted (no clock read).
    pub metrics: Option<Rc<Metrics>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other => "-",
        }
    }
}

/// The parts of a request the server acts on, copied out of the read
/// buffer.
struct Request {
    method: Method,
    /// The decoded path of the request target, starting with `/`.
    path: String,
    keep_alive: bool,
    if_none_match: Option<String>,
    /// The request has a body (which this server does not read).
    has_body: bool,
}

/// A response before it is written.
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Cow<'static, [u8]>,
    close: bool,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

impl Response {
    /// An error (or redirect) with a short plain-text body.
    fn error(status: u16) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: Cow::Owned(format!("{status} {}\n", reason(status)).into_bytes()),
            close: false,
        }
    }

    fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    /// The status line and header fields. A 304 has no Content-Length: it
    /// describes the representation it stands for, and we send none.
    fn head(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nServer: kiln-www\r\n",
            self.status,
            reason(self.status)
        );
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        if self.status != 304 {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if self.close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

/// Decodes the `%XX` escapes of a request path (RFC 3986 2.1) with the
/// `percent-encoding` crate; `None` (400 Bad Request) for a `%` not followed
/// by two hexadecimal digits (the crate would keep it as it is), a result
/// that is not UTF-8, or one holding a NUL (no file name has one). Dot
/// segments, escaped or not, are refused later by the store's key check.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let escapes_valid = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_valid {
        return None;
    }
    let path = percent_encoding::percent_decode(bytes).decode_utf8().ok()?;
    (!path.contains('\0')).then(|| path.into_owned())
}

/// The origin form (RFC 9112 3.2.1) of a request target: itself when it
/// starts with `/` (taken literally, `://` and all), or the path of an
/// absolute form (3.2.2) with scheme `http` or `https` (the authority is
/// ignored: this server has one site). Anything else gets 400.
fn origin_form(target: &str) -> Result<&str, u16> {
    if target.starts_with('/') {
        return Ok(target);
    }
    let (scheme, rest) = target.split_once("://").ok_or(400u16)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(400);
    }
    let path = rest.find(['/', '?']).map_or("/", |i| &rest[i..]);
    if path.starts_with('/') {
        Ok(path)
    } else {
        // `http://host?query`: the path is empty, meaning `/`.
        Err(400)
    }
}

/// Whether the header `name` has `token` in its comma-separated list.
fn has_token(value: &[u8], token: &str) -> bool {
    core::str::from_utf8(value)
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Copies what the server needs out of a parsed request, or says which
/// error status it deserves.
fn extract(req: &httparse::Request<'_, '_>) -> Result<Request, u16> {
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let version = req.version.ok_or(400u16)?;
    let target = origin_form(req.path.ok_or(400u16)?)?;
    let raw_path = target.split(['?', '#']).next().unwrap_or("/");
    let path = percent_decode(raw_path).ok_or(400u16)?;
    let mut host = 0;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut if_none_match = None;
    let mut has_body = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            host += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= has_token(h.value, "close");
            keep_alive_token |= has_token(h.value, "keep-alive");
        } else if name.eq_ignore_ascii_case("if-none-match") {
            let value = core::str::from_utf8(h.value).map_err(|_| 400u16)?;
            if_none_match = Some(value.into());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            let len: u64 = core::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(400u16)?;
            has_body |= len > 0;
        }
    }
    // RFC 9112 3.2: exactly one Host in an HTTP/1.1 request.
    if version == 1 && host != 1 {
        return Err(400);
    }
    let keep_alive = match version {
        1 => !close,
        _ => keep_alive_token && !close,
    };
    Ok(Request {
        method,
        path,
        keep_alive,
        if_none_match,
        has_body,
    })
}

/// Whether an `If-None-Match` list matches the entity tag `etag` (weak
/// comparison, RFC 9110 13.1.2).
fn none_match(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// Answers `req` from `htdocs`.
async fn respond<K: KvRo>(req: &Request, htdocs: &K) -> Response {
    if req.method == Method::Other {
        let mut r = Response::error(405);
        r.headers.push(("Allow", "GET, HEAD".into()));
        return r;
    }
    let key = match normalize(&req.path) {
        Ok(key) => key,
        Err(_) => return Response::error(400),
    };
    let key = match htdocs.exists(&key).await {
        Ok(Some(EntryKind::Value)) => key,
        Ok(Some(EntryKind::Dictionary)) => {
            if !req.path.ends_with('/') {
                // Built from the normalised key, never from the request's
                // path: `//docs` must not become `//docs/`, which a browser
                // reads as another host (a protocol-relative reference).
                let mut r = Response::error(301);
                r.headers.push(("Location", format!("/{key}/")));
                return r;
            }
            if key.is_empty() {
                "index.html".into()
            } else {
                format!("{key}/index.html")
            }
        }
        Ok(None) => return Response::error(404),
        Err(KvError::InvalidKey) => return Response::error(400),
        Err(_) => return Response::error(500),
    };
    let digest = match htdocs.digest(&key).await {
        Ok(d) => d,
        Err(KvError::NotFound | KvError::IsDictionary) => return Response::error(404),
        Err(_) => return Response::error(500),
    };
    let etag = format!("\"{digest}\"");
    if req
        .if_none_match
        .as_deref()
        .is_some_and(|list| none_match(list, &etag))
    {
        return Response {
            status: 304,
            headers: vec![("ETag", etag)],
            body: Cow::Borrowed(&[]),
            close: false,
        };
    }
    let body = match htdocs.get(&key).await {
        Ok(body) => body,
        Err(_) => return Response::error(500),
    };
    Response {
        status: 200,
        headers: vec![("Content-Type", content_type(&key).into()), ("ETag", etag)],
        body,
        close: false,
    }
}

/// The metrics page: every collector of the registry, in Prometheus's
/// text format.
fn metrics_page() -> Response {
    Response {
        status: 200,
        headers: vec![
            ("Content-Type", kiln_metrics::CONTENT_TYPE.into()),
            ("Cache-Control", "no-store".into()),
        ],
        body: Cow::Owned(kiln_metrics::render().into_bytes()),
        close: false,
    }
}

/// Counts a response of `status`, written by `now` (read only when
/// counting), to a request whose first byte came at `started` (now, if
/// unknown). Both are the executor's time: the time of the wakes that
/// read the request and wrote the response.
fn record(observe: &Observe, status: u16, started: Option<Instant>, now: impl FnOnce() -> Instant) {
    if let Some(m) = &observe.metrics {
        let now = now();
        let took = now.saturating_duration_since(started.unwrap_or(now));
        m.record(status, u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }
}

/// Bodies up to this size go out in the same write as the head. A head
/// written alone, then a body smaller than a segment, is held back by
/// Nagle's algorithm until the client acknowledges the head, which a
/// client waiting for the rest delays (40 ms on Linux): over the host's
/// sockets every small keep-alive response took 40 ms. 64 KiB covers a
/// loopback segment.
const COALESCE_MAX: usize = 64 * 1024;

/// How long a connection closed after an answer waits for the client to
/// close its side ([`close`]).
pub const LINGER: Duration = Duration::from_secs(2);

/// Closes our side of `stream` after an answer and waits, at most
/// [`LINGER`] (less if the place is needed), until the client closes its
/// side, discarding what it still sends. Until then the answer and our FIN
/// may still lie in the stack's buffers: the connection's end must not be
/// taken for the answer's delivery, or a stop (whose drain ends when the
/// last connection does, and the guest with it) loses the answer.
async fn close<S: TcpStream>(stream: &mut S, ticket: &Ticket) {
    if stream.shutdown().await.is_err() {
        return;
    }
    ticket.waiting(Some(kiln_rt::time::now()));
    let deadline = kiln_rt::time::now() + LINGER;
    let mut sink = [0u8; 256];
    loop {
        let read = stream.read(&mut sink);
        let stop = select(sleep_until(deadline), ticket.kicked());
        match select(read, stop).await {
            Either::Left(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// Writes `resp` (without its body for HEAD and 304), within the write
/// limit; the head and a small body in one write.
async fn send<S: TcpStream>(
    stream: &mut S,
    resp: &Response,
    head_only: bool,
    limits: &Limits,
) -> Result<(), StackError> {
    let with_body = !head_only && resp.status != 304;
    let write = async {
        let mut head = resp.head();
        if with_body && resp.body.len() <= COALESCE_MAX {
            head.extend_from_slice(&resp.body);
            stream.write_all(&head).await
        } else {
            stream.write_all(&head).await?;
            if with_body {
                stream.write_all(&resp.body).await?;
            }
            Ok(())
        }
    };
    timeout(limits.write, write)
        .await
        .unwrap_or(Err(StackError::TimedOut))
}

/// Serves requests on `stream` until the client closes, asks to close, sends
/// something malformed, or is too slow. Requests pipelined in one segment
/// are answered in order.
pub async fn serve<S: TcpStream, K: KvRo>(
    stream: &mut S,
    htdocs: &K,
    limits: &Limits,
) -> Result<Summary, StackError> {
    serve_client(stream, htdocs, limits, &Ticket::unlimited()).await
}

/// [`serve`] for a connection holding `ticket` among the server's
/// [`Clients`](crate::Clients): while it waits for a request it says so,
/// and closes when told to make room for a new connection.
pub async fn serve_client<S: TcpStream, K: KvRo>(
    stream: &mut S,
    htdocs: &K,
    limits: &Limits,
    ticket: &Ticket,
) -> Result<Summary, StackError> {
    serve_observed(stream, htdocs, limits, ticket, &Observe::default()).await
}

/// [`serve_client`] that also serves the metrics page and counts its
/// responses as `observe` says; each response is logged at `debug` with
/// the target `www::access`.
pub async fn serve_observed<S: TcpStream, K: KvRo>(
    stream: &mut S,
    htdocs: &K,
    limits: &Limits,
    ticket: &Ticket,
    observe: &Observe,
) -> Result<Summary, StackError> {
    let mut summary = Summary::default();
    let mut buf = vec![0u8; limits.max_head.max(64)];
    let mut filled = 0;
    // When the first byte of the request being received arrived.
    let mut started = None;
    loop {
        if filled > 0 {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            let outcome = match parsed.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(len)) => Some(extract(&parsed).map(|r| (r, len))),
                Ok(httparse::Status::Partial) if filled == buf.len() => Some(Err(431)),
                Ok(httparse::Status::Partial) => None,
                Err(httparse::Error::TooManyHeaders) => Some(Err(431)),
                Err(httparse::Error::Version) => Some(Err(505)),
                Err(_) => Some(Err(400)),
            };
            match outcome {
                None => {}
                Some(Err(status)) => {
                    // After a malformed request the framing is lost: close.
                    // A HEAD gets no body, even a malformed one.
                    let head_only = buf.starts_with(b"HEAD ");
                    send(
                        stream,
                        &Response::error(status).closing(),
                        head_only,
                        limits,
                    )
                    .await?;
                    summary.responses += 1;
                    record(observe, status, started, kiln_rt::time::now);
                    log::debug!(target: "www::access", "malformed request {status}");
                    close(stream, ticket).await;
                    return Ok(summary);
                }
                Some(Ok((req, len))) => {
                    ticket.waiting(None);
                    let mut resp = match &observe.metrics_path {
                        Some(p) if req.method != Method::Other && req.path == **p => metrics_page(),
                        _ => respond(&req, htdocs).await,
                    };
                    // A body we do not read would be taken for the next
                    // request: close after answering.
                    if !req.keep_alive || req.has_body {
                        resp = resp.closing();
                    }
                    send(stream, &resp, req.method == Method::Head, limits).await?;
                    summary.responses += 1;
                    // One clock read for the count and the wait that
                    // follows.
                    let now = kiln_rt::time::now();
                    record(observe, resp.status, started, || now);
                    log::debug!(
                        target: "www::access",
                        "{} {} {} {}",
                        req.method.name(),
                        req.path,
                        resp.status,
                        resp.body.len()
                    );
                    if resp.close {
                        close(stream, ticket).await;
                        return Ok(summary);
                    }
                    buf.copy_within(len..filled, 0);
                    filled -= len;
                    started = (filled > 0).then_some(now);
                    ticket.waiting(Some(now));
                    continue;
                }
            }
        }
        let deadline = match started {
            Some(t) => t + limits.request,
            None => kiln_rt::time::now() + limits.idle,
        };
        let read = stream.read(&mut buf[filled..]);
        let stop = select(sleep_until(deadline), ticket.kicked());
        match select(read, stop).await {
            Either::Left(Ok(0)) => return Ok(summary),
            Either::Left(Ok(n)) => {
                if filled == 0 {
                    let now = kiln_rt::time::now();
                    started = Some(now);
                    ticket.waiting(Some(now));
                }
                filled += n;
            }
            Either::Left(Err(e)) => return Err(e),
            // Another connection needs the place: close without a word
            // (RFC 9112 9.6 allows closing an idle connection at any time).
            Either::Right(Either::Right(())) => {
                let _ = stream.shutdown().await;
                return Ok(summary);
            }
            Either::Right(Either::Left(())) => {
                if started.is_some() {
                    send(stream, &Response::error(408).closing(), false, limits).await?;
                    summary.responses += 1;
                    record(observe, 408, started, kiln_rt::time::now);
                    log::debug!(target: "www::access", "request timeout 408");
                }
                let _ = stream.shutdown().await;
                return Ok(summary);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn good_escapes_are_decoded() {
        assert_eq!(
            percent_decode("/index.html").as_deref(),
            Some("/index.html")
        );
        assert_eq!(
            percent_decode("/%69ndex.html").as_deref(),
            Some("/index.html")
        );
        assert_eq!(percent_decode("/a%20b%2Fc").as_deref(), Some("/a b/c"));
        assert_eq!(percent_decode("/%c3%a9t%C3%A9").as_deref(), Some("/été"));
        assert_eq!(percent_decode("/%25").as_deref(), Some("/%"));
        // Dot segments decode; the store's key check refuses them.
        assert_eq!(percent_decode("/%2e%2E/x").as_deref(), Some("/../x"));
    }

    #[test]
    fn bad_escapes_are_refused() {
        for bad in [
            // Regression: `u8::from_str_radix` took "+F" as 15, so `%+F`
            // was served as "\x0f".
            "/%+F", "/%-1", "/%zz", "/%g0", "/%0", "/%", "/a%", "/%%41", "/% 1",
            // Not UTF-8 once decoded.
            "/%ff", "/%c3", // NUL.
            "/a%00b",
        ] {
            assert_eq!(percent_decode(bad), None, "{bad:?}");
        }
    }
}
