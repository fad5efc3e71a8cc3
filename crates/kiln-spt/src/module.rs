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

use std::os::fd::{BorrowedFd, RawFd};

use kiln_abi::mft::MftDeviceInfo;

pub use kiln_tender::module::{
    KNOWN, KnownModule, ModuleError, ModuleFlags, WithFlags, split_flag,
};

use crate::seccomp::Rule;

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

/// A tender module: its flags ([`ModuleFlags`]) and what it does on this
/// target.
pub trait Module: ModuleFlags {
    /// Attaches the host resource given for manifest entry `name` (handle
    /// `handle`).
    fn attach(&mut self, handle: u64, name: &str) -> Result<Attached, ModuleError>;
    /// Descriptors for the epoll set, each with its device handle.
    fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, u64)>;
    /// The system calls the guest may make on the attached devices.
    fn rules(&self) -> Vec<Rule>;
    /// The guest features the image declared in kiln's features note
    /// (`kiln_abi::note`, `KILN_GUEST_*`), told before any device is
    /// attached and only when kiln's extensions are offered.
    fn guest_features(&mut self, _features: u32) {}
    /// Once every device is attached: the kiln feature bits
    /// (`kiln_abi::hvt_ext`) the module's devices give the guest. A module
    /// may reopen devices here ([`Module::poll_fds`] then says their new
    /// descriptors).
    fn settle_features(&mut self) -> u32 {
        0
    }
}

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
