//! The net module: attaches a tap interface (`--net:NAME=IFACE`) or an
//! inherited descriptor (`--net:NAME=@FD`) to each `NET_BASIC` manifest
//! entry, and serves the net read and write hypercalls.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use kiln_abi::hvt::{HcNetRead, HcNetWrite, Hypercall};
use kiln_abi::mft::MftDeviceInfo;
use kiln_abi::status::Solo5Result;
use kiln_tender::net::{Inherited, NetFlags};
use std::mem::{offset_of, size_of};

use crate::guest::{GuestMemory, arg_u64, set_i32, set_u64};
use crate::hypercall::HypercallError;
use crate::module::{FdSyscall, Module, ModuleError, WithFlags};

pub use kiln_tender::net::MTU;

/// Largest frame accepted from the guest: MTU plus an Ethernet header with
/// a VLAN tag.
const MAX_FRAME: u64 = MTU as u64 + 18;

/// The net module.
#[derive(Debug, Default)]
pub struct Net {
    flags: NetFlags,
    /// Attached devices in the order of their flags: (order, handle, tap).
    attached: Vec<(usize, u64, File)>,
}

impl Net {
    fn device(&mut self, handle: u64) -> Option<&mut File> {
        self.attached
            .iter_mut()
            .find(|(_, h, _)| *h == handle)
            .map(|(_, _, f)| f)
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

impl WithFlags for Net {
    type Flags = NetFlags;

    fn flags(&self) -> &NetFlags {
        &self.flags
    }

    fn flags_mut(&mut self) -> &mut NetFlags {
        &mut self.flags
    }
}

impl Module for Net {
    fn attach(&mut self, handle: u64, name: &str) -> Result<MftDeviceInfo, ModuleError> {
        // One descriptor given to two devices would be owned, and closed,
        // twice.
        let taken: Vec<RawFd> = self
            .attached
            .iter()
            .map(|(_, _, f)| f.as_raw_fd())
            .collect();
        let opened = self.flags.open(
            name,
            Inherited {
                min_fd: 0,
                expected: "--net:NAME=@FD with FD a descriptor number",
                taken: &taken,
            },
        )?;
        self.attached
            .push((opened.order, handle, File::from(opened.fd)));
        self.attached.sort_by_key(|(order, _, _)| *order);
        Ok(MftDeviceInfo::net(opened.mac, MTU))
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
        self.attached
            .iter()
            .map(|(_, h, f)| (f.as_fd(), *h))
            .collect()
    }

    fn syscalls(&self) -> Vec<FdSyscall> {
        self.attached
            .iter()
            .flat_map(|(_, _, f)| {
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
    use kiln_tender::net::{parse_mac, random_mac};

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
