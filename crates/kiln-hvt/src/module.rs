//! The shape every tender module (net, block) has: the flags it takes, how
//! it attaches a manifest entry, the hypercalls it serves, the descriptors it
//! polls and the system calls it needs once the guest runs.
//!
//! Modules are Cargo features; [`compiled`] lists the ones built in and
//! [`KNOWN`] every module kiln has, so that a flag or a manifest entry for a
//! module that was compiled out is refused with the feature to enable.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use kiln_abi::hvt::Hypercall;
use kiln_abi::mft::{MftDeviceInfo, MftType};
use thiserror::Error;

use crate::guest::GuestMemory;
use crate::hypercall::HypercallError;

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

/// A system call a module needs after the seccomp filter is installed,
/// allowed only on the given descriptor (its first argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdSyscall {
    /// The system call number.
    pub nr: i64,
    /// Its name, for the seccomp allow-list's golden test.
    pub name: &'static str,
    /// The descriptor it may act on.
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
    /// `handle`) and returns the properties the guest sees.
    fn attach(&mut self, handle: u64, name: &str) -> Result<MftDeviceInfo, ModuleError>;
    /// Whether the module serves hypercall `hc`.
    fn serves(&self, hc: Hypercall) -> bool;
    /// Serves hypercall `hc` with its argument at guest address `gpa`.
    fn hypercall(
        &mut self,
        hc: Hypercall,
        gpa: u64,
        mem: &mut GuestMemory,
    ) -> Result<(), HypercallError>;
    /// Descriptors to poll, each with its device handle.
    fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, u64)>;
    /// System calls the module makes while the guest runs.
    fn syscalls(&self) -> Vec<FdSyscall>;
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
