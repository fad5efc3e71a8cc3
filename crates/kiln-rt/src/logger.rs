//! The `log` facade's logger for every target: one line per record on the
//! console, `SECONDS.MICROS LEVEL target: message`, the time from the
//! monotonic clock since the logger was installed (the unikernel's start;
//! on unix the clock counts from the host's boot), filtered by the `--log` argument every unikernel takes
//! ([`kiln_args::LogFilter`]). The generated `main` calls [`init`] right
//! after parsing the arguments, before it constructs the devices.
//!
//! A record above `log::max_level()` costs one relaxed load and a
//! comparison in the `log` macros, which [`init`] sets to the most detailed
//! level any target keeps: its arguments are never evaluated or formatted.
//! A kept record is formatted into a buffer on the stack (no allocation)
//! and written with one console write (one hypercall on hvt and spt), or
//! a few for lines longer than the buffer.

use core::fmt;

use kiln_args::LogFilter;
use kiln_devices::Instant;
use log::{Level, Log, Metadata, Record};

/// Bytes of a line written at once; longer lines take several writes.
const LINE: usize = 512;

/// Where the lines go and where the time comes from: plain functions, so
/// that the logger can live in a `static` on every target.
#[derive(Debug, Clone, Copy)]
pub struct Sink {
    /// Writes bytes to the console (errors are dropped: a log line has
    /// nowhere else to go).
    pub write: fn(&[u8]),
    /// The monotonic clock.
    pub now: fn() -> Instant,
}

struct State {
    filter: LogFilter,
    sink: Sink,
    /// When the logger was installed: the origin of the times printed.
    start: Instant,
}

struct Logger {
    state: spin::Once<State>,
}

static LOGGER: Logger = Logger {
    state: spin::Once::new(),
};

/// Installs the logger with `filter`, writing through `sink`. The first
/// call wins: later calls (a test that runs two unikernels in one process)
/// keep the first filter and sink.
pub fn init(filter: LogFilter, sink: Sink) {
    let max = filter.max_level();
    let mut first = false;
    LOGGER.state.call_once(|| {
        first = true;
        State {
            filter,
            sink,
            start: (sink.now)(),
        }
    });
    if first && log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(max);
    }
}

/// Formats into a fixed buffer, passing it to `write` whenever it fills.
struct LineWriter {
    buf: [u8; LINE],
    len: usize,
    write: fn(&[u8]),
}

impl LineWriter {
    fn flush(&mut self) {
        if self.len > 0 {
            (self.write)(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl fmt::Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Bytes, not characters: the console takes bytes, and the pieces
        // of a character cut at the buffer's end are written in order.
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            if self.len == LINE {
                self.flush();
            }
            let n = bytes.len().min(LINE - self.len);
            let (now, rest) = bytes.split_at(n);
            self.buf[self.len..self.len + n].copy_from_slice(now);
            self.len += n;
            bytes = rest;
        }
        Ok(())
    }
}

fn level_word(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warn => "WARN ",
        Level::Info => "INFO ",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// Writes one record's line, `     1.234567 INFO  target: message\n`, to
/// `out`; `now` is the time since the start.
pub fn format_line(out: &mut impl fmt::Write, now: Instant, record: &Record<'_>) -> fmt::Result {
    let micros = now.as_nanos() / 1_000;
    writeln!(
        out,
        "{:>6}.{:06} {} {}: {}",
        micros / 1_000_000,
        micros % 1_000_000,
        level_word(record.level()),
        record.target(),
        record.args()
    )
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.state
            .get()
            .is_some_and(|s| metadata.level() <= s.filter.level(metadata.target()))
    }

    fn log(&self, record: &Record<'_>) {
        let Some(state) = self.state.get() else {
            return;
        };
        if record.level() > state.filter.level(record.target()) {
            return;
        }
        let mut line = LineWriter {
            buf: [0; LINE],
            len: 0,
            write: state.sink.write,
        };
        let since = (state.sink.now)().saturating_duration_since(state.start);
        let since = Instant::from_nanos(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX));
        let _ = format_line(&mut line, since, record);
        line.flush();
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::fmt::Write as _;
    use std::string::String;
    use std::vec::Vec;

    fn line(now: u64, level: Level, target: &str, args: fmt::Arguments<'_>) -> String {
        let mut out = String::new();
        let record = Record::builder()
            .level(level)
            .target(target)
            .args(args)
            .build();
        format_line(&mut out, Instant::from_nanos(now), &record).unwrap();
        out
    }

    #[test]
    fn line_format() {
        assert_eq!(
            line(
                1_234_567_891,
                Level::Info,
                "www",
                format_args!("serving on port {}", 8080)
            ),
            "     1.234567 INFO  www: serving on port 8080\n"
        );
        assert_eq!(
            line(0, Level::Debug, "kiln_net::driver", format_args!("x")),
            "     0.000000 DEBUG kiln_net::driver: x\n"
        );
    }

    std::thread_local! {
        static WRITES: core::cell::RefCell<Vec<Vec<u8>>> = const { core::cell::RefCell::new(Vec::new()) };
    }

    fn capture(bytes: &[u8]) {
        WRITES.with(|w| w.borrow_mut().push(bytes.to_vec()));
    }

    #[test]
    fn long_lines_go_out_in_pieces_in_order() {
        let mut w = LineWriter {
            buf: [0; LINE],
            len: 0,
            write: capture,
        };
        let text: String = (0..1300)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let with_wide = std::format!("{text}é€");
        w.write_str(&with_wide).unwrap();
        w.flush();
        let writes = WRITES.with(|w| w.take());
        assert!(writes.len() >= 3);
        assert!(writes.iter().all(|p| p.len() <= LINE));
        assert_eq!(writes.concat(), with_wide.as_bytes());
    }
}
