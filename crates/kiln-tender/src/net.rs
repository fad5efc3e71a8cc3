//! The net module's host side both tenders share: the `--net:NAME=IFACE`,
//! `--net:NAME=@FD` and `--net-mac:NAME=MAC` flags, and opening the tap (with
//! `kiln-tap`) or adopting the descriptor a flag gives.
//!
//! A tap keeps the offloads its reader negotiated after the reader is
//! gone, and Solo5's tenders, which open it plain and never clear them,
//! would then get frames larger than their buffers. So every tap opened
//! with offloads is remembered here, and cleared (`TUNSETOFFLOAD` 0) on
//! every end the tender controls: a module closing it calls [`release`]
//! (the tenders' net modules do when they drop, which a guest's exit, an
//! error or a panic's unwinding all reach), and the stop signals' handler
//! ([`crate::stop`]) calls [`clear_offloads`] before it ends the process.
//! A SIGKILLed tender clears nothing itself: each such tap's guard
//! (kiln-tap's [`kiln_tap::Guard`], a process forked when the tap was
//! opened) does once the tender is gone; the ends above stop the guards
//! after clearing, and wait until they have let go of the taps.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use kiln_abi::mft::MftType;

use crate::module::{ModuleError, ModuleFlags, split_flag};

pub use kiln_tap::TCP_OFFLOADS;

/// The MTU reported for a descriptor that is not a tap interface (a
/// socket), and the default of a tap.
pub const MTU: u16 = 1500;

/// Help lines for the net flags.
pub const USAGE: &str = "  --net:NAME=IFACE | --net:NAME=@FD\n      attach tap interface IFACE (or inherited descriptor FD) as network device NAME\n  --net-mac:NAME=MAC\n      the guest MAC address of NAME (default: random, locally administered)\n";

const MAC: &str = "--net-mac:NAME=xx:xx:xx:xx:xx:xx";

/// Parses `xx:xx:xx:xx:xx:xx` (two hexadecimal digits each: kiln's one
/// MAC parser, `kiln_devices::MacAddress::parse`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    kiln_devices::MacAddress::parse(s).map(|m| m.0)
}

/// A random locally administered unicast MAC address, from /dev/urandom.
/// There is no weaker fallback: a tender that cannot read it says so, and
/// the user can name a MAC with `--net-mac:NAME=MAC`.
pub fn random_mac() -> std::io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut mac))?;
    // Locally administered, unicast.
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Ok(mac)
}

/// The descriptors of the taps opened with offloads, -1 in a free slot,
/// and beside each its guard's (kiln-tap's [`kiln_tap::Guard`]: the
/// process that clears the offloads if the tender is killed): atomics, so
/// that a signal handler reads them. One per manifest entry at most.
static OFFLOADED: [AtomicI32; kiln_abi::mft::MFT_MAX_ENTRIES] =
    [const { AtomicI32::new(-1) }; kiln_abi::mft::MFT_MAX_ENTRIES];
static GUARD_ALIVE: [AtomicI32; kiln_abi::mft::MFT_MAX_ENTRIES] =
    [const { AtomicI32::new(-1) }; kiln_abi::mft::MFT_MAX_ENTRIES];
static GUARD_DONE: [AtomicI32; kiln_abi::mft::MFT_MAX_ENTRIES] =
    [const { AtomicI32::new(-1) }; kiln_abi::mft::MFT_MAX_ENTRIES];
static GUARD_PID: [AtomicI32; kiln_abi::mft::MFT_MAX_ENTRIES] =
    [const { AtomicI32::new(0) }; kiln_abi::mft::MFT_MAX_ENTRIES];

fn remember(fd: RawFd, guard: Option<kiln_tap::Guard>) {
    let guard = guard.map(kiln_tap::Guard::into_raw);
    for (i, slot) in OFFLOADED.iter().enumerate() {
        if slot
            .compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            if let Some(g) = guard {
                GUARD_PID[i].store(g.pid, Ordering::SeqCst);
                GUARD_DONE[i].store(g.done, Ordering::SeqCst);
                GUARD_ALIVE[i].store(g.alive, Ordering::SeqCst);
            }
            return;
        }
    }
    // No slot (more taps than a manifest has entries): the guard stays
    // until the tender ends.
}

/// The taps with offloads on, for a seccomp filter that must let the
/// tender clear them.
pub fn offloaded() -> Vec<RawFd> {
    taken(&OFFLOADED)
}

/// The descriptors the tender reads to end of file as it stops the taps'
/// guards ([`release`], [`clear_offloads`]), for a seccomp filter that must
/// allow that `read`.
pub fn guard_fds() -> Vec<RawFd> {
    taken(&GUARD_DONE)
}

/// The descriptors `slots` hold (a free slot holds -1).
fn taken(slots: &[AtomicI32]) -> Vec<RawFd> {
    slots
        .iter()
        .map(|slot| slot.load(Ordering::SeqCst))
        .filter(|&fd| fd >= 0)
        .collect()
}

/// Stops the guard in slot `i`, if any: it clears the tap's offloads,
/// closes its descriptor of it and exits (`kiln_tap::stop_raw`: `close`
/// and `read`, async-signal-safe). Its pid, to reap, or 0.
fn stop_guard(i: usize) -> libc::pid_t {
    let alive = GUARD_ALIVE[i].swap(-1, Ordering::SeqCst);
    let done = GUARD_DONE[i].swap(-1, Ordering::SeqCst);
    kiln_tap::stop_raw(alive, done);
    if done >= 0 {
        GUARD_PID[i].swap(0, Ordering::SeqCst)
    } else {
        0
    }
}

/// Before the tap `fd` is closed: clears its offloads if it was opened
/// with them, stops its guard (which returns once the guard has let go of
/// the tap), and forgets it; nothing on a plain tap or an inherited
/// descriptor (no system call). The guard's pid, for [`reap_guard`]
/// where the tender may still wait (until then it is a zombie), or
/// `None`.
pub fn release(fd: BorrowedFd<'_>) -> Option<libc::pid_t> {
    let fd = fd.as_raw_fd();
    for (i, slot) in OFFLOADED.iter().enumerate() {
        if slot
            .compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            // Best effort: the tender is ending, or the tap is reopened
            // plain, which clears them again.
            let _ = kiln_tap::clear_offloads_raw(fd);
            let pid = stop_guard(i);
            return (pid > 0).then_some(pid);
        }
    }
    None
}

/// Reaps a guard [`release`] stopped (`waitpid`), where the tender may
/// still wait (not under kiln-hvt's filter).
pub fn reap_guard(pid: libc::pid_t) {
    kiln_tap::reap(pid);
}

/// Clears the offloads of every tap still open with them and stops their
/// guards; for the stop signals' handler: atomic loads and swaps, one
/// `ioctl` per tap, `close` and `read` per guard, async-signal-safe.
pub fn clear_offloads() {
    for (i, slot) in OFFLOADED.iter().enumerate() {
        let fd = slot.load(Ordering::SeqCst);
        if fd >= 0 {
            let _ = kiln_tap::clear_offloads_raw(fd);
            stop_guard(i);
        }
    }
}

#[derive(Debug)]
struct Interface {
    name: String,
    target: String,
    flag: String,
}

/// How a tender accepts an inherited descriptor (`--net:NAME=@FD`).
#[derive(Debug, Clone, Copy)]
pub struct Inherited<'t> {
    /// The lowest descriptor number accepted.
    pub min_fd: RawFd,
    /// The flag's expected form, for a number that does not parse.
    pub expected: &'static str,
    /// Descriptors already attached to other devices, refused.
    pub taken: &'t [RawFd],
}

/// A device's host side, opened.
#[derive(Debug)]
pub struct Opened {
    /// The position of its `--net:` flag among the others: tenders list
    /// attached devices in this order.
    pub order: usize,
    /// The tap or inherited descriptor, non-blocking. One with
    /// [`Opened::vnet_header`] is to be [`release`]d before it is closed.
    pub fd: OwnedFd,
    /// The guest's MAC address (random if no flag gives one).
    pub mac: [u8; 6],
    /// The MTU the guest is told: the tap interface's (as Solo5's tenders
    /// report it), [`MTU`] for a descriptor that is not a tap.
    pub mtu: u16,
    /// Whether frames on `fd` carry a virtio-net header (a tap opened with
    /// offloads the kernel took; never an inherited descriptor).
    pub vnet_header: bool,
}

/// The net flags given on the command line.
#[derive(Debug, Default)]
pub struct NetFlags {
    interfaces: Vec<Interface>,
    macs: Vec<(String, [u8; 6], String)>,
}

impl ModuleFlags for NetFlags {
    fn name(&self) -> &'static str {
        "net"
    }

    fn device_type(&self) -> MftType {
        MftType::NetBasic
    }

    fn usage(&self) -> &'static str {
        USAGE
    }

    /// Offers a command-line flag; `Ok(true)` if it is a net flag.
    fn parse_flag(&mut self, flag: &str) -> Result<bool, ModuleError> {
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
            });
            return Ok(true);
        }
        Ok(false)
    }

    /// Each device name the flags mention, with the flag that mentions it.
    fn named_devices(&self) -> Vec<(String, String)> {
        let nets = self
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), i.flag.clone()));
        let macs = self.macs.iter().map(|(n, _, f)| (n.clone(), f.clone()));
        nets.chain(macs).collect()
    }
}

impl NetFlags {
    /// Makes the virtio-net header all or nothing across `attached` (the
    /// position of each device's flag, its handle, its descriptor): when
    /// only some devices took the offloads (`vnet`: their handles and
    /// names; a tap may refuse them, an inherited descriptor never has
    /// them), those taps are reopened plain and `vnet` emptied. `wrap`
    /// makes a reopened descriptor the tender's kind; `tender` names the
    /// tender in a warning for a tap that cannot be reopened. Whether
    /// every device now has the header.
    pub fn header_for_all<T: AsFd>(
        &self,
        tender: &str,
        inherited: Inherited<'_>,
        attached: &mut Vec<(usize, u64, T)>,
        vnet: &mut Vec<(u64, String)>,
        wrap: impl Fn(OwnedFd) -> T,
    ) -> bool {
        if !vnet.is_empty() && vnet.len() < attached.len() {
            for (handle, name) in std::mem::take(vnet) {
                let Some(i) = attached.iter().position(|(_, h, _)| *h == handle) else {
                    continue;
                };
                // Close the tap first: it takes one reader at a time.
                let (order, _, tap) = attached.remove(i);
                let guard = release(tap.as_fd());
                drop(tap);
                if let Some(pid) = guard {
                    kiln_tap::reap(pid);
                }
                match self.open(&name, inherited, 0) {
                    Ok(opened) => attached.push((order, handle, wrap(opened.fd))),
                    Err(e) => eprintln!(
                        "{tender}: warning: net device {name} is detached: reopening it without offloads failed: {e}"
                    ),
                }
            }
            attached.sort_by_key(|(order, _, _)| *order);
        }
        !attached.is_empty() && vnet.len() == attached.len()
    }

    /// Opens the host side the flags give for device `name`: a tap with
    /// the `TUN_F_*` `offloads` negotiated (0 for none: Solo5's plain
    /// frames; kiln-tap falls back to plain frames when the kernel refuses
    /// them, [`Opened::vnet_header`] says which). An inherited descriptor
    /// is taken as it is, without offloads.
    pub fn open(
        &self,
        name: &str,
        inherited: Inherited<'_>,
        offloads: u32,
    ) -> Result<Opened, ModuleError> {
        let mac = self
            .macs
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, m, _)| *m);
        let (order, iface) = self
            .interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == name)
            .ok_or_else(|| ModuleError::NotAttached {
                name: name.to_string(),
                kind: MftType::NetBasic.name(),
                hint: format!("add --net:{name}=TAP (a tap interface) or --net:{name}=@FD"),
            })?;
        let mut vnet_header = false;
        let fd = if let Some(fd) = iface.target.strip_prefix('@') {
            let fd: i32 = fd.parse().map_err(|_| ModuleError::FlagSyntax {
                flag: iface.flag.clone(),
                expected: inherited.expected,
            })?;
            if inherited.taken.contains(&fd) {
                return Err(ModuleError::Invalid {
                    name: name.to_string(),
                    problem: format!(
                        "descriptor {fd} is already attached to another device; hint: give each device its own descriptor"
                    ),
                });
            }
            crate::sys::adopt_fd(fd, inherited.min_fd).map_err(|source| ModuleError::Open {
                name: name.to_string(),
                what: format!("inherited descriptor {fd}"),
                source,
            })?
        } else {
            // Solo5's tenders attach only to an existing tap, and their
            // guests read plain frames: no offloads unless the guest
            // declared it reads the header (any a previous reader left are
            // cleared).
            let options = kiln_tap::TapOptions {
                create: false,
                offloads,
            };
            kiln_tap::open(&iface.target, options)
                .map(|tap| {
                    vnet_header = tap.vnet_header;
                    if vnet_header {
                        remember(tap.fd.as_raw_fd(), tap.guard);
                    }
                    tap.fd
                })
                .map_err(|source| ModuleError::Open {
                    name: name.to_string(),
                    what: format!(
                        "tap interface '{}' (hint: create it with `ip tuntap add {} mode tap`)",
                        iface.target, iface.target
                    ),
                    source,
                })?
        };
        let mtu = kiln_tap::mtu(fd.as_fd()).map_or(MTU, |m| u16::try_from(m).unwrap_or(u16::MAX));
        let mac = match mac {
            Some(mac) => mac,
            None => random_mac().map_err(|source| {
                if let Some(pid) = release(fd.as_fd()) {
                    kiln_tap::reap(pid);
                }
                ModuleError::Open {
                    name: name.to_string(),
                    what:
                        "/dev/urandom for a random MAC address (hint: give one with --net-mac:NAME=MAC)"
                            .to_string(),
                    source,
                }
            })?,
        };
        Ok(Opened {
            order,
            fd,
            mac,
            mtu,
            vnet_header,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HVT: Inherited<'static> = Inherited {
        min_fd: 0,
        expected: "--net:NAME=@FD with FD a descriptor number",
        taken: &[],
    };

    #[test]
    fn flags_name_their_devices_once() {
        let mut flags = NetFlags::default();
        assert!(flags.parse_flag("--net:a=tap0").unwrap());
        assert!(flags.parse_flag("--net-mac:a=02:00:00:00:00:01").unwrap());
        assert!(!flags.parse_flag("--block:a=x").unwrap());
        assert!(matches!(
            flags.parse_flag("--net:a=tap1"),
            Err(ModuleError::DuplicateFlag { .. })
        ));
        assert!(matches!(
            flags.parse_flag("--net-mac:b=02:00"),
            Err(ModuleError::FlagSyntax { expected: MAC, .. })
        ));
        assert_eq!(
            flags.named_devices(),
            [
                ("a".to_string(), "--net:a=tap0".to_string()),
                ("a".to_string(), "--net-mac:a=02:00:00:00:00:01".to_string())
            ]
        );
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:00:00:aa:bb:0c"),
            Some([2, 0, 0, 0xaa, 0xbb, 0x0c])
        );
        assert_eq!(parse_mac("02:00:00:aa:bb"), None);
        assert_eq!(parse_mac("02:00:00:aa:bb:0c:01"), None);
        assert_eq!(parse_mac("02:00:00:aa:bb:zz"), None);
        // Regression: u8::from_str_radix takes a sign, so "+1" was a byte.
        assert_eq!(parse_mac("02:00:00:aa:bb:+1"), None);
        // Locally administered, unicast.
        assert_eq!(random_mac().unwrap()[0] & 0x03, 0x02);
    }

    #[test]
    fn opening_keeps_flag_order_and_the_given_mac() {
        let (_x, y) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(y);
        let mut flags = NetFlags::default();
        flags.parse_flag("--net:first=@bad").unwrap();
        flags.parse_flag(&format!("--net:second=@{fd}")).unwrap();
        flags
            .parse_flag("--net-mac:second=02:00:00:aa:bb:0c")
            .unwrap();
        let opened = flags.open("second", HVT, 0).unwrap();
        assert_eq!((opened.order, opened.mac), (1, [2, 0, 0, 0xaa, 0xbb, 0x0c]));
        let err = flags.open("first", HVT, 0).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("expected --net:NAME=@FD with FD a descriptor number"),
            "{err}"
        );
        let taken = [fd + 1];
        flags
            .parse_flag(&format!("--net:third=@{}", fd + 1))
            .unwrap();
        let err = flags
            .open(
                "third",
                Inherited {
                    taken: &taken,
                    ..HVT
                },
                0,
            )
            .unwrap_err();
        assert!(err.to_string().contains("already attached"), "{err}");
        let err = flags.open("fourth", HVT, 0).unwrap_err();
        assert!(err.to_string().contains("--net:fourth="), "{err}");
    }
}
