//! Stateless session tickets: the server seals a session's state into the
//! ticket it hands the client (TLS 1.3 tickets, TLS 1.2 `SessionTicket`
//! per RFC 5077) instead of remembering it, so resumption needs no server
//! memory per session and a ticket can be used more than once.
//!
//! The RustCrypto provider has no ticketer, so [`TicketKey`] is one:
//! ChaCha20-Poly1305 (the fast AEAD in portable code, see
//! [`crate::config::AES_HARDWARE`]) under a 256-bit key drawn from the
//! installed random device ([`crate::entropy`]). Keys rotate with rustls's
//! own [`TicketSwitcher`]: a key seals new tickets for [`KEY_LIFETIME`]
//! seconds, then only opens them for as long again, then is dropped (and
//! zeroed), so a ticket lives at most twice [`KEY_LIFETIME`] and a leaked
//! key exposes at most that window's sessions. Rotation happens on the
//! first ticket sealed or opened after the switch time, by the wall clock.
//!
//! A ticket is `key name (16 random bytes) || nonce (12 random bytes) ||
//! ciphertext || tag (16)`, the key name also the AEAD's associated data.
//! Anything else (another key's ticket, a forged or cut one) opens to
//! `None` and the handshake falls back to a full one.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rustls::crypto::GetRandomFailed;
use rustls::server::ProducesTickets;
use rustls::ticketer::TicketSwitcher;
use rustls::time_provider::TimeProvider;
use zeroize::Zeroize;

use crate::config::SpinMutex;
use crate::entropy;

/// Seconds a ticket key seals new tickets; it opens them for as long
/// again, and tickets advertise twice this lifetime (12 hours, the
/// lifetime of `ring`'s and `aws-lc-rs`'s ticketers in rustls).
pub const KEY_LIFETIME: u32 = 6 * 60 * 60;

const NAME_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// One ticket key: a random name and a ChaCha20-Poly1305 key (zeroed on
/// drop by the cipher).
pub struct TicketKey {
    name: [u8; NAME_LEN],
    aead: ChaCha20Poly1305,
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKey")
    }
}

impl TicketKey {
    /// A fresh key and name from the installed random device.
    pub fn generate() -> Result<TicketKey, GetRandomFailed> {
        let mut key = [0u8; 32];
        let mut name = [0u8; NAME_LEN];
        let filled = entropy::fill(&mut key).and_then(|()| entropy::fill(&mut name));
        let aead = ChaCha20Poly1305::new(&key.into());
        key.zeroize();
        filled.map_err(|_| GetRandomFailed)?;
        Ok(TicketKey { name, aead })
    }

    fn generate_boxed() -> Result<Box<dyn ProducesTickets>, GetRandomFailed> {
        Ok(Box::new(TicketKey::generate()?))
    }
}

impl ProducesTickets for TicketKey {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        KEY_LIFETIME
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        entropy::fill(&mut nonce).ok()?;
        let sealed = self
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &self.name,
                },
            )
            .ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + sealed.len());
        ticket.extend_from_slice(&self.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        if name != self.name {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        self.aead
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: name,
                },
            )
            .ok()
    }
}

/// The rotating ticketer of a server configuration: rustls's
/// [`TicketSwitcher`] over [`TicketKey`]s, switching every
/// [`KEY_LIFETIME`] seconds of `clock`. Fails only if the random device
/// does (it draws its first two keys at once). `clock` must always tell
/// the time (the switcher unwraps it without std); kiln's wall clock as
/// [`crate::config`] wraps it does.
pub fn ticketer(
    clock: &'static dyn TimeProvider,
) -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    Ok(Arc::new(TicketSwitcher::new::<SpinMutex>(
        KEY_LIFETIME,
        TicketKey::generate_boxed,
        clock,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(core::sync::atomic::AtomicU8);

    impl kiln_devices::Random for Counter {
        fn fill(&self, buf: &mut [u8]) -> Result<(), kiln_devices::RandomError> {
            for b in buf {
                *b = self.0.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        }
    }

    #[test]
    fn tickets_open_only_under_their_key_and_unchanged() {
        entropy::install(Counter(core::sync::atomic::AtomicU8::new(1)));
        let a = TicketKey::generate().unwrap();
        let b = TicketKey::generate().unwrap();
        let plain = b"session state";
        let ticket = a.encrypt(plain).unwrap();
        assert_eq!(ticket.len(), NAME_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        assert_eq!(a.decrypt(&ticket).as_deref(), Some(&plain[..]));
        assert_eq!(b.decrypt(&ticket), None);
        // Every bit flipped, every prefix: nothing opens.
        for i in 0..ticket.len() * 8 {
            let mut bad = ticket.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(a.decrypt(&bad), None, "bit {i}");
        }
        for n in 0..ticket.len() {
            assert_eq!(a.decrypt(&ticket[..n]), None, "prefix {n}");
        }
        // Two tickets of the same state differ (fresh nonces).
        assert_ne!(a.encrypt(plain).unwrap(), ticket);
    }
}
