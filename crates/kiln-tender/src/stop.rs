//! The stop request, the tenders' side of kiln's STOP extension
//! (`kiln_abi::hvt_ext` on hvt, `kiln_abi::spt_ext` on spt;
//! `docs/hvt-extensions.md`): SIGTERM and SIGINT become a request the guest
//! sees at its next wait, once the guest has said it handles one.
//!
//! [`StopSignals::new`] makes an eventfd and [`StopSignals::catch`] catches
//! SIGTERM and SIGINT.
//! The handler, for the first signal after the guest declared itself
//! ([`StopSignals::enable`] on hvt, a word the guest writes on spt,
//! [`StopSignals::watch_ack`]), marks the request and writes the eventfd,
//! which the tender registered in the guest's epoll set (reported once,
//! `EPOLLONESHOT`): a guest blocked in its wait wakes at once, a running
//! one finds the event at its next wait. Any other signal (before the
//! declaration, or a second one) gets Solo5's behaviour for that tender
//! ([`Fallback`]): `solo5-hvt` prints `Exiting on signal N` and exits 1;
//! `solo5-spt`, which is the guest's own process, has no handler and ends
//! by the signal.
//!
//! Before either fallback ends the process, the handler clears the
//! offloads of the taps opened with them ([`crate::net::clear_offloads`]).
//!
//! The handler only touches atomics and makes `write`, `ioctl`, `_exit`,
//! `sigaction` and `raise`, all async-signal-safe; its state is process
//! global (a tender runs one guest).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8, Ordering};

/// What a signal that is not a stop request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// As `solo5-hvt`: `kiln-hvt: exiting on signal N (NAME)` on stderr,
    /// then exit status 1.
    ExitOne,
    /// As `solo5-spt`: the signal's default action (the process ends by
    /// it).
    Default,
}

static EVENT_FD: AtomicI32 = AtomicI32::new(-1);
static ENABLED: AtomicBool = AtomicBool::new(false);
static REQUESTED: AtomicBool = AtomicBool::new(false);
static ACK: AtomicPtr<u64> = AtomicPtr::new(std::ptr::null_mut());
static ACK_VALUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static FALLBACK: AtomicU8 = AtomicU8::new(0);

/// The signals that ask a tender to stop.
pub const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// The eventfd a stop request is written to, and the handlers of
/// [`STOP_SIGNALS`].
#[derive(Debug)]
pub struct StopSignals {
    event: OwnedFd,
}

impl StopSignals {
    /// Makes the eventfd.
    pub fn new() -> io::Result<Self> {
        use rustix::event::{EventfdFlags, eventfd};
        let event = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        Ok(Self { event })
    }

    /// Installs the handler for SIGTERM and SIGINT in this process, which
    /// does `fallback` until the guest declares itself.
    pub fn catch(&self, fallback: Fallback) -> io::Result<()> {
        EVENT_FD.store(self.event.as_raw_fd(), Ordering::SeqCst);
        FALLBACK.store(
            match fallback {
                Fallback::ExitOne => 0,
                Fallback::Default => 1,
            },
            Ordering::SeqCst,
        );
        for signal in STOP_SIGNALS {
            // SAFETY: an all-zero sigaction is valid; the handler only
            // does async-signal-safe things (module docs); every signal is
            // blocked while it runs, as solo5-hvt's.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_stop_signal as *const () as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigfillset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    /// The eventfd, for the epoll set (with [`register_once`]) and the
    /// seccomp filter (`write` on it, from the handler).
    pub fn event_fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    /// The eventfd, borrowed (for [`register_once`]).
    pub fn event(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }

    /// The guest declared that it handles stop requests (hvt's
    /// STOP_ENABLE).
    pub fn enable() {
        ENABLED.store(true, Ordering::SeqCst);
    }

    /// On spt: the guest declares itself by writing `value` to the word at
    /// `word`, in memory it shares with this process; the handler reads it
    /// when a signal comes.
    ///
    /// # Safety
    ///
    /// `word` must stay mapped, readable and 8-aligned for the life of the
    /// process.
    pub unsafe fn watch_ack(word: *const u64, value: u64) {
        ACK_VALUE.store(value, Ordering::SeqCst);
        ACK.store(word.cast_mut(), Ordering::SeqCst);
    }

    /// Whether a stop was requested (and the guest had declared itself).
    pub fn requested() -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }
}

/// Gives SIGTERM and SIGINT their default action back in this process (a
/// child forked after [`StopSignals::catch`], about to become a guest).
pub fn restore_default() -> io::Result<()> {
    for signal in STOP_SIGNALS {
        // SAFETY: SIG_DFL is a valid disposition; no pointer is kept.
        if unsafe { libc::signal(signal, libc::SIG_DFL) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Watches `fd` in the epoll set `epoll` for input, reported once
/// (`EPOLLONESHOT`), with `data` as the event's `data.u64`.
pub fn register_once(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>, data: u64) -> io::Result<()> {
    use rustix::event::epoll::{self, EventData, EventFlags};
    epoll::add(
        epoll,
        fd,
        EventData::new_u64(data),
        EventFlags::IN | EventFlags::ONESHOT,
    )?;
    Ok(())
}

fn declared() -> bool {
    if ENABLED.load(Ordering::SeqCst) {
        return true;
    }
    let word = ACK.load(Ordering::SeqCst);
    // SAFETY: `watch_ack`'s contract: mapped, readable, aligned; volatile,
    // because another process writes it.
    !word.is_null() && unsafe { word.read_volatile() } == ACK_VALUE.load(Ordering::SeqCst)
}

/// `kiln-hvt: exiting on signal N (NAME)\n` into `buf`; returns its length.
fn exit_message(signal: libc::c_int, buf: &mut [u8; 64]) -> usize {
    let name: &[u8] = match signal {
        libc::SIGTERM => b"SIGTERM",
        libc::SIGINT => b"SIGINT",
        _ => b"?",
    };
    let mut digits = [0u8; 10];
    let mut n = signal.unsigned_abs();
    let mut d = digits.len();
    loop {
        d -= 1;
        digits[d] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || d == 0 {
            break;
        }
    }
    let parts: [&[u8]; 5] = [
        b"kiln-hvt: exiting on signal ",
        &digits[d..],
        b" (",
        name,
        b")\n",
    ];
    let mut len = 0;
    for part in parts {
        let end = (len + part.len()).min(buf.len());
        buf[len..end].copy_from_slice(&part[..end - len]);
        len = end;
    }
    len
}

extern "C" fn on_stop_signal(signal: libc::c_int) {
    if declared() && !REQUESTED.swap(true, Ordering::SeqCst) {
        let one = 1u64;
        // SAFETY: `one` is 8 readable bytes, what an eventfd write takes;
        // a failure (a full counter) leaves the request marked all the same.
        unsafe { libc::write(EVENT_FD.load(Ordering::SeqCst), (&raw const one).cast(), 8) };
        return;
    }
    // The process ends: no tap keeps the offloads its guest negotiated.
    crate::net::clear_offloads();
    if FALLBACK.load(Ordering::SeqCst) == 0 {
        let mut buf = [0u8; 64];
        let len = exit_message(signal, &mut buf);
        // SAFETY: `buf[..len]` is readable; `_exit` ends the process
        // without running anything else.
        unsafe {
            libc::write(2, buf.as_ptr().cast(), len);
            libc::_exit(1);
        }
    }
    // SAFETY: restores the default action and raises the signal again,
    // which (blocked while this handler runs) is delivered on return and
    // ends the process.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_message_is_solo5_hvts_in_kilns_words() {
        let mut buf = [0u8; 64];
        let n = exit_message(libc::SIGTERM, &mut buf);
        assert_eq!(&buf[..n], b"kiln-hvt: exiting on signal 15 (SIGTERM)\n");
        let n = exit_message(libc::SIGINT, &mut buf);
        assert_eq!(&buf[..n], b"kiln-hvt: exiting on signal 2 (SIGINT)\n");
    }
}
