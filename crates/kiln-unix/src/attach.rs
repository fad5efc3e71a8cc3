//! Why a device could not be attached to its host resource.

use std::io;

/// A device could not be attached to the host resource named for it. The
/// message names both, so it can be shown to the person who ran the
/// unikernel as is.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Opening or configuring the tap interface failed.
    #[error("cannot attach net device `{device}` to tap `{ifname}`: {error}{}", tap_hint(.error))]
    Tap {
        /// The net device.
        device: String,
        /// The host interface.
        ifname: String,
        /// What the host said.
        error: io::Error,
    },
    /// The interface name cannot name a Linux interface.
    #[error(
        "cannot attach net device `{device}` to tap `{ifname}`: an interface name is 1 to 15 bytes \
         without `/`, `:`, whitespace or NUL\nhint: pass --net:{device}=tap0 or another valid name"
    )]
    InvalidIfname {
        /// The net device.
        device: String,
        /// The rejected name.
        ifname: String,
    },
    /// The MAC address given is a multicast address.
    #[error(
        "cannot attach net device `{device}` with MAC {mac}: it is a multicast address\n\
         hint: the lowest bit of the first byte must be 0, for example 02:00:00:00:00:01"
    )]
    MulticastMac {
        /// The net device.
        device: String,
        /// The rejected address.
        mac: kiln_devices::MacAddress,
    },
    /// Opening or inspecting the backing file failed.
    #[error("cannot attach block device `{device}` to file `{path}`: {error}")]
    File {
        /// The block device.
        device: String,
        /// The backing file.
        path: String,
        /// What the host said.
        error: io::Error,
    },
    /// The backing file is not a regular file.
    #[error(
        "cannot attach block device `{device}` to `{path}`: it is not a regular file\n\
         hint: create one with `truncate -s 64M {path}`"
    )]
    NotAFile {
        /// The block device.
        device: String,
        /// The path given.
        path: String,
    },
    /// The sector size is not a power of two of at least 512.
    #[error(
        "cannot attach block device `{device}`: sector size {sector_size} is not a power of two \
         of at least 512\nhint: pass --block-sector-size:{device}=512 or 4096"
    )]
    SectorSize {
        /// The block device.
        device: String,
        /// The rejected sector size.
        sector_size: u32,
    },
    /// The backing file does not hold a whole number of sectors.
    #[error(
        "cannot attach block device `{device}` to file `{path}`: its size of {size} bytes is not \
         a multiple of the sector size {sector_size}\nhint: resize it to whole sectors, for \
         example `truncate -s {rounded} {path}`"
    )]
    FileSize {
        /// The block device.
        device: String,
        /// The backing file.
        path: String,
        /// The file's size in bytes.
        size: u64,
        /// The sector size.
        sector_size: u32,
        /// The size rounded up to whole sectors.
        rounded: u64,
    },
}

/// A hint for the usual ways opening a tap fails.
fn tap_hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            "\nhint: run as root, or create the tap for this user first with \
             `ip tuntap add mode tap user $USER name IFACE`"
        }
        Some(libc::ENOENT | libc::ENODEV) => {
            "\nhint: the tun module is not available; load it with `modprobe tun`"
        }
        Some(libc::EBUSY) => "\nhint: another process holds this tap; choose another interface",
        Some(libc::EINVAL) => "\nhint: an interface with this name exists and is not a tap",
        _ => "",
    }
}
