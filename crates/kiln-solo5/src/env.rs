//! What the generated crate's `run` function receives: the command-line
//! arguments, the platform, and constructors for the manifest's devices.

use alloc::vec::Vec;

use kiln_abi::mft::{Manifest, MftDeviceInfo, MftError, MftType};

use kiln_rt::args::{CmdlineError, cmdline};

use crate::reactor::{Handle, ReactorError};

/// Why a device could not be handed to the unikernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The manifest has no device of that name.
    #[error(
        "no {kind} device `{name}` in the image's manifest; \
         hint: declare it in unikernel.toml and rebuild"
    )]
    NotInManifest {
        /// The device asked for.
        name: &'static str,
        /// The device type asked for.
        kind: &'static str,
    },
    /// The manifest's device of that name has another type.
    #[error("device `{name}` is a {found} device in the manifest, not a {expected} device")]
    WrongType {
        /// The device asked for.
        name: &'static str,
        /// The type asked for.
        expected: &'static str,
        /// The type in the manifest.
        found: &'static str,
    },
    /// The tender did not attach a host resource to the device.
    #[error("{kind} device `{name}` is not attached; hint: pass --{kind}:{name}=... to the tender")]
    NotAttached {
        /// The device asked for.
        name: &'static str,
        /// Its type.
        kind: &'static str,
    },
    /// The tender reported a block size kiln cannot use.
    #[error(
        "block device `{name}` has a sector size of {sector_size} bytes; \
         hint: use a power of two of at least 512 (--block-sector-size:{name}=N)"
    )]
    BadSectorSize {
        /// The device.
        name: &'static str,
        /// Its sector size.
        sector_size: u16,
    },
    /// The device's handle does not fit a ready set.
    #[error("device `{name}`: {source}")]
    Handle {
        /// The device.
        name: &'static str,
        /// What is wrong with the handle.
        source: ReactorError,
    },
}

/// One device of the manifest, as the tender filled it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: MftType,
    /// Its handle (manifest index).
    pub handle: u64,
    /// Whether the tender attached a host resource.
    pub attached: bool,
    /// The properties the tender filled in.
    pub info: MftDeviceInfo,
    /// The tender's `b` union: on spt, the host descriptor (`b.hostfd`, a
    /// C int in the low 32 bits) the guest's system calls use; zero on hvt.
    pub backing: u64,
}

impl Device {
    /// The host descriptor the spt tender attached (`b.hostfd`).
    pub fn host_fd(&self) -> i32 {
        self.backing as u32 as i32
    }
}

/// The word the tender's flags use for a device type (`--net:`,
/// `--block:`).
fn word(kind: MftType) -> &'static str {
    match kind {
        MftType::NetBasic => "net",
        MftType::BlockBasic => "block",
        MftType::ReservedFirst => "reserved",
    }
}

/// Reads the devices of a `struct mft` (the tender's copy).
pub fn devices(bytes: &'static [u8]) -> Result<Vec<Device>, MftError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let manifest = Manifest::new_checked(bytes)?;
    Ok(manifest
        .devices()
        .map(|e| {
            // Validated: every entry is there; the OUT fields are the
            // tender's (zero under one that attached nothing).
            let raw = manifest.raw_entry(e.index);
            Device {
                name: e.name,
                kind: e.kind,
                handle: e.index as u64,
                attached: raw.is_some_and(|r| r.attached != 0),
                info: raw.map(|r| r.info).unwrap_or_default(),
                backing: raw.map_or(0, |r| r.backing),
            }
        })
        .collect())
}

/// Splits the Solo5 command line (the tender's arguments after the image,
/// joined with spaces) back into arguments, as MirageOS does: spaces
/// separate, `"` quotes, `\` escapes ([`kiln_rt::args::cmdline`]).
pub fn split_args(cmdline: &'static str) -> Result<Vec<&'static str>, CmdlineError> {
    cmdline::split_static(cmdline)
}

/// The environment a unikernel starts in.
pub struct Env {
    args: Result<Vec<&'static str>, CmdlineError>,
    devices: Vec<Device>,
}

impl Env {
    /// The environment for `cmdline` and the manifest bytes `mft`.
    pub fn new(cmdline: &'static str, mft: &'static [u8]) -> Result<Env, MftError> {
        Ok(Env {
            args: split_args(cmdline),
            devices: devices(mft)?,
        })
    }

    /// The command-line arguments (without a program name), or why the
    /// command line could not be split (an argument error: the generated
    /// crate exits 64).
    pub fn args(&self) -> Result<&[&'static str], CmdlineError> {
        self.args.as_deref().map_err(|e| *e)
    }

    /// The devices the manifest declares.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The attached device `name` of type `kind`.
    pub fn device(&self, name: &'static str, kind: MftType) -> Result<&Device, DeviceError> {
        let device =
            self.devices
                .iter()
                .find(|d| d.name == name)
                .ok_or(DeviceError::NotInManifest {
                    name,
                    kind: word(kind),
                })?;
        if device.kind != kind {
            return Err(DeviceError::WrongType {
                name,
                expected: word(kind),
                found: word(device.kind),
            });
        }
        if !device.attached {
            return Err(DeviceError::NotAttached {
                name,
                kind: word(kind),
            });
        }
        Ok(device)
    }

    /// The handle of the attached device `name` of type `kind`.
    pub fn handle(
        &self,
        name: &'static str,
        kind: MftType,
    ) -> Result<(Handle, &Device), DeviceError> {
        let device = self.device(name, kind)?;
        let handle =
            Handle::new(device.handle).map_err(|source| DeviceError::Handle { name, source })?;
        Ok((handle, device))
    }
}

#[cfg(target_os = "none")]
impl Env {
    /// The platform: hand it to `kiln_rt::block_on`.
    pub fn platform(&self) -> &'static crate::Platform {
        crate::platform::platform()
    }

    /// The console.
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

    /// The shutdown device (kiln's stop request; declares it to the
    /// tender).
    pub fn shutdown(&self) -> crate::Shutdown {
        crate::Shutdown::new()
    }

    /// The random device.
    pub fn random(&self) -> crate::Random {
        crate::Random::new(crate::exit)
    }

    /// The network interface `name`.
    pub fn net(&self, name: &'static str) -> Result<crate::Net, DeviceError> {
        let (handle, device) = self.handle(name, MftType::NetBasic)?;
        Ok(crate::Net::new(
            handle,
            device,
            crate::platform::platform().reactor(),
        ))
    }

    /// The block device `name`.
    pub fn block(&self, name: &'static str) -> Result<crate::Block, DeviceError> {
        let (handle, device) = self.handle(name, MftType::BlockBasic)?;
        crate::Block::new(handle, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::string::ToString;
    use kiln_abi::MftNote;
    use kiln_abi::mft::{MftEntry, entry_offset};

    /// The tender's copy of a manifest with `service` (net) attached with a
    /// MAC and MTU, and `disk` (block) not attached.
    fn tender_copy() -> &'static [u8] {
        let note = MftNote::new([MftEntry::net("service"), MftEntry::block("disk")]);
        let mut buf = [0u8; 1024];
        let n = note.encode(&mut buf).unwrap();
        // The note: 20-byte header, 4 bytes of padding, then `struct mft`.
        let mut mft = buf[24..n].to_vec();
        // `struct mft_entry` (`mft_abi.h`): `u` at 72, `b` at 88, `attached`
        // at 96.
        let service = entry_offset(1);
        mft[service + 96] = 1;
        let info = MftDeviceInfo::net([2, 0, 0, 0, 0, 1], 1500);
        mft[service + 72..service + 80].copy_from_slice(&info.words[0].to_le_bytes());
        mft[service + 88..service + 96].copy_from_slice(&7u64.to_le_bytes());
        Box::leak(mft.into_boxed_slice())
    }

    #[test]
    fn arguments_are_split_as_mirage_splits_them() {
        assert_eq!(
            split_args(" --times 3  --name x ").unwrap(),
            ["--times", "3", "--name", "x"]
        );
        assert_eq!(
            split_args(r#"--msg="hello world" a\ b"#).unwrap(),
            ["--msg=hello world", "a b"]
        );
        assert!(split_args("").unwrap().is_empty());
        let env = Env::new("--msg=\"open", &[]).unwrap();
        assert_eq!(env.args(), Err(CmdlineError::UnclosedQuote(6)));
    }

    #[test]
    fn attached_devices_are_found_with_their_properties() {
        let env = Env::new("", tender_copy()).unwrap();
        assert_eq!(env.devices().len(), 2);
        let (handle, service) = env.handle("service", MftType::NetBasic).unwrap();
        assert_eq!(handle.raw(), 1);
        assert_eq!(service.info.net_mac(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(service.info.net_mtu(), 1500);
        assert_eq!(service.host_fd(), 7);
    }

    #[test]
    fn missing_mistyped_and_unattached_devices_are_errors() {
        let env = Env::new("", tender_copy()).unwrap();
        let err = env.device("nope", MftType::NetBasic).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::NotInManifest { name: "nope", .. }
        ));
        let err = env.device("service", MftType::BlockBasic).unwrap_err();
        assert!(matches!(err, DeviceError::WrongType { .. }), "{err}");
        let err = env.device("disk", MftType::BlockBasic).unwrap_err();
        assert!(err.to_string().contains("is not attached"), "{err}");
    }

    #[test]
    fn a_corrupt_manifest_is_refused() {
        let mut bad = tender_copy().to_vec();
        bad[0] = 9;
        assert!(Env::new("", Box::leak(bad.into_boxed_slice())).is_err());
        assert!(Env::new("", &[]).unwrap().devices().is_empty());
    }
}
