//! The net module: attaches a tap interface (`--net:NAME=IFACE`) or an
//! inherited descriptor (`--net:NAME=@FD`) to each `NET_BASIC` manifest
//! entry, and serves the net read and write hypercalls.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use kiln_abi::hvt::{HcNetRead, HcNetWrite, Hypercall};
use kiln_abi::mft::{MftDeviceInfo, MftType};
use kiln_abi::status::Solo5Result;
use std::mem::{offset_of, size_of};

use crate::guest::{GuestMemory, arg_u64, set_i32, set_u64};
use crate::hypercall::HypercallError;
use crate::module::{FdSyscall, Module, ModuleError, ModuleFlags, split_flag};

/// The MTU every interface reports.
pub const MTU: u16 = 1500;
/// Largest frame accepted from the guest: MTU plus an Ethernet header with
/// a VLAN tag.
const MAX_FRAME: u64 = MTU as u64 + 18;

#[derive(Debug)]
struct Interface {
    name: String,
    target: String,
    flag: String,
    mac: Option<[u8; 6]>,
    attached: Option<(u64, File)>,
}

/// The net module.
#[derive(Debug, Default)]
pub struct Net {
    interfaces: Vec<Interface>,
    macs: Vec<(String, [u8; 6], String)>,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut mac))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0) as u64
            ^ u64::from(std::process::id());
        mac.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    // Locally administered, unicast.
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

impl Net {
    fn device(&mut self, handle: u64) -> Option<&mut File> {
        self.interfaces
            .iter_mut()
            .filter_map(|i| i.attached.as_mut())
            .find(|(h, _)| *h == handle)
            .map(|(_, f)| f)
    }

    fn write(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        const CALL: &str = "net write";
        let size = size_of::<HcNetWrite>() as u64;
        let arg = mem
            .read_array::<{ size_of::<HcNetWrite>() }>(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        let handle = arg_u64(&arg, offset_of!(HcNetWrite, handle));
        let data = arg_u64(&arg, offset_of!(HcNetWrite, data));
        let len = arg_u64(&arg, offset_of!(HcNetWrite, len));
        let frame = mem
            .slice(data, len)
            .map_err(|source| HypercallError::memory(CALL, "frame", source))?;
        let ret = if len > MAX_FRAME {
            Solo5Result::Einval
        } else {
            match self.device(handle) {
                None => Solo5Result::Einval,
                Some(tap) => match tap.write(frame) {
                    Ok(n) if n as u64 == len => Solo5Result::Ok,
                    _ => Solo5Result::Eunspec,
                },
            }
        };
        let out = mem
            .slice_mut(gpa, size)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        set_i32(out, offset_of!(HcNetWrite, ret), ret as i32);
        Ok(())
    }

    fn read(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        const CALL: &str = "net read";
        let size = size_of::<HcNetRead>() as u64;
        let arg = mem
            .read_array::<{ size_of::<HcNetRead>() }>(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        let handle = arg_u64(&arg, offset_of!(HcNetRead, handle));
        let data = arg_u64(&arg, offset_of!(HcNetRead, data));
        let len = arg_u64(&arg, offset_of!(HcNetRead, len));
        // Check the buffer before reading anything into it.
        mem.checked(data, len)
            .map_err(|source| HypercallError::memory(CALL, "buffer", source))?;
        let mut got = 0u64;
        let ret = match self.device(handle) {
            None => Solo5Result::Einval,
            Some(tap) => {
                let buf = mem
                    .slice_mut(data, len)
                    .map_err(|source| HypercallError::memory(CALL, "buffer", source))?;
                match tap.read(buf) {
                    Ok(n) => {
                        got = n as u64;
                        Solo5Result::Ok
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Solo5Result::Again,
                    Err(_) => Solo5Result::Eunspec,
                }
            }
        };
        let out = mem
            .slice_mut(gpa, size)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        if ret == Solo5Result::Ok {
            set_u64(out, offset_of!(HcNetRead, len), got);
        }
        set_i32(out, offset_of!(HcNetRead, ret), ret as i32);
        Ok(())
    }
}

impl ModuleFlags for Net {
    fn name(&self) -> &'static str {
        "net"
    }

    fn device_type(&self) -> MftType {
        MftType::NetBasic
    }

    fn usage(&self) -> &'static str {
        "  --net:NAME=IFACE | --net:NAME=@FD\n      attach tap interface IFACE (or inherited descriptor FD) as network device NAME\n  --net-mac:NAME=MAC\n      the guest MAC address of NAME (default: random, locally administered)\n"
    }

    fn parse_flag(&mut self, flag: &str) -> Result<bool, ModuleError> {
        if let Some((name, mac)) =
            split_flag(flag, "--net-mac:", "--net-mac:NAME=xx:xx:xx:xx:xx:xx")?
        {
            let mac = parse_mac(mac).ok_or_else(|| ModuleError::FlagSyntax {
                flag: flag.to_string(),
                expected: "--net-mac:NAME=xx:xx:xx:xx:xx:xx",
            })?;
            if self.macs.iter().any(|(n, _, _)| n == name) {
                return Err(ModuleError::DuplicateFlag {
                    flag: flag.to_string(),
                    name: name.to_string(),
                });
            }
            self.macs.push((name.to_string(), mac, flag.to_string()));
            return Ok(true);
        }
        if let Some((name, target)) =
            split_flag(flag, "--net:", "--net:NAME=IFACE or --net:NAME=@FD")?
        {
            if self.interfaces.iter().any(|i| i.name == name) {
                return Err(ModuleError::DuplicateFlag {
                    flag: flag.to_string(),
                    name: name.to_string(),
                });
            }
            self.interfaces.push(Interface {
                name: name.to_string(),
                target: target.to_string(),
                flag: flag.to_string(),
                mac: None,
                attached: None,
            });
            return Ok(true);
        }
        Ok(false)
    }

    fn named_devices(&self) -> Vec<(String, String)> {
        let nets = self
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), i.flag.clone()));
        let macs = self.macs.iter().map(|(n, _, f)| (n.clone(), f.clone()));
        nets.chain(macs).collect()
    }
}

impl Module for Net {
    fn attach(&mut self, handle: u64, name: &str) -> Result<MftDeviceInfo, ModuleError> {
        let mac = self
            .macs
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, m, _)| *m);
        let iface = self
            .interfaces
            .iter_mut()
            .find(|i| i.name == name)
            .ok_or_else(|| ModuleError::NotAttached {
                name: name.to_string(),
                kind: MftType::NetBasic.name(),
                hint: format!("add --net:{name}=TAP (a tap interface) or --net:{name}=@FD"),
            })?;
        let fd = if let Some(fd) = iface.target.strip_prefix('@') {
            let fd: i32 = fd.parse().map_err(|_| ModuleError::FlagSyntax {
                flag: iface.flag.clone(),
                expected: "--net:NAME=@FD with FD a descriptor number",
            })?;
            crate::sys::adopt_fd(fd).map_err(|source| ModuleError::Open {
                name: name.to_string(),
                what: format!("inherited descriptor {fd}"),
                source,
            })?
        } else {
            crate::sys::open_tap(&iface.target).map_err(|source| ModuleError::Open {
                name: name.to_string(),
                what: format!(
                    "tap interface '{}' (hint: create it with `ip tuntap add {} mode tap`)",
                    iface.target, iface.target
                ),
                source,
            })?
        };
        let mac = mac.unwrap_or_else(random_mac);
        iface.mac = Some(mac);
        iface.attached = Some((handle, File::from(fd)));
        Ok(MftDeviceInfo::net(mac, MTU))
    }

    fn serves(&self, hc: Hypercall) -> bool {
        matches!(hc, Hypercall::NetRead | Hypercall::NetWrite)
    }

    fn hypercall(
        &mut self,
        hc: Hypercall,
        gpa: u64,
        mem: &mut GuestMemory,
    ) -> Result<(), HypercallError> {
        match hc {
            Hypercall::NetWrite => self.write(gpa, mem),
            Hypercall::NetRead => self.read(gpa, mem),
            other => Err(HypercallError::Unserved { call: other.name() }),
        }
    }

    fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, u64)> {
        self.interfaces
            .iter()
            .filter_map(|i| i.attached.as_ref())
            .map(|(h, f)| (f.as_fd(), *h))
            .collect()
    }

    fn syscalls(&self) -> Vec<FdSyscall> {
        self.interfaces
            .iter()
            .filter_map(|i| i.attached.as_ref())
            .flat_map(|(_, f)| {
                let fd = f.as_raw_fd();
                [
                    FdSyscall {
                        nr: libc::SYS_read,
                        name: "read",
                        fd,
                    },
                    FdSyscall {
                        nr: libc::SYS_write,
                        name: "write",
                        fd,
                    },
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:00:00:aa:bb:0c"),
            Some([2, 0, 0, 0xaa, 0xbb, 0x0c])
        );
        assert_eq!(parse_mac("02:00:00:aa:bb"), None);
        assert_eq!(parse_mac("02:00:00:aa:bb:0c:01"), None);
        assert_eq!(parse_mac("02:00:00:aa:bb:zz"), None);
        let r = random_mac();
        assert_eq!(r[0] & 0x03, 0x02);
    }
}
