//! The shape every tender module (net, block) has: the flags it takes, how
//! it attaches a manifest entry, the hypercalls it serves, the descriptors it
//! polls and the system calls it needs once the guest runs.
//!
//! Modules are Cargo features; [`compiled`] lists the ones built in and
//! [`KNOWN`] every module kiln has, so that a flag or a manifest entry for a
//! module that was compiled out is refused with the feature to enable.

use std::os::fd::{BorrowedFd, RawFd};

use kiln_abi::hvt::Hypercall;
use kiln_abi::mft::MftDeviceInfo;

pub use kiln_tender::module::{
    KNOWN, KnownModule, ModuleError, ModuleFlags, WithFlags, split_flag,
};

use crate::guest::GuestMemory;
use crate::hypercall::HypercallError;
use crate::sys::Epoll;

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

/// A tender module: its flags ([`ModuleFlags`]) and what it does on this
/// target.
pub trait Module: ModuleFlags {
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
    /// The guest features the image declared in kiln's features note
    /// (`kiln_abi::note`, `KILN_GUEST_*`), told before any device is
    /// attached and only when kiln's extensions are offered: the net module
    /// opens its taps with offloads for a guest that reads virtio-net
    /// headers.
    fn guest_features(&mut self, _features: u32) {}
    /// Turns on the module's kiln extension hypercalls (`kiln_abi::hvt_ext`)
    /// and returns their feature bits, which the guest finds in kiln's
    /// CPUID leaf; 0 when the module has none.
    fn enable_extensions(&mut self) -> u32 {
        0
    }
    /// The net devices Solo5's ring I/O would serve (`crate::ring`), if
    /// the module has any attached.
    #[cfg(feature = "net")]
    fn ring_devices(&self) -> Option<crate::ring::RingDevices> {
        None
    }
    /// Whether the module serves NET_EXCHANGE (its extension is on).
    fn serves_exchange(&self) -> bool {
        false
    }
    /// Serves NET_EXCHANGE with its argument at guest address `gpa`,
    /// waiting on `epoll` as POLL does.
    fn exchange(
        &mut self,
        _gpa: u64,
        _mem: &mut GuestMemory,
        _epoll: &Epoll,
    ) -> Result<(), HypercallError> {
        Err(HypercallError::Unserved {
            call: "net exchange",
        })
    }
    /// Serves NET_EXCHANGE_AREA (served with NET_EXCHANGE) with its
    /// argument at guest address `gpa`, waiting on `epoll` as POLL does.
    fn exchange_area(
        &mut self,
        _gpa: u64,
        _mem: &mut GuestMemory,
        _epoll: &Epoll,
    ) -> Result<(), HypercallError> {
        Err(HypercallError::Unserved {
            call: "net exchange",
        })
    }
    /// Whether the module serves BLOCK_EXCHANGE (its extension is on).
    fn serves_block_exchange(&self) -> bool {
        false
    }
    /// Serves BLOCK_EXCHANGE with its argument at guest address `gpa`.
    fn block_exchange(&mut self, _gpa: u64, _mem: &mut GuestMemory) -> Result<(), HypercallError> {
        Err(HypercallError::Unserved {
            call: "block exchange",
        })
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
