//! The server side of iperf3's TCP test (see the crate's documentation for
//! the protocol and what is left out).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use kiln_devices::{Console, StackError, TcpListener, TcpStream};
use kiln_rt::{Either, select, timeout};

/// Parallel streams a test may ask for (`iperf3 -P`).
pub const MAX_STREAMS: usize = 16;

/// The cookie every connection of a test starts with (36 characters and a
/// NUL).
const COOKIE_LEN: usize = 37;
/// The longest parameter or results object accepted from a client.
const MAX_JSON: usize = 64 * 1024;
/// Bytes of each read or write on a data stream at most (iperf3's `-l`
/// is bounded to this).
const MAX_BLOCK: usize = 1024 * 1024;
/// How long each protocol step outside the test itself may take.
const STEP: Duration = Duration::from_secs(10);
/// How much longer than the time it announced a test may run before the
/// server gives up on it (a client that stopped talking); tests bounded by
/// bytes or blocks instead of time get [`UNTIMED`].
const GRACE: Duration = Duration::from_secs(30);
/// See [`GRACE`].
const UNTIMED: Duration = Duration::from_secs(600);

// States (iperf_api.h): one signed byte on the control connection.
const TEST_START: u8 = 1;
const TEST_RUNNING: u8 = 2;
const TEST_END: u8 = 4;
const PARAM_EXCHANGE: u8 = 9;
const CREATE_STREAMS: u8 = 10;
const EXCHANGE_RESULTS: u8 = 13;
const DISPLAY_RESULTS: u8 = 14;
const IPERF_DONE: u8 = 16;
/// -1: another test is running.
const ACCESS_DENIED: u8 = 0xff;

/// A test's parameters as the client sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// `-R`: the server sends.
    pub reverse: bool,
    /// `-P`: data connections.
    pub parallel: usize,
    /// `-l`: bytes per read or write.
    pub len: usize,
    /// `-t`: seconds (0 when the test is bounded by bytes or blocks).
    pub time: u64,
}

/// Why a test failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TestError {
    /// The control or a data connection failed.
    #[error("connection: {0}")]
    Stack(#[from] StackError),
    /// The client closed the control connection.
    #[error("the client closed the control connection")]
    Closed,
    /// A step took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The client sent what this server does not speak.
    #[error("{0}")]
    Protocol(String),
}

/// What a test moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Whether the server sent (`-R`).
    pub reverse: bool,
    /// Data connections.
    pub streams: usize,
    /// Bytes moved on all of them.
    pub bytes: u64,
    /// From `TEST_START` to `TEST_END`, in microseconds.
    pub micros: u64,
}

impl Report {
    /// The rate in Mbit/s (integer arithmetic: no floating point on the
    /// freestanding targets).
    pub fn mbits(&self) -> u64 {
        self.bytes.saturating_mul(8) / self.micros.max(1)
    }
}

/// Serves one test after another on `listener`.
pub async fn serve<L: TcpListener>(
    listener: &L,
    console: &impl Console,
) -> core::convert::Infallible {
    loop {
        let (ctrl, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                let _ = console.logf(format_args!("bulk: iperf3 accept failed: {e}"));
                kiln_rt::yield_now().await;
                continue;
            }
        };
        match test(listener, ctrl).await {
            Ok(r) => {
                let _ = console.logf(format_args!(
                    "bulk: iperf3 {} {peer}: {} bytes over {} stream(s) in {}.{:06} s, {} Mbit/s",
                    if r.reverse { "to" } else { "from" },
                    r.bytes,
                    r.streams,
                    r.micros / 1_000_000,
                    r.micros % 1_000_000,
                    r.mbits()
                ));
            }
            Err(e) => {
                let _ = console.logf(format_args!("bulk: iperf3 test from {peer} failed: {e}"));
            }
        }
    }
}

async fn step<T>(
    what: &'static str,
    f: impl Future<Output = Result<T, TestError>>,
) -> Result<T, TestError> {
    timeout(STEP, f)
        .await
        .map_err(|_| TestError::Timeout(what))?
}

async fn read_exact<S: TcpStream>(s: &mut S, mut buf: &mut [u8]) -> Result<(), TestError> {
    while !buf.is_empty() {
        match s.read(buf).await? {
            0 => return Err(TestError::Closed),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

async fn read_state<S: TcpStream>(s: &mut S) -> Result<u8, TestError> {
    let mut b = [0u8];
    read_exact(s, &mut b).await?;
    Ok(b[0])
}

/// Reads a length-prefixed JSON object.
async fn read_json<S: TcpStream>(s: &mut S) -> Result<Vec<u8>, TestError> {
    let mut len = [0u8; 4];
    read_exact(s, &mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_JSON {
        return Err(TestError::Protocol(format!(
            "a JSON object of {len} bytes (at most {MAX_JSON})"
        )));
    }
    let mut json = vec![0u8; len];
    read_exact(s, &mut json).await?;
    Ok(json)
}

/// One test, from the cookie on `ctrl` to `IPERF_DONE`.
async fn test<L: TcpListener>(listener: &L, mut ctrl: L::Stream) -> Result<Report, TestError> {
    let mut cookie = [0u8; COOKIE_LEN];
    step("the cookie", read_exact(&mut ctrl, &mut cookie)).await?;
    ctrl.write_all(&[PARAM_EXCHANGE]).await?;
    let json = step("the parameters", read_json(&mut ctrl)).await?;
    let params = parse_params(&json).map_err(TestError::Protocol)?;
    ctrl.write_all(&[CREATE_STREAMS]).await?;
    let mut streams = Vec::with_capacity(params.parallel);
    step("the data connections", async {
        while streams.len() < params.parallel {
            let (mut s, _) = listener.accept().await?;
            let mut theirs = [0u8; COOKIE_LEN];
            let matched = timeout(STEP, read_exact(&mut s, &mut theirs)).await;
            if matches!(matched, Ok(Ok(()))) && theirs == cookie {
                streams.push(s);
            } else {
                // Another client, while this test runs.
                let _ = s.write_all(&[ACCESS_DENIED]).await;
            }
        }
        Ok(())
    })
    .await?;
    ctrl.write_all(&[TEST_START, TEST_RUNNING]).await?;
    let started = kiln_rt::time::now();
    let counts: Vec<Cell<u64>> = (0..streams.len()).map(|_| Cell::new(0)).collect();
    let data = JoinAll(
        streams
            .iter_mut()
            .zip(&counts)
            .map(|(s, n)| -> Pin<Box<dyn Future<Output = ()> + '_>> {
                if params.reverse {
                    Box::pin(send(s, n, params.len))
                } else {
                    Box::pin(receive(s, n, params.len))
                }
            })
            .map(Some)
            .collect(),
    );
    let limit = if params.time > 0 {
        Duration::from_secs(params.time).saturating_add(GRACE)
    } else {
        UNTIMED
    };
    let end = timeout(limit, async {
        match select(read_state(&mut ctrl), data).await {
            Either::Left(state) => state,
            // Every data connection ended: the client's TEST_END follows.
            Either::Right(()) => read_state(&mut ctrl).await,
        }
    })
    .await
    .map_err(|_| TestError::Timeout("the end of the test"))??;
    let micros = u64::try_from(
        kiln_rt::time::now()
            .saturating_duration_since(started)
            .as_micros(),
    )
    .unwrap_or(u64::MAX);
    // As iperf3's own server: the data connections close at TEST_END
    // (with `-R` the client stops reading; what is queued is discarded).
    let stream_count = streams.len();
    drop(streams);
    if end != TEST_END {
        return Err(TestError::Protocol(format!(
            "state {} instead of TEST_END",
            end as i8
        )));
    }
    ctrl.write_all(&[EXCHANGE_RESULTS]).await?;
    // The client's own figures: not needed.
    step("the client's results", read_json(&mut ctrl)).await?;
    let results = results(&counts, micros);
    ctrl.write_all(&(results.len() as u32).to_be_bytes())
        .await?;
    ctrl.write_all(results.as_bytes()).await?;
    ctrl.write_all(&[DISPLAY_RESULTS]).await?;
    let done = step("IPERF_DONE", read_state(&mut ctrl)).await?;
    if done != IPERF_DONE {
        return Err(TestError::Protocol(format!(
            "state {} instead of IPERF_DONE",
            done as i8
        )));
    }
    Ok(Report {
        reverse: params.reverse,
        streams: stream_count,
        bytes: counts.iter().map(Cell::get).sum(),
        micros,
    })
}

/// Reads and counts until the stream ends.
async fn receive<S: TcpStream>(s: &mut S, count: &Cell<u64>, len: usize) {
    let mut buf = vec![0u8; len];
    while let Ok(n @ 1..) = s.read(&mut buf).await {
        count.set(count.get() + n as u64);
    }
}

/// Writes and counts until the stream fails (or the test ends and this
/// future is dropped).
async fn send<S: TcpStream>(s: &mut S, count: &Cell<u64>, len: usize) {
    let buf: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut at = 0;
    while let Ok(n) = s.write(&buf[at..]).await {
        count.set(count.get() + n as u64);
        at = (at + n) % len;
    }
}

/// The server's results object: bytes and times per stream; CPU use and
/// retransmissions unknown.
fn results(counts: &[Cell<u64>], micros: u64) -> String {
    let mut s = String::from(
        "{\"cpu_util_total\":0,\"cpu_util_user\":0,\"cpu_util_system\":0,\
         \"sender_has_retransmits\":-1,\"streams\":[",
    );
    for (i, c) in counts.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // iperf3 numbers its streams 1, 3, 4, ... (2 is skipped).
        let id = if i == 0 { 1 } else { i + 2 };
        s.push_str(&format!(
            "{{\"id\":{id},\"bytes\":{},\"retransmits\":-1,\"jitter\":0,\"errors\":0,\
             \"packets\":0,\"start_time\":0,\"end_time\":{}.{:06}}}",
            c.get(),
            micros / 1_000_000,
            micros % 1_000_000
        ));
    }
    s.push_str("]}");
    s
}

/// Polls every future to completion.
struct JoinAll<'a>(Vec<Option<Pin<Box<dyn Future<Output = ()> + 'a>>>>);

impl Future for JoinAll<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut pending = false;
        for slot in self.0.iter_mut() {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// A JSON value at the top level of the parameters, as far as this server
/// looks at it.
#[derive(Debug, PartialEq, Eq)]
enum Value {
    Bool(bool),
    Number(u64),
    Other,
}

/// Parses the client's parameters: a flat JSON object whose members this
/// server reads are booleans and non-negative integers.
pub fn parse_params(json: &[u8]) -> Result<Params, String> {
    let mut p = Params {
        reverse: false,
        parallel: 1,
        len: 128 * 1024,
        time: 10,
    };
    let mut tcp = false;
    for (key, value) in members(json)? {
        match (key, value) {
            ("tcp", Value::Bool(b)) => tcp = b,
            ("udp" | "sctp" | "bidirectional", Value::Bool(true)) => {
                return Err(format!("`{key}` tests are not served (TCP only, one way)"));
            }
            ("reverse", Value::Bool(b)) => p.reverse = b,
            ("parallel", Value::Number(n)) => {
                p.parallel = usize::try_from(n).unwrap_or(usize::MAX);
            }
            ("len", Value::Number(n)) => p.len = usize::try_from(n).unwrap_or(usize::MAX),
            ("time", Value::Number(n)) => p.time = n,
            _ => {}
        }
    }
    if !tcp {
        return Err("not a TCP test".into());
    }
    if !(1..=MAX_STREAMS).contains(&p.parallel) {
        return Err(format!(
            "{} parallel streams (1 to {MAX_STREAMS})",
            p.parallel
        ));
    }
    if !(1..=MAX_BLOCK).contains(&p.len) {
        return Err(format!("a block length of {} (1 to {MAX_BLOCK})", p.len));
    }
    Ok(p)
}

/// The members of a JSON object, with nested values skipped.
fn members(json: &[u8]) -> Result<Vec<(&str, Value)>, String> {
    let bad = |what: &str, at: usize| format!("malformed parameters: {what} at byte {at}");
    let mut out = Vec::new();
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return Err(bad("no object", i));
    }
    i = skip_ws(json, i + 1);
    if json.get(i) == Some(&b'}') {
        return Ok(out);
    }
    loop {
        let (key, next) = string(json, i).ok_or_else(|| bad("no key", i))?;
        i = skip_ws(json, next);
        if json.get(i) != Some(&b':') {
            return Err(bad("no `:`", i));
        }
        i = skip_ws(json, i + 1);
        let (value, next) = value(json, i).ok_or_else(|| bad("no value", i))?;
        out.push((key, value));
        i = skip_ws(json, next);
        match json.get(i) {
            Some(b',') => i = skip_ws(json, i + 1),
            Some(b'}') => return Ok(out),
            _ => return Err(bad("no `,` or `}`", i)),
        }
    }
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// A string starting at `i` (escapes kept as they are); returns it and the
/// index after its closing quote.
fn string(json: &[u8], i: usize) -> Option<(&str, usize)> {
    if json.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        match json.get(j)? {
            b'"' => return Some((core::str::from_utf8(&json[i + 1..j]).ok()?, j + 1)),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// A value starting at `i`; returns it and the index after it.
fn value(json: &[u8], i: usize) -> Option<(Value, usize)> {
    let rest = json.get(i..)?;
    if rest.starts_with(b"true") {
        return Some((Value::Bool(true), i + 4));
    }
    if rest.starts_with(b"false") {
        return Some((Value::Bool(false), i + 5));
    }
    if rest.starts_with(b"null") {
        return Some((Value::Other, i + 4));
    }
    match rest.first()? {
        b'"' => string(json, i).map(|(_, j)| (Value::Other, j)),
        b'0'..=b'9' => {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let end = i + digits;
            let n = core::str::from_utf8(&json[i..end]).ok()?.parse().ok();
            // A fraction or exponent: not a count this server reads.
            let more = json
                .get(end..)?
                .iter()
                .take_while(|b| matches!(b, b'.' | b'e' | b'E' | b'+' | b'-' | b'0'..=b'9'))
                .count();
            match (n, more) {
                (Some(n), 0) => Some((Value::Number(n), end)),
                _ => Some((Value::Other, end + more)),
            }
        }
        b'-' => {
            let len = 1 + rest[1..]
                .iter()
                .take_while(|b| matches!(b, b'.' | b'e' | b'E' | b'+' | b'-' | b'0'..=b'9'))
                .count();
            Some((Value::Other, i + len))
        }
        b'{' | b'[' => {
            // Skip to the matching bracket, strings included.
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match json.get(j)? {
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some((Value::Other, j + 1));
                        }
                    }
                    b'"' => {
                        j = string(json, j)?.1;
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_iperf3_3_12_parameters() {
        // What `iperf3 -c ADDR -t 1 -R` 3.12 sent.
        let json = br#"{"tcp":true,"omit":0,"time":1,"num":0,"blockcount":0,"parallel":1,"reverse":true,"len":131072,"pacing_timer":1000,"client_version":"3.12"}"#;
        assert_eq!(
            parse_params(json),
            Ok(Params {
                reverse: true,
                parallel: 1,
                len: 131072,
                time: 1
            })
        );
    }

    #[test]
    fn skips_nested_values_and_refuses_what_it_does_not_serve() {
        let json = br#" { "tcp" : true, "extra": {"a": [1, "}", {"b": -2.5e3}]}, "parallel": 4 } "#;
        assert_eq!(parse_params(json).unwrap().parallel, 4);
        assert!(parse_params(br#"{"udp":true}"#).is_err());
        assert!(
            parse_params(br#"{"tcp":true,"bidirectional":true}"#)
                .unwrap_err()
                .contains("bidirectional")
        );
        assert!(parse_params(br#"{"tcp":true,"parallel":17}"#).is_err());
        assert!(parse_params(br#"{"tcp":true,"len":0}"#).is_err());
        for bad in [
            &b""[..],
            b"{",
            b"{\"tcp\"",
            b"{\"tcp\":}",
            b"{\"tcp\":true,,}",
            b"{\"a\":[[[",
            b"[]",
            b"{\"a\":\"\\",
        ] {
            assert!(parse_params(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn results_number_streams_like_iperf3() {
        let counts = [Cell::new(5), Cell::new(7)];
        let r = results(&counts, 1_003_657);
        assert!(r.contains(r#"{"id":1,"bytes":5,"#), "{r}");
        assert!(r.contains(r#"{"id":3,"bytes":7,"#), "{r}");
        assert!(r.contains(r#""end_time":1.003657}"#), "{r}");
        assert!(r.ends_with("]}"));
    }
}
