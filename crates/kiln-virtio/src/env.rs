//! What the generated crate's `run` function receives: the arguments, the
//! platform, and constructors for the devices.
//!
//! The image's own manifest note (the Solo5 manifest the generated crate
//! emits, in `unikernel.toml` order) names the net and block devices; the
//! VMM's virtio devices of each type are matched to them in order: the
//! first `net` device of the manifest is the first virtio-net device found,
//! and so on. `kiln run` attaches the devices in that same order.

use alloc::vec::Vec;

use kiln_abi::mft::{Manifest, MftError, MftType};

use kiln_rt::args::CmdlineError;

use crate::cmdline::{self, MmioDevice, MmioError};

/// Why the boot environment or a device could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The image's manifest note is malformed.
    #[error("the image's manifest: {0}")]
    Manifest(#[from] MftError),
    /// The command line announces a malformed virtio-mmio device.
    #[error(transparent)]
    Mmio(#[from] MmioError),
}

/// Why a device could not be handed to the unikernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The manifest has no device of that name and type.
    #[error(
        "no {kind} device `{name}` in the image's manifest; hint: declare it in unikernel.toml and rebuild"
    )]
    NotInManifest {
        /// The device asked for.
        name: &'static str,
        /// Its type.
        kind: &'static str,
    },
    /// The VMM has fewer virtio devices of the type than the manifest.
    #[error(
        "{kind} device `{name}` is the {position} {kind} device of the image, but the VM has {found}; hint: attach it (kiln run -t virtio --{kind}:{name}=...)"
    )]
    NotAttached {
        /// The device asked for.
        name: &'static str,
        /// Its type.
        kind: &'static str,
        /// Its position among the manifest's devices of that type (1st...).
        position: Ordinal,
        /// How many the VM has.
        found: usize,
    },
    /// The device did not initialise.
    #[error("{kind} device `{name}`: {why}")]
    Driver {
        /// The device.
        name: &'static str,
        /// Its type.
        kind: &'static str,
        /// What the driver said.
        why: alloc::string::String,
    },
}

/// An ordinal number (1st, 2nd, 3rd, 4th...), for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ordinal(pub usize);

impl core::fmt::Display for Ordinal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let n = self.0;
        let suffix = match (n % 10, n % 100) {
            (_, 11..=13) => "th",
            (1, _) => "st",
            (2, _) => "nd",
            (3, _) => "rd",
            _ => "th",
        };
        write!(f, "{n}{suffix}")
    }
}

/// A net or block device of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: MftType,
    /// Its position among the manifest's devices of the same type (0-based).
    pub position: usize,
}

/// The word `kiln run`'s flags use for a device type.
pub fn word(kind: MftType) -> &'static str {
    match kind {
        MftType::NetBasic => "net",
        MftType::BlockBasic => "block",
        MftType::ReservedFirst => "reserved",
    }
}

/// The net and block devices of a manifest note (the whole note, as the
/// linker script brackets it; empty when the image has none).
pub fn manifest_devices(note: &'static [u8]) -> Result<Vec<Device>, MftError> {
    // The note: 12-byte header and "Solo5\0" padded to 8, then the
    // descriptor (4 bytes of padding and `struct mft`).
    let Some(desc) = note.get(20..) else {
        return Ok(Vec::new());
    };
    let manifest = Manifest::from_note_desc(desc)?;
    let mut counts = [0usize; 2];
    Ok(manifest
        .devices()
        .map(|e| {
            let slot = usize::from(e.kind == MftType::BlockBasic);
            let position = counts[slot];
            counts[slot] += 1;
            Device {
                name: e.name,
                kind: e.kind,
                position,
            }
        })
        .collect())
}

/// The unikernel's environment.
pub struct Env {
    args: Result<Vec<&'static str>, CmdlineError>,
    mmio: Vec<MmioDevice>,
    devices: Vec<Device>,
}

impl Env {
    /// The environment of a kernel command line and the image's manifest
    /// note.
    pub fn new(cmdline: &'static str, manifest_note: &'static [u8]) -> Result<Env, EnvError> {
        let cmdline = cmdline::split(cmdline)?;
        Ok(Env {
            args: cmdline.args,
            mmio: cmdline.devices,
            devices: manifest_devices(manifest_note)?,
        })
    }

    /// The unikernel's arguments (the command line without the VMM's
    /// device words), or why the command line could not be split (an
    /// argument error: the generated crate exits 64).
    pub fn args(&self) -> Result<&[&'static str], CmdlineError> {
        self.args.as_deref().map_err(|e| *e)
    }

    /// The virtio-mmio transports the command line announced, in order.
    pub fn mmio_devices(&self) -> &[MmioDevice] {
        &self.mmio
    }

    /// The manifest's net and block devices.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The manifest device `name` of type `kind`.
    pub fn device(&self, name: &'static str, kind: MftType) -> Result<Device, DeviceError> {
        self.devices
            .iter()
            .find(|d| d.name == name && d.kind == kind)
            .copied()
            .ok_or(DeviceError::NotInManifest {
                name,
                kind: word(kind),
            })
    }
}

#[cfg(target_os = "none")]
impl Env {
    /// The platform.
    pub fn platform(&self) -> &'static crate::Platform {
        crate::platform::platform()
    }

    /// The serial console.
    pub fn console(&self) -> crate::Console {
        crate::Console::new()
    }

    /// The monotonic clock.
    pub fn clock(&self) -> crate::MonotonicClock {
        crate::MonotonicClock::new()
    }

    /// The wall clock.
    pub fn wall_clock(&self) -> crate::WallClock {
        crate::WallClock::new()
    }

    /// The shutdown device: a VMM's stop is a power-off (QEMU's `quit`,
    /// SIGTERM), with no request for the guest to see, so it never
    /// completes.
    pub fn shutdown(&self) -> kiln_devices::NoShutdown {
        kiln_devices::NoShutdown
    }

    /// The CPU's random number generator.
    pub fn random(&self) -> crate::Random {
        crate::Random::new(crate::exit)
    }

    /// The virtio-net device matched to the manifest's net device `name`.
    pub fn net(&self, name: &'static str) -> Result<crate::Net, DeviceError> {
        let d = self.device(name, MftType::NetBasic)?;
        match crate::Net::take(d.position) {
            Some(Ok(net)) => Ok(net),
            Some(Err(e)) => Err(DeviceError::Driver {
                name,
                kind: "net",
                why: alloc::format!("{e}"),
            }),
            None => Err(self.not_attached(d)),
        }
    }

    /// The virtio-blk device matched to the manifest's block device `name`.
    pub fn block(&self, name: &'static str) -> Result<crate::Block, DeviceError> {
        let d = self.device(name, MftType::BlockBasic)?;
        match crate::Block::take(d.position) {
            Some(Ok(block)) => Ok(block),
            Some(Err(e)) => Err(DeviceError::Driver {
                name,
                kind: "block",
                why: alloc::format!("{e}"),
            }),
            None => Err(self.not_attached(d)),
        }
    }

    fn not_attached(&self, d: Device) -> DeviceError {
        let (nets, blocks) = crate::sys::virtio::counts();
        DeviceError::NotAttached {
            name: d.name,
            kind: word(d.kind),
            position: Ordinal(d.position + 1),
            found: if d.kind == MftType::BlockBasic {
                blocks
            } else {
                nets
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::string::ToString;
    use kiln_abi::{MftEntry, MftNote};

    fn note() -> &'static [u8] {
        let note = MftNote::new([
            MftEntry::net("service"),
            MftEntry::block("disk"),
            MftEntry::net("admin"),
        ]);
        let mut buf = [0u8; 1024];
        let n = note.encode(&mut buf).unwrap();
        Box::leak(buf[..n].to_vec().into_boxed_slice())
    }

    #[test]
    fn devices_are_numbered_per_type_in_manifest_order() {
        let env = Env::new("--port 80 virtio_mmio.device=512@0xfeb00e00:12", note()).unwrap();
        assert_eq!(env.args().unwrap(), ["--port", "80"]);
        assert_eq!(env.mmio_devices().len(), 1);
        assert_eq!(env.device("admin", MftType::NetBasic).unwrap().position, 1);
        assert_eq!(env.device("disk", MftType::BlockBasic).unwrap().position, 0);
        let e = env.device("disk", MftType::NetBasic).unwrap_err();
        assert!(e.to_string().contains("no net device `disk`"), "{e}");
    }

    #[test]
    fn an_empty_note_has_no_devices_and_a_bad_one_is_refused() {
        assert!(manifest_devices(&[]).unwrap().is_empty());
        let mut bad = note().to_vec();
        bad[24] ^= 0xff; // the manifest's version
        let bad: &'static [u8] = Box::leak(bad.into_boxed_slice());
        assert!(manifest_devices(bad).is_err());
    }

    #[test]
    fn ordinals() {
        let s: Vec<_> = [1, 2, 3, 4, 11, 12, 13, 21, 22]
            .map(|n| Ordinal(n).to_string())
            .to_vec();
        assert_eq!(
            s,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd"
            ]
        );
    }
}
