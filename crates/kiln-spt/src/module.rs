//! The shape every tender module (net, block) has: the flags it takes, how
//! it attaches a manifest entry to a host descriptor, the descriptors the
//! epoll set watches and the system calls the guest may make on them.
//!
//! Modules are Cargo features; [`compiled`] lists the ones built in and
//! [`KNOWN`] every module kiln has, so that a flag or a manifest entry for a
//! module that was compiled out is refused with the feature to enable.
//! Unlike hvt, an spt module serves no hypercall: the guest makes the system
//! calls itself, and the module's whole job at run time is its seccomp
//! rules.

use std::io;
use std::os::fd::RawFd;

use kiln_abi::mft::{MftDeviceInfo, MftType};
use thiserror::Error;

use crate::seccomp::Rule;

/// Errors of the net and block modules.
#[derive(Debug, Error)]
pub enum ModuleError {
    /// A flag that does not parse.
    #[error("bad flag {flag}: expected {expected}")]
    FlagSyntax {
        /// The flag as given.
        flag: String,
        /// Its expected form.
        expected: &'static str,
    },
    /// The same device given twice.
    #[error("{flag}: device '{name}' is already given by an earlier flag")]
    DuplicateFlag {
        /// The flag as given.
        flag: String,
        /// The device name.
        name: String,
    },
    /// A manifest device with no flag attaching it.
    #[error("device '{name}' ({kind}) is declared by the image but not attached; hint: {hint}")]
    NotAttached {
        /// The device name.
        name: String,
        /// Its type.
        kind: &'static str,
        /// The flag to add.
        hint: String,
    },
    /// The host resource cannot be opened.
    #[error("device '{name}': cannot open {what}")]
    Open {
        /// The device name.
        name: String,
        /// What was being opened.
        what: String,
        /// What the host said.
        #[source]
        source: io::Error,
    },
    /// The host resource is unusable.
    #[error("device '{name}': {problem}")]
    Invalid {
        /// The device name.
        name: String,
        /// What is wrong, with a hint where there is a fix.
        problem: String,
    },
}

/// A device a module attached: what the guest sees in its manifest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    /// The manifest handle (entry index).
    pub handle: u64,
    /// The properties (`u`), OUT.
    pub info: MftDeviceInfo,
    /// The host descriptor (`b.hostfd`), OUT: the guest's system calls
    /// name it.
    pub fd: RawFd,
}

/// A tender module.
pub trait Module {
    /// The module's name, as in its Cargo feature.
    fn name(&self) -> &'static str;
    /// The manifest entry type it attaches.
    fn device_type(&self) -> MftType;
    /// Help lines for its flags.
    fn usage(&self) -> &'static str;
    /// Offers a command-line flag; `Ok(true)` if the module took it.
    fn parse_flag(&mut self, flag: &str) -> Result<bool, ModuleError>;
    /// Each device name the flags mention, with the flag that mentions it.
    fn named_devices(&self) -> Vec<(String, String)>;
    /// Attaches the host resource given for manifest entry `name` (handle
    /// `handle`).
    fn attach(&mut self, handle: u64, name: &str) -> Result<Attached, ModuleError>;
    /// Descriptors for the epoll set, each with its device handle.
    fn poll_fds(&self) -> Vec<(RawFd, u64)>;
    /// The system calls the guest may make on the attached devices.
    fn rules(&self) -> Vec<Rule>;
}

/// A module kiln has, compiled in or not.
#[derive(Debug, Clone, Copy)]
pub struct KnownModule {
    /// Its name and Cargo feature.
    pub name: &'static str,
    /// The entry type it attaches.
    pub device_type: MftType,
    /// The prefixes of its flags.
    pub flag_prefixes: &'static [&'static str],
}

/// Every module kiln has.
pub const KNOWN: [KnownModule; 2] = [
    KnownModule {
        name: "net",
        device_type: MftType::NetBasic,
        flag_prefixes: &["--net:", "--net-mac:"],
    },
    KnownModule {
        name: "block",
        device_type: MftType::BlockBasic,
        flag_prefixes: &["--block:", "--block-sector-size:"],
    },
];

/// The modules compiled into this tender, fresh.
// One push per feature under `cfg`, which `vec![]` cannot express.
#[allow(clippy::vec_init_then_push)]
pub fn compiled() -> Vec<Box<dyn Module>> {
    #[allow(unused_mut)]
    let mut modules: Vec<Box<dyn Module>> = Vec::new();
    #[cfg(feature = "net")]
    modules.push(Box::new(crate::net::Net::default()));
    #[cfg(feature = "block")]
    modules.push(Box::new(crate::block::Block::default()));
    modules
}

/// Splits `--prefix:NAME=VALUE` into `(NAME, VALUE)`.
pub fn split_flag<'f>(
    flag: &'f str,
    prefix: &str,
    expected: &'static str,
) -> Result<Option<(&'f str, &'f str)>, ModuleError> {
    let Some(rest) = flag.strip_prefix(prefix) else {
        return Ok(None);
    };
    let bad = || ModuleError::FlagSyntax {
        flag: flag.to_string(),
        expected,
    };
    let (name, value) = rest.split_once('=').ok_or_else(bad)?;
    if name.is_empty()
        || value.is_empty()
        || !name.bytes().all(kiln_abi::mft::is_name_byte)
        || name.len() > kiln_abi::mft::MFT_NAME_MAX
    {
        return Err(bad());
    }
    Ok(Some((name, value)))
}
