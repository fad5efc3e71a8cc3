//! TLS 1.3 and 1.2, server and client, over any kiln
//! [`TcpStream`](kiln_devices::TcpStream): the same code on unix (host
//! sockets or kiln's own stack), hvt and spt.
//!
//! The protocol is [`rustls`]'s, through its unbuffered API (rustls without
//! std has no other); the cryptography is the RustCrypto provider
//! (`rustls-rustcrypto`: pure Rust, builds for `x86_64-unknown-none`, whose
//! images have no SSE; ARCHITECTURE.md says why this provider). There its
//! AES-GCM is portable code, so servers in those images prefer
//! ChaCha20-Poly1305 ([`config::AES_HARDWARE`]). Layering:
//!
//! - [`entropy`]: the random device every handshake draws from, installed
//!   once per image, also behind getrandom for the provider's key
//!   generation;
//! - [`config`]: identities (certificate chain and key) and CA roots in PEM
//!   from any [`KvRo`](kiln_devices::KvRo) store, and the server and client
//!   configurations (protocol versions, ALPN, resumption, client
//!   certificates, the wall clock as rustls's time);
//! - [`sni`]: several identities on one server, chosen by the ClientHello's
//!   server name;
//! - [`tickets`]: stateless session tickets (ChaCha20-Poly1305, rotating
//!   keys from the random device);
//! - [`stream`]: [`TlsStream`], which drives one connection: handshake,
//!   records, `close_notify`; it is itself a `TcpStream`, so that an HTTP
//!   server written against the trait serves HTTPS unchanged.
//!
//! Every failure is a [`TlsError`]; nothing here panics on what a peer
//! sends.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

pub mod config;
pub mod entropy;
pub mod sni;
pub mod stream;
pub mod tickets;

pub use config::{
    ClientSettings, Identity, ServerSettings, client_config, server_config, server_config_by_name,
};
pub use rustls::{ClientConfig, ServerConfig};
pub use sni::UnknownName;
pub use stream::{TlsStream, accept, connect};

use kiln_devices::{KvError, StackError};

/// Why a TLS operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsError {
    /// The TLS protocol failed: a bad or unsupported message from the peer,
    /// a certificate that does not verify, an alert received.
    #[error("TLS: {0}")]
    Protocol(rustls::Error),
    /// The TCP connection under TLS failed.
    #[error("TCP: {0}")]
    Tcp(StackError),
    /// The peer closed the TCP connection without a TLS `close_notify`:
    /// what it sent may be truncated.
    #[error("connection closed without close_notify")]
    UnexpectedEof,
    /// The connection has already sent its `close_notify` or failed.
    #[error("connection closed")]
    Closed,
    /// A handshake message does not fit the receive buffer's bound.
    #[error("handshake message larger than {0} bytes")]
    TooLarge(usize),
    /// A key of the store could not be read.
    #[error("cannot read `{key}` from the store: {source}")]
    Store {
        /// The key.
        key: alloc::string::String,
        /// Why.
        source: KvError,
    },
    /// A PEM value holds no certificate, no private key, or is malformed.
    #[error("`{key}`: {what}")]
    Pem {
        /// The key of the store.
        key: alloc::string::String,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The CA certificates for verifying clients cannot be used.
    #[error("client CA certificates: {0}")]
    ClientRoots(alloc::string::String),
    /// A server name for a client connection is not a valid DNS name or
    /// IP address.
    #[error("invalid server name `{0}`")]
    ServerName(alloc::string::String),
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Protocol(e)
    }
}

impl From<StackError> for TlsError {
    fn from(e: StackError) -> Self {
        TlsError::Tcp(e)
    }
}
