//! The net module: attaches a tap interface (`--net:NAME=IFACE`) or an
//! inherited descriptor (`--net:NAME=@FD`) to each `NET_BASIC` manifest
//! entry. The guest reads and writes frames on the descriptor itself; the
//! filter allows `read` and `write` on it and nothing else.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use kiln_abi::mft::{MftDeviceInfo, MftType};

use crate::module::{Attached, Module, ModuleError, ModuleFlags, split_flag};
use crate::seccomp::Rule;

/// The MTU every interface reports.
pub const MTU: u16 = 1500;

#[derive(Debug)]
struct Interface {
    name: String,
    target: String,
    flag: String,
    attached: Option<(u64, OwnedFd)>,
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
        const MAC: &str = "--net-mac:NAME=xx:xx:xx:xx:xx:xx";
        if let Some((name, mac)) = split_flag(flag, "--net-mac:", MAC)? {
            let mac = parse_mac(mac).ok_or_else(|| ModuleError::FlagSyntax {
                flag: flag.to_string(),
                expected: MAC,
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
    fn attach(&mut self, handle: u64, name: &str) -> Result<Attached, ModuleError> {
        let mac = self
            .macs
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, m, _)| *m);
        let taken: Vec<RawFd> = self.poll_fds().into_iter().map(|(fd, _)| fd).collect();
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
                expected: "--net:NAME=@FD with FD a descriptor number above 2",
            })?;
            if taken.contains(&fd) {
                return Err(ModuleError::Invalid {
                    name: name.to_string(),
                    problem: format!(
                        "descriptor {fd} is already attached to another device; hint: give each device its own descriptor"
                    ),
                });
            }
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
        let raw = fd.as_raw_fd();
        iface.attached = Some((handle, fd));
        Ok(Attached {
            handle,
            info: MftDeviceInfo::net(mac.unwrap_or_else(random_mac), MTU),
            fd: raw,
        })
    }

    fn poll_fds(&self) -> Vec<(RawFd, u64)> {
        self.interfaces
            .iter()
            .filter_map(|i| i.attached.as_ref())
            .map(|(h, f)| (f.as_raw_fd(), *h))
            .collect()
    }

    fn rules(&self) -> Vec<Rule> {
        self.poll_fds()
            .into_iter()
            .flat_map(|(fd, _)| {
                [
                    Rule::on_fd(libc::SYS_read, "read", fd),
                    Rule::on_fd(libc::SYS_write, "write", fd),
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
        assert_eq!(random_mac()[0] & 0x03, 0x02);
    }

    #[test]
    fn one_descriptor_cannot_back_two_devices() {
        let (_a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(b);
        let mut net = Net::default();
        assert!(net.parse_flag(&format!("--net:one=@{fd}")).unwrap());
        assert!(net.parse_flag(&format!("--net:two=@{fd}")).unwrap());
        assert_eq!(net.attach(1, "one").unwrap().fd, fd);
        let err = net.attach(2, "two").unwrap_err();
        assert!(err.to_string().contains("already attached"), "{err}");
    }

    #[test]
    fn a_missing_interface_is_not_attached() {
        let mut net = Net::default();
        let err = net.attach(1, "service").unwrap_err();
        assert!(err.to_string().contains("--net:service="), "{err}");
    }
}
