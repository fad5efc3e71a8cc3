//! Slow clients: connections that send a request one byte at a time, a
//! byte per connection every [`TRICKLE`], and never finish it. When the
//! server gives up on one (www answers 408 after its request timeout) it
//! is replaced by a new one. kiln-bench runs this in the soak's network
//! namespace as a child process of its own (`kiln-bench --slow-clients
//! ADDR,COUNT,SECONDS`), which prints a summary line after every round;
//! kiln-bench reads the last one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How often each connection sends its next byte.
pub const TRICKLE: Duration = Duration::from_secs(2);
/// How long one connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The start of the request every slow client sends, before the header
/// that never ends.
const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: soak\r\nX-Slow: ";

/// What the slow clients did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SlowReport {
    /// Connections opened (the first ones and their replacements).
    pub opened: u64,
    /// Connections the server closed or reset.
    pub closed_by_server: u64,
    /// Connects that failed or timed out.
    pub failed: u64,
}

impl SlowReport {
    /// The one line the helper prints.
    pub fn line(&self) -> String {
        format!(
            "slow-clients opened={} closed_by_server={} failed={}",
            self.opened, self.closed_by_server, self.failed
        )
    }

    /// Parses the last [`line`](Self::line) out of the helper's output.
    pub fn parse(out: &str) -> Option<SlowReport> {
        let line = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("slow-clients "))?;
        let mut r = SlowReport::default();
        for word in line.split_whitespace() {
            let (k, v) = word.split_once('=')?;
            let v = v.parse().ok()?;
            match k {
                "opened" => r.opened = v,
                "closed_by_server" => r.closed_by_server = v,
                "failed" => r.failed = v,
                _ => return None,
            }
        }
        Some(r)
    }
}

/// The helper's argument: `ADDR,COUNT,SECONDS`.
pub fn parse_spec(spec: &str) -> Option<(SocketAddr, usize, u64)> {
    let mut parts = spec.split(',');
    let addr = parts.next()?.parse().ok()?;
    let count = parts.next()?.parse().ok()?;
    let secs = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((addr, count, secs))
}

/// One slow connection: the stream and how much of the request it sent.
struct Slow {
    stream: TcpStream,
    sent: usize,
}

fn open(addr: SocketAddr, report: &mut SlowReport) -> Option<Slow> {
    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(stream) => {
            report.opened += 1;
            // Neither a send nor a read may block the others.
            let _ = stream.set_nonblocking(true);
            Some(Slow { stream, sent: 0 })
        }
        Err(_) => {
            report.failed += 1;
            None
        }
    }
}

/// Sends the next byte; `false` once the server has closed or reset the
/// connection (anything it sent, such as a 408, is read and dropped).
fn trickle(slow: &mut Slow) -> bool {
    let mut buf = [0u8; 4096];
    match slow.stream.read(&mut buf) {
        Ok(0) => return false,
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(_) => return false,
    }
    let byte = HEAD.get(slow.sent).copied().unwrap_or(b'a');
    match slow.stream.write(&[byte]) {
        Ok(1) => {
            slow.sent += 1;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
        _ => false,
    }
}

/// Keeps `count` slow connections to `addr` open for `secs` seconds,
/// replacing each one the server closes; after each round calls `tell`
/// with what happened so far, and returns it at the end.
pub fn run(addr: SocketAddr, count: usize, secs: u64, tell: &dyn Fn(&SlowReport)) -> SlowReport {
    let mut report = SlowReport::default();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut conns: Vec<Option<Slow>> = (0..count).map(|_| open(addr, &mut report)).collect();
    while Instant::now() < end {
        std::thread::sleep(TRICKLE.min(end.saturating_duration_since(Instant::now())));
        for slot in &mut conns {
            let alive = slot.as_mut().is_some_and(trickle);
            if !alive {
                if slot.is_some() {
                    report.closed_by_server += 1;
                }
                *slot = if Instant::now() < end {
                    open(addr, &mut report)
                } else {
                    None
                };
            }
        }
        tell(&report);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_round_trips() {
        let r = SlowReport {
            opened: 12,
            closed_by_server: 3,
            failed: 1,
        };
        assert_eq!(
            SlowReport::parse(&format!("noise\n{}\n", r.line())),
            Some(r)
        );
        assert_eq!(SlowReport::parse("slow-clients opened=x"), None);
        assert_eq!(SlowReport::parse(""), None);
    }

    #[test]
    fn parses_the_spec() {
        let (addr, n, s) = parse_spec("10.81.0.2:80,50,30").unwrap();
        assert_eq!((addr.port(), n, s), (80, 50, 30));
        assert!(parse_spec("10.81.0.2:80,50").is_none());
        assert!(parse_spec("10.81.0.2:80,50,30,1").is_none());
        assert!(parse_spec("host,1,1").is_none());
    }

    #[test]
    fn a_closed_connection_is_replaced() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept and close every connection at once, as a server timing
        // slow clients out would (only faster).
        let server = std::thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let end = Instant::now() + Duration::from_secs(4);
            while Instant::now() < end {
                if let Ok((s, _)) = listener.accept() {
                    drop(s);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let r = run(addr, 2, 3, &|_| {});
        server.join().unwrap();
        assert!(r.opened >= 3, "{r:?}");
        assert!(r.closed_by_server >= 1, "{r:?}");
    }
}
