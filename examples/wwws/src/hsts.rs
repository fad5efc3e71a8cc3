//! The `Strict-Transport-Security` header (RFC 6797) on every response
//! sent over HTTPS: a stream wrapper between `www::serve` and the TLS
//! stream that adds the header line after each response's status line.
//!
//! It follows the connection's HTTP/1.1 framing (RFC 9112 section 6.3) to
//! know where each response starts: requests are read through it (a HEAD
//! request's response has no body), and each response head's status and
//! Content-Length say how many body bytes follow. A write it cannot place
//! (no head where one should start) passes through unchanged, and the
//! wrapper stops adding headers on that connection: it never alters a
//! body.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::vec::Vec;
use core::net::SocketAddr;

use kiln_devices::{StackError, TcpStream};

/// Where the next written byte belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// The start of a response head.
    Head,
    /// This many more body bytes.
    Body(u64),
    /// Framing lost: pass everything through.
    Lost,
}

/// A stream that adds `Strict-Transport-Security: max-age=N` to every
/// response written through it.
pub struct Hsts<S> {
    inner: S,
    line: Vec<u8>,
    out: Out,
    /// For each request read and not yet answered: whether it is HEAD.
    heads: VecDeque<bool>,
    /// Reading the start of a request (its first bytes so far).
    request_start: Option<Vec<u8>>,
    /// The last bytes read, to find a head's end across reads.
    tail: [u8; 3],
}

impl<S: TcpStream> Hsts<S> {
    /// Wraps `inner`, with `max_age` in seconds.
    pub fn new(inner: S, max_age: u32) -> Self {
        Hsts {
            inner,
            line: format!("Strict-Transport-Security: max-age={max_age}\r\n").into_bytes(),
            out: Out::Head,
            heads: VecDeque::new(),
            request_start: Some(Vec::new()),
            tail: [0; 3],
        }
    }

    /// The wrapped stream.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Notes the requests that `data` starts and ends.
    fn saw(&mut self, data: &[u8]) {
        for &b in data {
            if let Some(start) = &mut self.request_start {
                if start.len() < 5 {
                    start.push(b);
                }
                if start.len() == 5 {
                    self.heads.push_back(start == b"HEAD ");
                    self.request_start = None;
                }
            }
            let end = self.tail == *b"\r\n\r" && b == b'\n';
            self.tail = [self.tail[1], self.tail[2], b];
            if end {
                if let Some(start) = self.request_start.take() {
                    // A head shorter than five bytes: not HEAD.
                    let _ = start;
                    self.heads.push_back(false);
                }
                self.request_start = Some(Vec::new());
            }
        }
    }
}

/// `(status line end, head end, status, content length)` of a response
/// head at the start of `buf`.
fn parse_head(buf: &[u8]) -> Option<(usize, usize, u16, Option<u64>)> {
    let status = buf.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let status: u16 = core::str::from_utf8(status).ok()?.parse().ok()?;
    let line_end = buf.windows(2).position(|w| w == b"\r\n")? + 2;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut length = None;
    for line in buf[line_end..head_end].split(|&b| b == b'\n') {
        let line = core::str::from_utf8(line).ok()?.trim_end_matches('\r');
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse().ok()?);
        }
    }
    Some((line_end, head_end, status, length))
}

impl<S: TcpStream> TcpStream for Hsts<S> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, StackError> {
        let n = self.inner.read(buf).await?;
        self.saw(&buf[..n]);
        Ok(n)
    }

    async fn write(&mut self, buf: &[u8]) -> Result<usize, StackError> {
        match self.out {
            Out::Lost => self.inner.write(buf).await,
            Out::Body(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let n = self.inner.write(&buf[..n]).await?;
                self.out = match left - n as u64 {
                    0 => Out::Head,
                    left => Out::Body(left),
                };
                Ok(n)
            }
            Out::Head => {
                let Some((line_end, head_end, status, length)) = parse_head(buf) else {
                    self.out = Out::Lost;
                    return self.inner.write(buf).await;
                };
                let head_request = self.heads.pop_front().unwrap_or(false);
                let body = if head_request || status < 200 || status == 204 || status == 304 {
                    Some(0)
                } else {
                    length
                };
                let mut head = Vec::with_capacity(head_end + self.line.len());
                head.extend_from_slice(&buf[..line_end]);
                head.extend_from_slice(&self.line);
                head.extend_from_slice(&buf[line_end..head_end]);
                self.inner.write_all(&head).await?;
                self.out = match body {
                    Some(0) => Out::Head,
                    Some(n) => Out::Body(n),
                    // No length: the body runs to the end of the connection.
                    None => Out::Lost,
                };
                Ok(head_end)
            }
        }
    }

    async fn shutdown(&mut self) -> Result<(), StackError> {
        self.inner.shutdown().await
    }

    fn peer_addr(&self) -> SocketAddr {
        self.inner.peer_addr()
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX: y\r\n\r\nhello";
        assert_eq!(parse_head(head), Some((17, 45, 200, Some(12))));
        assert_eq!(
            parse_head(b"HTTP/1.1 304 Not Modified\r\n\r\n"),
            Some((27, 29, 304, None))
        );
        assert_eq!(parse_head(b"<html>"), None);
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            None
        );
    }
}
