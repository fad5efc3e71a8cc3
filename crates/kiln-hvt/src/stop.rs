//! kiln's STOP extension on hvt (`kiln_abi::hvt_ext`, "STOP"): the
//! STOP_ENABLE hypercall, and the stop word written into the guest once a
//! SIGTERM or SIGINT asked for a stop.
//!
//! The signals themselves are [`kiln_tender::stop`]'s: its handler writes an
//! eventfd this module puts in the POLL set (reported once), so that a wait
//! in progress returns at once; before the guest resumes from that (or any)
//! hypercall, [`Stop::deliver`] writes the guest's word. A guest that never
//! makes STOP_ENABLE keeps solo5-hvt's behaviour: the tender exits 1.

use std::io;

use kiln_abi::hvt_ext::{HcStopEnable, KILN_STOP_REQUESTED};
use kiln_tender::stop::{Fallback, StopSignals, register_once};

use crate::guest::GuestMemory;
use crate::hypercall::HypercallError;
use crate::sys::Epoll;

/// The `data.u64` of the stop event in the POLL set: above the 64 handles
/// a ready set names, so it never shows in one.
pub const STOP_EVENT: u64 = 1 << 40;

/// The stop request of one guest.
#[derive(Debug)]
pub struct Stop {
    signals: StopSignals,
    /// The guest's stop word, once it made STOP_ENABLE.
    word: Option<u64>,
    delivered: bool,
}

impl Stop {
    /// Catches SIGTERM and SIGINT (solo5-hvt's exit until the guest makes
    /// STOP_ENABLE) and watches the stop event in `epoll`.
    pub fn install(epoll: &Epoll) -> io::Result<Self> {
        let signals = StopSignals::new()?;
        register_once(epoll.raw_fd(), signals.event_fd(), STOP_EVENT)?;
        signals.catch(Fallback::ExitOne)?;
        Ok(Self {
            signals,
            word: None,
            delivered: false,
        })
    }

    /// The eventfd the signal handler writes (for the seccomp filter).
    pub fn event_fd(&self) -> i32 {
        self.signals.event_fd()
    }

    /// STOP_ENABLE with its argument at `gpa`: checks the stop word (inside
    /// guest memory and writable) and from now on turns the first
    /// stop signal into a request.
    pub fn enable(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        let HcStopEnable { word } = mem
            .read(gpa)
            .map_err(|source| HypercallError::memory("stop enable", "argument", source))?;
        mem.slice_mut(word, 8)
            .map_err(|source| HypercallError::memory("stop enable", "word", source))?;
        self.word = Some(word);
        StopSignals::enable();
        Ok(())
    }

    /// Writes the stop word if a stop was requested and the guest has not
    /// been told yet. Called after every hypercall, before the guest
    /// resumes: one atomic load when nothing happened.
    pub fn deliver(&mut self, mem: &mut GuestMemory) {
        if self.delivered || !StopSignals::requested() {
            return;
        }
        let Some(word) = self.word else {
            return;
        };
        self.delivered = true;
        // Checked at STOP_ENABLE; the ranges made read-only never change
        // after boot.
        if let Ok(bytes) = mem.slice_mut(word, 8) {
            bytes.copy_from_slice(&KILN_STOP_REQUESTED.to_le_bytes());
        }
    }
}
