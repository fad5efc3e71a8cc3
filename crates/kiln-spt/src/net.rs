//! The net module: attaches a tap interface (`--net:NAME=IFACE`) or an
//! inherited descriptor (`--net:NAME=@FD`) to each `NET_BASIC` manifest
//! entry. The guest reads and writes frames on the descriptor itself; the
//! filter allows `read` and `write` on it and nothing else.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use kiln_abi::hvt_ext::KILN_FEATURE_VNET_HDR;
use kiln_abi::mft::MftDeviceInfo;
use kiln_abi::note::KILN_GUEST_VNET_HDR;
use kiln_tender::net::{Inherited, NetFlags, TCP_OFFLOADS};

use crate::module::{Attached, Module, ModuleError};
use crate::seccomp::Rule;

pub use kiln_tender::net::MTU;

/// The net module.
#[derive(Debug, Default)]
pub struct Net {
    flags: NetFlags,
    /// Attached devices in the order of their flags: (order, handle, fd).
    attached: Vec<(usize, u64, OwnedFd)>,
    /// Whether the guest declared it reads virtio-net headers: taps are
    /// opened with offloads.
    offloads: bool,
    /// The devices whose tap took the offloads: (handle, name).
    vnet_names: Vec<(u64, String)>,
}

/// How kiln-spt takes `--net:NAME=@FD`, with `taken` the descriptors other
/// devices hold.
fn inherited(taken: &[RawFd]) -> Inherited<'_> {
    Inherited {
        min_fd: 3,
        expected: "--net:NAME=@FD with FD a descriptor number above 2",
        taken,
    }
}

kiln_tender::with_flags!(Net, NetFlags);

/// The taps opened with offloads get them cleared as the tender ends (in
/// the parent, once the guest is gone): Solo5's tenders, which open taps
/// plain, may come next.
impl Drop for Net {
    fn drop(&mut self) {
        for (_, _, tap) in &self.attached {
            if let Some(guard) = kiln_tender::net::release(tap.as_fd()) {
                kiln_tender::net::reap_guard(guard);
            }
        }
    }
}

impl Module for Net {
    fn attach(&mut self, handle: u64, name: &str) -> Result<Attached, ModuleError> {
        let taken: Vec<RawFd> = self
            .poll_fds()
            .into_iter()
            .map(|(fd, _)| fd.as_raw_fd())
            .collect();
        let offloads = if self.offloads { TCP_OFFLOADS } else { 0 };
        let opened = self.flags.open(name, inherited(&taken), offloads)?;
        if opened.vnet_header {
            self.vnet_names.push((handle, name.to_string()));
        }
        let raw = opened.fd.as_raw_fd();
        self.attached.push((opened.order, handle, opened.fd));
        self.attached.sort_by_key(|(order, _, _)| *order);
        Ok(Attached {
            handle,
            info: MftDeviceInfo::net(opened.mac, opened.mtu),
            fd: raw,
        })
    }

    fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, u64)> {
        self.attached
            .iter()
            .map(|(_, h, f)| (f.as_fd(), *h))
            .collect()
    }

    fn rules(&self) -> Vec<Rule> {
        self.poll_fds()
            .into_iter()
            .flat_map(|(fd, _)| {
                let fd = fd.as_raw_fd();
                [
                    Rule::on_fd(libc::SYS_read, "read", fd),
                    Rule::on_fd(libc::SYS_write, "write", fd),
                ]
            })
            .collect()
    }

    fn guest_features(&mut self, features: u32) {
        self.offloads = features & KILN_GUEST_VNET_HDR != 0;
    }

    fn settle_features(&mut self) -> u32 {
        let all = self.flags.header_for_all(
            "kiln-spt",
            inherited(&[]),
            &mut self.attached,
            &mut self.vnet_names,
            |fd| fd,
        );
        if all { KILN_FEATURE_VNET_HDR } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ModuleFlags;

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
