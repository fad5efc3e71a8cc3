//! One HTTP/1.1 GET over a TLS stream, and the response's framing (RFC 9112
//! section 6: Content-Length, chunked transfer coding, or the end of the
//! connection), hashing the body as it arrives.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use kiln_tls::TlsError;
use kiln_tls::stream::{Side, TlsStream};
use sha2::{Digest as _, Sha256};

use crate::FetchError;
use crate::url::Url;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// SHA-256 of the body.
    pub sha256: [u8; 32],
    /// The body's length.
    pub length: u64,
}

/// Reads from a TLS stream through a buffer.
struct Reader<'a, S, C> {
    tls: &'a mut TlsStream<S, C>,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// The server closed (close_notify, or TCP without it: `truncated`).
    ended: bool,
    truncated: bool,
}

impl<S: kiln_devices::TcpStream, C: Side> Reader<'_, S, C> {
    /// Refills the buffer; `false` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, FetchError> {
        if self.pos < self.len {
            return Ok(true);
        }
        if self.ended {
            return Ok(false);
        }
        self.pos = 0;
        self.len = 0;
        match self.tls.read_tls(&mut self.buf).await {
            Ok(0) => self.ended = true,
            Ok(n) => self.len = n,
            Err(TlsError::UnexpectedEof) => {
                self.ended = true;
                self.truncated = true;
            }
            Err(source) => {
                return Err(FetchError::Tls {
                    host: "the server".into(),
                    source,
                });
            }
        }
        Ok(self.len > 0)
    }

    /// Up to `max` buffered bytes, consumed.
    async fn take(&mut self, max: usize) -> Result<&[u8], FetchError> {
        if !self.fill().await? {
            return Ok(&[]);
        }
        let n = (self.len - self.pos).min(max);
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// One line ending in CRLF (without it), at most `max` bytes.
    async fn line(&mut self, max: usize) -> Result<Vec<u8>, FetchError> {
        let mut line = Vec::new();
        loop {
            let b = self.take(1).await?;
            let Some(&b) = b.first() else {
                return Err(FetchError::Http("the response ended inside a line"));
            };
            line.push(b);
            if line.ends_with(b"\r\n") {
                line.truncate(line.len() - 2);
                return Ok(line);
            }
            if line.len() > max {
                return Err(FetchError::Http("a line is too long"));
            }
        }
    }
}

/// Sends `GET url.path` and reads the response.
pub async fn get<S: kiln_devices::TcpStream, C: Side>(
    tls: &mut TlsStream<S, C>,
    url: &Url,
) -> Result<Response, FetchError> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kiln-fetch\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    let mut sent = 0;
    while sent < request.len() {
        sent += tls
            .write_tls(&request.as_bytes()[sent..])
            .await
            .map_err(|source| FetchError::Tls {
                host: url.host.clone(),
                source,
            })?;
    }
    let mut reader = Reader {
        tls,
        buf: vec![0u8; 16 * 1024],
        pos: 0,
        len: 0,
        ended: false,
        truncated: false,
    };
    // The head, up to the empty line.
    let mut head = Vec::new();
    loop {
        let line = reader.line(MAX_HEAD).await?;
        head.extend_from_slice(&line);
        head.extend_from_slice(b"\r\n");
        if line.is_empty() {
            break;
        }
        if head.len() > MAX_HEAD {
            return Err(FetchError::Http("the head is too large"));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(FetchError::Http("malformed head")),
    }
    let status = parsed.code.ok_or(FetchError::Http("no status"))?;
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| core::str::from_utf8(h.value).ok())
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let content_length = match header("content-length") {
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .map_err(|_| FetchError::Http("bad Content-Length"))?,
        ),
        None => None,
    };
    let mut hash = Sha256::new();
    let mut length = 0u64;
    if chunked {
        loop {
            let line = reader.line(1024).await?;
            let size = core::str::from_utf8(&line)
                .ok()
                .and_then(|l| l.split(';').next())
                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                .ok_or(FetchError::Http("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !reader.line(MAX_HEAD).await?.is_empty() {}
                break;
            }
            let mut left = size;
            while left > 0 {
                let part = reader
                    .take(usize::try_from(left).unwrap_or(usize::MAX))
                    .await?;
                if part.is_empty() {
                    return Err(FetchError::Http("the response ended inside a chunk"));
                }
                hash.update(part);
                left -= part.len() as u64;
                length += part.len() as u64;
            }
            if !reader.line(2).await?.is_empty() {
                return Err(FetchError::Http("no CRLF after a chunk"));
            }
        }
    } else {
        loop {
            let max = content_length.map_or(usize::MAX, |n| {
                usize::try_from(n - length).unwrap_or(usize::MAX)
            });
            if max == 0 {
                break;
            }
            let part = reader.take(max).await?;
            if part.is_empty() {
                break;
            }
            hash.update(part);
            length += part.len() as u64;
        }
        if content_length.is_some_and(|n| n != length) {
            return Err(FetchError::Http(
                "the body is shorter than its Content-Length",
            ));
        }
        if content_length.is_none() && reader.truncated {
            return Err(FetchError::Http(
                "the connection ended without close_notify: the body may be truncated",
            ));
        }
    }
    Ok(Response {
        status,
        sha256: hash.finalize().into(),
        length,
    })
}
