//! kiln's one tap opener: attaching to a Linux tap interface through
//! `/dev/net/tun`, for the unix platform (`kiln-unix`) and the tenders
//! (`kiln-tender`'s net module, used by `kiln-hvt` and `kiln-spt`).
//!
//! Implements the kernel's TUN/TAP interface
//! (`Documentation/networking/tuntap.rst`): `TUNSETIFF` with `IFF_TAP |
//! IFF_NO_PI`, so that each read or write is exactly one Ethernet frame,
//! optionally `IFF_VNET_HDR` with `TUNSETOFFLOAD` (checksum and
//! segmentation offloads, each frame then led by a `struct
//! virtio_net_hdr`). The descriptor is always non-blocking and
//! close-on-exec: neither a unikernel nor a tender may block outside its
//! one wait.
//!
//! What differs between the callers is a [`TapOptions`]:
//!
//! - the tenders attach only to an existing interface, as Solo5's do
//!   (`create: false`: `ENODEV` otherwise), and negotiate offloads only
//!   for a guest that declared it reads the virtio-net header (kiln's
//!   VNET_HDR extension, `docs/hvt-extensions.md`);
//! - the unix platform creates the interface if there is none (it then
//!   goes away with the last descriptor) and asks for offloads, falling
//!   back to plain frames when the kernel refuses them.
//!
//! A tap keeps the offloads its last reader negotiated, even a killed one,
//! so opening without offloads clears them (`TUNSETOFFLOAD` 0, best
//! effort, as QEMU does), and a reader that negotiated them clears them
//! when it closes ([`clear_offloads`]; kiln-unix's device does on drop, the
//! tenders when they end, from a signal handler with
//! [`clear_offloads_raw`]). For the ends a process cannot see (SIGKILL),
//! a tap opened with offloads comes with a [`Guard`]: a process forked
//! when the tap is opened that clears them once the opener is gone.
//!
//! Errors are `io::Error`s: each caller wraps them with its own context
//! (which device, which flag) and a hint chosen by the error number.

mod guard;
mod sys;

pub use guard::{Guard, RawGuard, reap, stop_raw};

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

/// Linux's `IFNAMSIZ`: an interface name is at most 15 bytes.
pub const IFNAMSIZ: usize = libc::IFNAMSIZ;

/// Checksum and TCP segmentation offload over IPv4 and IPv6 (`TUN_F_CSUM |
/// TUN_F_TSO4 | TUN_F_TSO6`): what a reader that handles virtio-net
/// headers takes.
pub const TCP_OFFLOADS: u32 = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

/// How a tap is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TapOptions {
    /// Create the interface when none has the name (it is then removed
    /// when its last descriptor closes). Without it, a missing interface
    /// is `ENODEV` and nothing is created.
    pub create: bool,
    /// The `TUN_F_*` offloads to negotiate (`IFF_VNET_HDR` and
    /// `TUNSETOFFLOAD`), 0 for none. When the kernel refuses them the tap
    /// is reopened plain: a virtio-net header with nothing to offload
    /// would only cost a copy.
    pub offloads: u32,
}

/// An open tap interface.
#[derive(Debug)]
pub struct Tap {
    /// The descriptor: non-blocking, close-on-exec.
    pub fd: OwnedFd,
    /// Whether frames carry a `struct virtio_net_hdr` (offloads were
    /// negotiated).
    pub vnet_header: bool,
    /// With offloads, the process that clears them once this process is
    /// gone (SIGKILL included); to be kept as long as `fd` is open and
    /// stopped (dropped) when it closes, which clears them too.
    pub guard: Option<Guard>,
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether Linux accepts `name` as an interface name (the kernel's
/// `dev_valid_name`, and no `:`, which alias names use, nor whitespace).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

/// Opens the tap interface `name` as `options` say.
///
/// With offloads, the tap comes with its [`Guard`] (forked here).
///
/// Errors: `InvalidInput` for a name Linux cannot have (before any system
/// call); `ENODEV` for a missing interface without `create`; otherwise
/// what the kernel said (`EPERM`/`EACCES` without the right, `EBUSY` when
/// another descriptor still holds the tap after [`BUSY_WAIT`], `EINVAL`
/// when the interface is not a tap).
pub fn open(name: &str, options: TapOptions) -> io::Result<Tap> {
    if !valid_name(name) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    if !options.create && !sys::interface_exists(name)? {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    if options.offloads != 0 {
        let fd = attach(name, true)?;
        if sys::set_offload(fd.as_fd(), options.offloads).is_ok() {
            // Offloads only with a guard to clear them whatever ends this
            // process: without one (no process to be had) the tap is
            // plain.
            match Guard::spawn(fd.as_fd()) {
                Ok(guard) => {
                    return Ok(Tap {
                        fd,
                        vnet_header: true,
                        guard: Some(guard),
                    });
                }
                Err(_) => {
                    let _ = clear_offloads(fd.as_fd());
                }
            }
        }
        drop(fd);
    }
    let fd = attach(name, false)?;
    // Offloads a previous reader negotiated stay with the tap: without a
    // virtio-net header to read, none may stay on. Best effort: a kernel
    // without TUNSETOFFLOAD has none to clear.
    let _ = clear_offloads(fd.as_fd());
    Ok(Tap {
        fd,
        vnet_header: false,
        guard: None,
    })
}

/// How long [`open`] waits for a tap another descriptor holds.
///
/// A reader that was just killed lets go of its tap a moment after it is
/// reaped: its guard wakes, clears the offloads and closes it (2.5-28 ms
/// measured under load, `docs/bulk.md`, "A killed reader's offloads"), and
/// an spt guest dies after its tender. A supervisor or an operator that
/// starts the next reader at once would otherwise get `EBUSY`; a tap held
/// for longer (another live reader) still does, after this long.
pub const BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// `TUNSETIFF` on a new descriptor, tried again every 5 ms while the tap is
/// busy, for up to [`BUSY_WAIT`].
fn attach(name: &str, vnet: bool) -> io::Result<OwnedFd> {
    let start = std::time::Instant::now();
    loop {
        match sys::attach(name, vnet) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < BUSY_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Tells the kernel the tap's reader takes no offloaded frames any more
/// (`TUNSETOFFLOAD` 0).
pub fn clear_offloads(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::set_offload(fd, 0)
}

/// [`clear_offloads`] on descriptor number `fd`, for a signal handler,
/// which has no descriptor to borrow: one `ioctl`, async-signal-safe. A
/// closed descriptor, or one that is not a tap, is an error and nothing
/// else.
pub fn clear_offloads_raw(fd: RawFd) -> io::Result<()> {
    sys::set_offload_raw(fd, 0)
}

/// The MTU of the interface the tap descriptor `fd` is attached to
/// (`TUNGETIFF` for its name, then `SIOCGIFMTU`). An error when `fd` is
/// not a tun/tap descriptor (an inherited socket, say).
pub fn mtu(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let name = sys::attached_name(fd)?;
    let mtu = sys::interface_mtu(&name)?;
    u32::try_from(mtu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_linux_rules() {
        for good in ["tap0", "kiln-service.1", "a23456789012345"] {
            assert!(valid_name(good), "{good:?}");
        }
        for bad in [
            "",
            "a234567890123456",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            ".",
            "..",
            "a\0",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn bad_names_are_refused_before_any_system_call() {
        for name in ["", "a-name-longer-than-15", "nul\0", "a/b"] {
            for create in [false, true] {
                let options = TapOptions {
                    create,
                    offloads: 0,
                };
                assert_eq!(
                    open(name, options).unwrap_err().kind(),
                    io::ErrorKind::InvalidInput,
                    "{name:?}"
                );
            }
        }
    }

    #[test]
    fn a_descriptor_that_is_not_a_tap_has_no_mtu() {
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        assert!(mtu(a.as_fd()).is_err());
    }
}
