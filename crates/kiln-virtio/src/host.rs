//! The host side of the virtio target (feature `host`, with std), for
//! `kiln run -t virtio`: the check of an image before a VMM is started, the
//! attachment of the manifest's devices to host resources, and the command
//! lines or configuration of each VMM.
//!
//! Devices are attached in manifest order per type: `kiln run` adds the
//! VM's virtio-net devices in the order the manifest lists the net devices,
//! and kiln-virtio matches them in that order (see [`crate::env`]).
//!
//! Spec: the System V gABI (ELF header, program headers, notes), Xen's
//! `elfnote.h` (`XEN_ELFNOTE_PHYS32_ENTRY` = 18) and Solo5's `mft_abi.h`.

extern crate std;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use std::path::{Path, PathBuf};

use kiln_abi::mft::{Manifest, MftError, MftType};
use kiln_abi::note::{MFT_NOTE_TYPE, NOTE_ALIGN, is_solo5_note};
use object::LittleEndian as LE;
use object::elf::{self, FileHeader64};
use object::read::elf::{FileHeader, NoteIterator, ProgramHeader};

/// `XEN_ELFNOTE_PHYS32_ENTRY`.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// QEMU's exit code for a guest that wrote `status` to isa-debug-exit is
/// `(status << 1) | 1`.
pub const DEBUG_EXIT: &str = "isa-debug-exit,iobase=0xf4,iosize=4";

/// Why an image cannot be booted.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not a 64-bit little-endian ELF file (or truncated before its
    /// headers end).
    #[error(
        "not a 64-bit ELF image ({0}); hint: pass a dist/NAME.virtio built by kiln build -t virtio"
    )]
    NotElf(String),
    /// An ELF file for another machine or of another type.
    #[error(
        "an ELF {what}, not an x86_64 executable; hint: pass a dist/NAME.virtio built by kiln build -t virtio"
    )]
    Foreign {
        /// What it is.
        what: String,
    },
    /// A segment lies beyond the end of the file.
    #[error(
        "truncated: a segment ends past the file's {len} bytes; hint: rebuild the image with kiln build -t virtio"
    )]
    Truncated {
        /// The file's length.
        len: usize,
    },
    /// No PVH entry note.
    #[error(
        "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): the image cannot boot through PVH; hint: build it for the virtio target (kiln build -t virtio)"
    )]
    NoPvhNote,
    /// A note is malformed.
    #[error("malformed ELF note: {0}")]
    Note(#[from] object::read::Error),
    /// The manifest note is malformed.
    #[error("malformed device manifest: {0}")]
    Manifest(#[from] MftError),
}

/// A net or block device of the image's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestDevice {
    /// Its name.
    pub name: String,
    /// `net` or `block`.
    pub kind: &'static str,
}

/// What kiln needs to know of a checked image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The PVH entry's physical address.
    pub pvh_entry: u64,
    /// The manifest's devices, in order.
    pub devices: Vec<ManifestDevice>,
    /// Whether the image reads the `kiln.ged=` word, so can be given
    /// [`Vm::qemu_args_with_power_button`]'s command line (its kiln note).
    pub power_button: bool,
}

/// Checks that `data` is an image the virtio target can boot: a complete
/// x86_64 ELF executable with the PVH note; returns its manifest's devices.
pub fn check_image(data: &[u8]) -> Result<ImageInfo, ImageError> {
    let header = FileHeader64::<LE>::parse(data).map_err(|e| ImageError::NotElf(e.to_string()))?;
    let endian = header
        .endian()
        .map_err(|e| ImageError::NotElf(e.to_string()))?;
    let machine = header.e_machine(endian);
    let kind = header.e_type(endian);
    if machine != elf::EM_X86_64 || kind != elf::ET_EXEC {
        let what = match (machine, kind) {
            (elf::EM_X86_64, elf::ET_DYN) => "shared object or PIE".to_string(),
            (elf::EM_X86_64, elf::ET_REL) => "object file".to_string(),
            (elf::EM_AARCH64, _) => "image for aarch64".to_string(),
            (m, _) => format!("image for machine {m}"),
        };
        return Err(ImageError::Foreign { what });
    }
    let segments = header
        .program_headers(endian, data)
        .map_err(|_| ImageError::Truncated { len: data.len() })?;
    let mut pvh_entry = None;
    let mut devices = Vec::new();
    let mut power_button = false;
    for ph in segments {
        let bytes = ph
            .data(endian, data)
            .map_err(|_| ImageError::Truncated { len: data.len() })?;
        if ph.p_type(endian) != elf::PT_NOTE {
            continue;
        }
        // Xen's and Solo5's notes are 4-byte aligned.
        for note in NoteIterator::<FileHeader64<LE>>::new(endian, NOTE_ALIGN as u64, bytes)? {
            let note = note?;
            let (name, kind, desc) = (note.name_bytes(), note.n_type(endian).0, note.desc());
            if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY {
                let mut entry = [0u8; 8];
                let n = desc.len().min(8);
                entry[..n].copy_from_slice(&desc[..n]);
                pvh_entry = Some(u64::from_le_bytes(entry));
            } else if name == b"kiln\0" && kind == crate::power::FEATURES_NOTE {
                let mut mask = [0u8; 4];
                let n = desc.len().min(4);
                mask[..n].copy_from_slice(&desc[..n]);
                power_button = u32::from_le_bytes(mask) & crate::power::FEATURE_GED != 0;
            } else if is_solo5_note(name, kind, MFT_NOTE_TYPE) {
                let manifest = Manifest::from_note_desc(desc)?;
                devices = manifest
                    .devices()
                    .map(|e| ManifestDevice {
                        name: e.name.to_string(),
                        kind: if e.kind == MftType::BlockBasic {
                            "block"
                        } else {
                            "net"
                        },
                    })
                    .collect();
            }
        }
    }
    Ok(ImageInfo {
        pvh_entry: pvh_entry.ok_or(ImageError::NoPvhNote)?,
        devices,
        power_button,
    })
}

/// Why the devices could not be attached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// A flag names a device the image does not have.
    #[error("{flag}: the image has no {kind} device `{name}`; hint: the image's devices: {known}")]
    Unknown {
        /// The flag.
        flag: String,
        /// Its type.
        kind: &'static str,
        /// The name.
        name: String,
        /// The image's devices.
        known: String,
    },
    /// A device of the manifest has no flag.
    #[error("the {kind} device `{name}` is not attached; hint: pass --{kind}:{name}={what}")]
    Missing {
        /// Its type.
        kind: &'static str,
        /// Its name.
        name: String,
        /// What the flag takes.
        what: &'static str,
    },
    /// A flag's value is malformed.
    #[error("{flag}: {why}")]
    Bad {
        /// The flag.
        flag: String,
        /// What is wrong.
        why: String,
    },
    /// The tap interface does not exist.
    #[error(
        "{flag}: there is no network interface `{tap}` here; hint: create it first (ip tuntap add {tap} mode tap), in the network namespace kiln runs in"
    )]
    NoTap {
        /// The flag.
        flag: String,
        /// The interface.
        tap: String,
    },
    /// The interface exists but is not a tap.
    #[error(
        "{flag}: `{tap}` is not a tap interface; hint: create one with ip tuntap add NAME mode tap"
    )]
    NotTap {
        /// The flag.
        flag: String,
        /// The interface.
        tap: String,
    },
    /// The disk cannot be used.
    #[error("{flag}: cannot use {}: {why}; hint: make the disk image first (kiln image, or truncate -s SIZE FILE)", path.display())]
    Disk {
        /// The flag.
        flag: String,
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// A net device attached to a tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAttach {
    /// The device's name.
    pub name: String,
    /// The host tap interface.
    pub tap: String,
    /// The MAC address, `xx:xx:xx:xx:xx:xx`, or the VMM's choice.
    pub mac: Option<String>,
}

/// A block device attached to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockAttach {
    /// The device's name.
    pub name: String,
    /// The backing file.
    pub path: PathBuf,
    /// The sector size in bytes (512 unless given).
    pub sector_size: u32,
}

/// Whether `s` is `xx:xx:xx:xx:xx:xx` (kiln's one MAC parser,
/// `kiln_devices::MacAddress::parse`).
fn valid_mac(s: &str) -> bool {
    kiln_devices::MacAddress::parse(s).is_some()
}

/// Attaches the manifest's devices from `kiln run`'s device flags
/// (`--net:NAME=TAP`, `--net-mac:NAME=MAC`, `--block:NAME=PATH`,
/// `--block-sector-size:NAME=N`), in manifest order. Every device must be
/// attached unless `allow_missing` (for `--help`, which touches no
/// device), when the unattached ones are left out; files and interfaces
/// are not looked at (see [`check_host_resources`]).
pub fn attach(
    devices: &[ManifestDevice],
    flags: &[&str],
    allow_missing: bool,
) -> Result<(Vec<NetAttach>, Vec<BlockAttach>), AttachError> {
    let known = || {
        if devices.is_empty() {
            "none".to_string()
        } else {
            devices
                .iter()
                .map(|d| format!("{} `{}`", d.kind, d.name))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut nets: Vec<NetAttach> = Vec::new();
    let mut blocks: Vec<BlockAttach> = Vec::new();
    for d in devices {
        match d.kind {
            "net" => nets.push(NetAttach {
                name: d.name.clone(),
                tap: String::new(),
                mac: None,
            }),
            _ => blocks.push(BlockAttach {
                name: d.name.clone(),
                path: PathBuf::new(),
                sector_size: 512,
            }),
        }
    }
    for flag in flags {
        let bad = |why: &str| AttachError::Bad {
            flag: flag.to_string(),
            why: why.to_string(),
        };
        let body = flag
            .strip_prefix("--")
            .ok_or_else(|| bad("not a device flag"))?;
        let (key, rest) = body
            .split_once(':')
            .ok_or_else(|| bad("expected --KIND:NAME=VALUE"))?;
        let (name, value) = rest
            .split_once('=')
            .ok_or_else(|| bad("expected --KIND:NAME=VALUE"))?;
        if value.is_empty() {
            return Err(bad("the value is empty"));
        }
        let kind = if key.starts_with("net") {
            "net"
        } else {
            "block"
        };
        let unknown = || AttachError::Unknown {
            flag: flag.to_string(),
            kind,
            name: name.to_string(),
            known: known(),
        };
        match key {
            "net" | "net-mac" => {
                let net = nets
                    .iter_mut()
                    .find(|n| n.name == name)
                    .ok_or_else(unknown)?;
                if key == "net" {
                    if value.starts_with('@') {
                        return Err(bad(
                            "the virtio target attaches tap interfaces by name, not inherited descriptors",
                        ));
                    }
                    net.tap = value.to_string();
                } else if valid_mac(value) {
                    net.mac = Some(value.to_string());
                } else {
                    return Err(bad("expected a MAC address xx:xx:xx:xx:xx:xx"));
                }
            }
            "block" | "block-sector-size" => {
                let block = blocks
                    .iter_mut()
                    .find(|b| b.name == name)
                    .ok_or_else(unknown)?;
                if key == "block" {
                    block.path = PathBuf::from(value);
                } else {
                    block.sector_size = value
                        .parse()
                        .ok()
                        .filter(|n: &u32| n.is_power_of_two() && (512..=65536).contains(n))
                        .ok_or_else(|| bad("expected a power of two from 512 to 65536"))?;
                }
            }
            _ => return Err(bad("unknown device flag")),
        }
    }
    if allow_missing {
        nets.retain(|n| !n.tap.is_empty());
        blocks.retain(|b| !b.path.as_os_str().is_empty());
    }
    if let Some(n) = nets.iter().find(|n| n.tap.is_empty()) {
        return Err(AttachError::Missing {
            kind: "net",
            name: n.name.clone(),
            what: "TAP",
        });
    }
    if let Some(b) = blocks.iter().find(|b| b.path.as_os_str().is_empty()) {
        return Err(AttachError::Missing {
            kind: "block",
            name: b.name.clone(),
            what: "PATH",
        });
    }
    Ok((nets, blocks))
}

/// Checks that each tap exists (and is a tap: `tun_flags` in sysfs) in the
/// current network namespace and each disk is a readable, writable file.
/// QEMU would create a missing tap itself (when root), which is never what
/// was meant.
pub fn check_host_resources(nets: &[NetAttach], blocks: &[BlockAttach]) -> Result<(), AttachError> {
    for n in nets {
        let flag = format!("--net:{}={}", n.name, n.tap);
        let sys = Path::new("/sys/class/net").join(&n.tap);
        if n.tap.contains('/') || !sys.exists() {
            return Err(AttachError::NoTap {
                flag,
                tap: n.tap.clone(),
            });
        }
        if !sys.join("tun_flags").exists() {
            return Err(AttachError::NotTap {
                flag,
                tap: n.tap.clone(),
            });
        }
    }
    for b in blocks {
        let flag = format!("--block:{}={}", b.name, b.path.display());
        let disk = |why: String| AttachError::Disk {
            flag: flag.clone(),
            path: b.path.clone(),
            why,
        };
        let meta = std::fs::metadata(&b.path).map_err(|e| disk(e.to_string()))?;
        if !meta.is_file() {
            return Err(disk("not a regular file".to_string()));
        }
        if meta.len() % u64::from(b.sector_size) != 0 || meta.len() == 0 {
            return Err(disk(format!(
                "its size, {} bytes, is not a positive multiple of the sector size {}",
                meta.len(),
                b.sector_size
            )));
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&b.path)
            .map_err(|e| disk(e.to_string()))?;
    }
    Ok(())
}

/// The QEMU machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// `-M microvm`: virtio-mmio, no PCI, no firmware to speak of.
    Microvm,
    /// `-M q35`: virtio over PCI, booted through qboot ([`Q35_FIRMWARE`])
    /// and QEMU's PVH loader.
    Q35,
}

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM, with `-cpu host,-arch-capabilities`.
    Kvm,
    /// QEMU's own emulator (TCG), with `-cpu max`.
    Tcg,
}

/// The device the guest's console goes to under QEMU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Console {
    /// The first 16550 UART (`-serial stdio`).
    #[default]
    Serial,
    /// A virtio console (`virtconsole` on `virtio-serial-device` or
    /// `virtio-serial-pci`), the 16550 kept beside it on the same stdio
    /// (a multiplexed chardev) for what the guest writes before it has
    /// found the virtio console (a failed boot).
    Virtio,
}

/// The firmware `kiln run --machine q35` gives QEMU: qboot, the one
/// microvm boots with (so every QEMU that has microvm has it). QEMU's
/// default for q35, SeaBIOS, boots kiln too, but its start-up takes about
/// 8 s here (KVM nested, its real-mode code emulated), qboot's 0.3 s;
/// qboot assigns no PCI BARs, which kiln then does itself.
pub const Q35_FIRMWARE: &str = "bios-microvm.bin";

/// Everything a VMM needs to boot the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// The image.
    pub image: PathBuf,
    /// Guest memory in MiB.
    pub mem_mb: u64,
    /// The unikernel's arguments, quoted and space-separated on the kernel
    /// command line.
    pub args: Vec<String>,
    /// The net devices, in manifest order.
    pub nets: Vec<NetAttach>,
    /// The block devices, in manifest order.
    pub blocks: Vec<BlockAttach>,
}

/// Guest memory when `--mem` is not given, in MiB.
pub const DEFAULT_MEM_MB: u64 = 128;

impl Vm {
    /// The kernel command line: the arguments, each quoted where it holds
    /// a space, a quote or a backslash or is empty, space-separated (the
    /// guest splits it back as MirageOS does, [`kiln_rt::args::cmdline`]).
    pub fn cmdline(&self) -> String {
        kiln_rt::args::cmdline::join(&self.args)
    }

    /// QEMU's arguments (without the program), the console on the 16550.
    pub fn qemu_args(&self, machine: Machine, accel: Accel) -> Result<Vec<String>, AttachError> {
        self.qemu_args_with(machine, accel, Console::Serial)
    }

    /// QEMU's arguments (without the program), the console on `console`.
    pub fn qemu_args_with(
        &self,
        machine: Machine,
        accel: Accel,
        console: Console,
    ) -> Result<Vec<String>, AttachError> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: &[&str]| a.extend(s.iter().map(|s| s.to_string()));
        let m = match (machine, accel) {
            (Machine::Microvm, Accel::Kvm) => "microvm,accel=kvm",
            (Machine::Microvm, Accel::Tcg) => "microvm,accel=tcg",
            (Machine::Q35, Accel::Kvm) => "q35,accel=kvm",
            (Machine::Q35, Accel::Tcg) => "q35,accel=tcg",
        };
        let cpu = match accel {
            Accel::Kvm => "host,-arch-capabilities",
            Accel::Tcg => "max",
        };
        push(&["-M", m, "-cpu", cpu]);
        if machine == Machine::Q35 {
            push(&["-bios", Q35_FIRMWARE]);
        }
        let mem = self.mem_mb.to_string();
        push(&["-m", &mem]);
        // `-display none`, not `-nographic`: with the latter SeaBIOS (q35)
        // writes its banner to the serial console.
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        let transport = match machine {
            Machine::Microvm => "device",
            Machine::Q35 => "pci",
        };
        match console {
            Console::Serial => push(&["-serial", "stdio"]),
            Console::Virtio => {
                let serial = format!("virtio-serial-{transport}");
                push(&[
                    "-chardev",
                    "stdio,id=console,mux=on,signal=off",
                    "-serial",
                    "chardev:console",
                    "-device",
                    &serial,
                    "-device",
                    "virtconsole,chardev=console",
                ]);
            }
        }
        push(&["-device", DEBUG_EXIT]);
        for (i, n) in self.nets.iter().enumerate() {
            let netdev = format!("tap,id=net{i},ifname={},script=no,downscript=no", n.tap);
            let mut device = format!("virtio-net-{transport},netdev=net{i}");
            if machine == Machine::Q35 {
                // No iPXE option ROM: nothing boots from the network.
                device.push_str(",romfile=");
            }
            if let Some(mac) = &n.mac {
                device.push_str(&format!(",mac={mac}"));
            }
            push(&["-netdev", &netdev, "-device", &device]);
        }
        for (i, b) in self.blocks.iter().enumerate() {
            let path = b.path.display().to_string();
            if path.contains(',') {
                return Err(AttachError::Bad {
                    flag: format!("--block:{}={path}", b.name),
                    why: "QEMU cannot take a path with a comma".to_string(),
                });
            }
            let drive = format!("file={path},id=disk{i},if=none,format=raw,cache=none,aio=threads");
            let ss = b.sector_size;
            let device = format!(
                "virtio-blk-{transport},drive=disk{i},logical_block_size={ss},physical_block_size={ss}"
            );
            push(&["-drive", &drive, "-device", &device]);
        }
        let image = self.image.display().to_string();
        let cmdline = self.cmdline();
        push(&["-kernel", &image, "-append", &cmdline]);
        Ok(a)
    }

    /// QEMU's arguments for a microvm whose guest a supervisor can ask to
    /// stop (`kiln daemon`; `crate::power`): as [`Vm::qemu_args`] for
    /// `-M microvm`, with ACPI on (QEMU then adds the GED and its power
    /// button), one IOAPIC (with ACPI QEMU would add a second and move the
    /// virtio lines onto it, past the 24 inputs kiln routes), and the GED
    /// named on the kernel command line.
    ///
    /// With ACPI on, QEMU's microvm leaves the `virtio_mmio.device=` words
    /// out of the command line (the DSDT describes the transports), so
    /// they are added here as QEMU 7.2 places the devices: its 8 transports
    /// from 0xfeb00000, 512 bytes apart, transport `t` on IOAPIC input
    /// `16 + t` (with ACPI; 5 + t without), filled from the last one down
    /// in the order of the `-device` arguments (`hw/i386/microvm.c`;
    /// measured: `info qtree` for the order, a ping to www for the lines).
    /// An image built before kiln knew the `kiln.ged=` word would take it
    /// for an argument: give it only to an image whose
    /// [`ImageInfo::power_button`] says so.
    pub fn qemu_args_with_power_button(
        &self,
        accel: Accel,
        console: Console,
    ) -> Result<Vec<String>, AttachError> {
        const TRANSPORTS: u64 = 8;
        let mut a = self.qemu_args_with(Machine::Microvm, accel, console)?;
        let mut words: Vec<String> = Vec::new();
        for pair in a.windows(2) {
            if pair[0] == "-device" && pair[1].starts_with("virtio-") {
                let t = TRANSPORTS
                    .checked_sub(1 + words.len() as u64)
                    .ok_or_else(|| AttachError::Bad {
                        flag: pair[1].clone(),
                        why: "QEMU's microvm has 8 virtio transports".to_string(),
                    })?;
                words.push(format!(
                    "{}512@{:#x}:{}",
                    crate::cmdline::MMIO_PREFIX,
                    0xfeb0_0000 + t * 0x200,
                    16 + t
                ));
            }
        }
        words.push(crate::power::word(crate::power::Ged {
            base: crate::power::MICROVM_GED_BASE,
            irq: crate::power::MICROVM_GED_IRQ,
        }));
        for i in 1..a.len() {
            if a[i - 1] == "-M" {
                // The GED and the transports' lines on the first IOAPIC,
                // where the words above put them.
                a[i] = format!("{},acpi=on,ioapic2=off", a[i].replace(",acpi=off", ""));
            }
            if a[i - 1] == "-append" {
                if !a[i].is_empty() {
                    words.insert(0, a[i].clone());
                }
                a[i] = words.join(" ");
            }
        }
        Ok(a)
    }

    /// Firecracker's configuration file (`firecracker --no-api
    /// --config-file FILE`), JSON.
    pub fn firecracker_config(&self) -> Result<String, AttachError> {
        let q = |s: &str| {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        };
        let mut s = String::from("{\n");
        s.push_str(&format!(
            "  \"boot-source\": {{\n    \"kernel_image_path\": {},\n    \"boot_args\": {}\n  }},\n",
            q(&self.image.display().to_string()),
            q(&self.cmdline())
        ));
        s.push_str("  \"drives\": [");
        for (i, b) in self.blocks.iter().enumerate() {
            s.push_str(if i == 0 { "\n" } else { ",\n" });
            s.push_str(&format!(
                "    {{ \"drive_id\": {}, \"path_on_host\": {}, \"is_root_device\": false, \"is_read_only\": false }}",
                q(&b.name),
                q(&b.path.display().to_string())
            ));
        }
        s.push_str(if self.blocks.is_empty() {
            "],\n"
        } else {
            "\n  ],\n"
        });
        s.push_str("  \"network-interfaces\": [");
        for (i, n) in self.nets.iter().enumerate() {
            s.push_str(if i == 0 { "\n" } else { ",\n" });
            let mac = n
                .mac
                .as_ref()
                .map(|m| format!(", \"guest_mac\": {}", q(m)))
                .unwrap_or_default();
            s.push_str(&format!(
                "    {{ \"iface_id\": {}, \"host_dev_name\": {}{mac} }}",
                q(&n.name),
                q(&n.tap)
            ));
        }
        s.push_str(if self.nets.is_empty() {
            "],\n"
        } else {
            "\n  ],\n"
        });
        s.push_str(&format!(
            "  \"machine-config\": {{ \"vcpu_count\": 1, \"mem_size_mib\": {} }}\n}}\n",
            self.mem_mb
        ));
        Ok(s)
    }

    /// cloud-hypervisor's arguments (without the program).
    pub fn cloud_hypervisor_args(&self) -> Result<Vec<String>, AttachError> {
        let mut a: Vec<String> = [
            "--kernel".to_string(),
            self.image.display().to_string(),
            "--cmdline".to_string(),
            self.cmdline(),
            "--cpus".to_string(),
            "boot=1".to_string(),
            "--memory".to_string(),
            format!("size={}M", self.mem_mb),
            "--serial".to_string(),
            "tty".to_string(),
            "--console".to_string(),
            "off".to_string(),
        ]
        .to_vec();
        for n in &self.nets {
            a.push("--net".to_string());
            let mac = n
                .mac
                .as_ref()
                .map(|m| format!(",mac={m}"))
                .unwrap_or_default();
            a.push(format!("tap={}{mac}", n.tap));
        }
        for b in &self.blocks {
            a.push("--disk".to_string());
            a.push(format!("path={}", b.path.display()));
        }
        Ok(a)
    }
}

/// A command for `program` that the kernel kills (SIGKILL) when the thread
/// that started it dies, so that a VMM never outlives `kiln run`, even
/// when kiln is killed.
#[allow(unsafe_code)]
pub fn vmm_command(program: &str) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(program);
    // SAFETY: the closure runs in the child between fork and exec and
    // only makes one async-signal-safe system call.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command
}

/// SIGTERM and SIGINT while a caller runs a VMM as its child: blocked in
/// the caller and taken by a thread of their own (`sigwait`), so that they
/// become a stop request for the guest rather than ending the caller and,
/// through the terminal's process group, the VMM (`kiln run -t virtio`).
pub struct StopSignals {
    set: libc::sigset_t,
    old: libc::sigset_t,
}

/// What [`StopSignals::forward`]'s thread did.
pub struct Forwarded {
    sent: core::sync::atomic::AtomicBool,
    reaped: core::sync::atomic::AtomicBool,
}

impl Forwarded {
    /// Whether the VMM was sent SIGTERM.
    pub fn signalled(&self) -> bool {
        self.sent.load(core::sync::atomic::Ordering::SeqCst)
    }

    /// Says the VMM has been reaped (its pid no longer its own): no signal
    /// is sent to it after this.
    pub fn reaped(&self) {
        self.reaped
            .store(true, core::sync::atomic::Ordering::SeqCst);
    }
}

#[allow(unsafe_code)]
impl StopSignals {
    /// Blocks SIGTERM and SIGINT in the calling thread; threads it starts
    /// afterwards inherit the mask. Call it while that thread is the only
    /// one that could take them.
    pub fn block() -> StopSignals {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before
        // use; pthread_sigmask is given valid pointers to two of them.
        unsafe {
            let mut set: libc::sigset_t = core::mem::zeroed();
            let mut old: libc::sigset_t = core::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            StopSignals { set, old }
        }
    }

    /// Gives the VMM the signal mask from before [`StopSignals::block`] and
    /// a process group of its own, so that a Ctrl-C at the terminal reaches
    /// the caller only.
    pub fn leave_to(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let old = self.old;
        // SAFETY: the closure runs in the child between fork and exec and
        // makes two async-signal-safe system calls on its own data.
        unsafe {
            command.pre_exec(move || {
                if libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut()) != 0
                    || libc::setpgid(0, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Starts the thread that takes the signals for the VMM `pid`: the
    /// first goes to `ask` with its name ("SIGTERM", "SIGINT"), which says
    /// whether it asked the guest to stop; if not, and at every later
    /// signal, the VMM gets SIGTERM.
    pub fn forward(
        self,
        pid: u32,
        mut ask: impl FnMut(&str) -> bool + Send + 'static,
    ) -> std::sync::Arc<Forwarded> {
        use core::sync::atomic::{AtomicBool, Ordering};
        let forwarded = std::sync::Arc::new(Forwarded {
            sent: AtomicBool::new(false),
            reaped: AtomicBool::new(false),
        });
        let state = forwarded.clone();
        let set = self.set;
        std::thread::spawn(move || {
            let mut asked = false;
            loop {
                let mut signal = 0;
                // SAFETY: `set` is an initialised signal set, blocked in
                // this thread (inherited from the one that blocked it).
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    return;
                }
                let name = if signal == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                if !core::mem::replace(&mut asked, true) && ask(name) {
                    continue;
                }
                if state.reaped.load(Ordering::SeqCst) {
                    return;
                }
                state.sent.store(true, Ordering::SeqCst);
                // SAFETY: kill touches no memory of ours; `pid` is the
                // VMM's until it is reaped, checked just above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            }
        });
        forwarded
    }
}

/// What a QEMU exit code says about the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuExit {
    /// The guest wrote this status to isa-debug-exit.
    Status(u8),
    /// QEMU ended without a status: a reset or triple fault (with
    /// `-no-reboot`), a power-off, or a signal.
    NoStatus,
}

/// Decodes QEMU's exit code: `(status << 1) | 1` for a status the guest
/// wrote, truncated to 8 bits by the OS, so statuses 0 to 126 come back as
/// they are and 127 to 255 all as 255 (kiln's abort status). An even code
/// is QEMU's own end.
pub fn qemu_exit(code: i32) -> QemuExit {
    if code & 1 == 0 || !(0..=255).contains(&code) {
        return QemuExit::NoStatus;
    }
    if code == 255 {
        QemuExit::Status(255)
    } else {
        QemuExit::Status((code >> 1) as u8)
    }
}

/// The floor guest of the boot benchmarks (kiln's test and kiln-bench): a PVH ELF whose entry writes 0
/// to isa-debug-exit at once (`xor eax, eax; out 0xf4, al`, then `hlt` and
/// a jump to itself), loaded at 1 MiB like kiln's images.
pub fn floor_image() -> Vec<u8> {
    let code: &[u8] = &[0x31, 0xc0, 0xe6, 0xf4, 0xf4, 0xeb, 0xfe];
    let mut note = Vec::new();
    for word in [4u32, 8, 18] {
        note.extend_from_slice(&word.to_le_bytes());
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&0x10_0000u64.to_le_bytes());
    let (code_at, note_at) = (0x1000usize, 0x1008usize);
    let end = note_at + note.len();
    let mut elf = alloc::vec![0u8; end];
    let mut header = Vec::new();
    header.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    header.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    header.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    header.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    header.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    header.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 2, 64, 0, 0] {
        header.extend_from_slice(&half.to_le_bytes());
    }
    let segment = |kind: u32, flags: u32, offset: usize, len: usize, align: u64| {
        let mut p = Vec::new();
        let addr = 0x10_0000 + (offset - code_at) as u64;
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(&flags.to_le_bytes());
        for v in [offset as u64, addr, addr, len as u64, len as u64, align] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    };
    header.extend(segment(1, 5, code_at, end - code_at, 0x1000)); // PT_LOAD R+X
    header.extend(segment(4, 4, note_at, note.len(), 4)); // PT_NOTE
    elf[..header.len()].copy_from_slice(&header);
    elf[code_at..code_at + code.len()].copy_from_slice(code);
    elf[note_at..end].copy_from_slice(&note);
    elf
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn devices() -> Vec<ManifestDevice> {
        [("service", "net"), ("disk", "block"), ("admin", "net")]
            .map(|(n, k)| ManifestDevice {
                name: n.to_string(),
                kind: k,
            })
            .to_vec()
    }

    #[test]
    fn flags_attach_in_manifest_order() {
        let (nets, blocks) = attach(
            &devices(),
            &[
                "--net:admin=tap1",
                "--block:disk=d.img",
                "--net:service=tap0",
                "--net-mac:service=02:00:00:00:00:01",
                "--block-sector-size:disk=4096",
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            nets.iter().map(|n| n.tap.as_str()).collect::<Vec<_>>(),
            ["tap0", "tap1"]
        );
        assert_eq!(nets[0].mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(blocks[0].sector_size, 4096);
    }

    #[test]
    fn bad_flags_are_refused_one_clear_error_each() {
        let e = attach(&devices(), &["--net:service=tap0", "--block:disk=d"], false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the net device `admin` is not attached; hint: pass --net:admin=TAP"
        );
        let e = attach(&devices(), &["--net:nope=tap0"], false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--net:nope=tap0: the image has no net device `nope`"),
            "{e}"
        );
        for f in [
            "--net-mac:service=zz",
            // Regression: `u8::from_str_radix` takes a sign, so "+1" was a
            // byte.
            "--net-mac:service=02:00:00:00:00:+1",
            "--block-sector-size:disk=1000",
            "--net:service=@3",
            "--net:service=",
        ] {
            assert!(
                matches!(
                    attach(&devices(), &[f], false),
                    Err(AttachError::Bad { .. })
                ),
                "{f}"
            );
        }
    }

    #[test]
    fn the_power_button_machine_names_its_transports_and_the_ged() {
        let (nets, blocks) = attach(
            &devices(),
            &[
                "--net:service=tap0",
                "--net:admin=tap1",
                "--block:disk=d.img",
            ],
            false,
        )
        .unwrap();
        let vm = Vm {
            image: "k.virtio".into(),
            mem_mb: 64,
            args: vec!["--times".into(), "2".into()],
            nets,
            blocks,
        };
        let a = vm
            .qemu_args_with_power_button(Accel::Kvm, Console::Serial)
            .unwrap();
        let after = |flag: &str| a[a.iter().position(|x| x == flag).unwrap() + 1].clone();
        assert_eq!(after("-M"), "microvm,accel=kvm,acpi=on,ioapic2=off");
        assert_eq!(
            after("-append"),
            "--times 2 virtio_mmio.device=512@0xfeb00e00:23 \
             virtio_mmio.device=512@0xfeb00c00:22 virtio_mmio.device=512@0xfeb00a00:21 \
             kiln.ged=0xfea00000:9"
        );
        // The guest reads them back.
        let cmdline: &'static str = alloc::boxed::Box::leak(after("-append").into_boxed_str());
        let split = crate::cmdline::split(cmdline).unwrap();
        assert_eq!(split.args, Ok(alloc::vec!["--times", "2"]));
        assert_eq!(split.devices.len(), 3);
        assert_eq!(crate::power::from_cmdline(cmdline).map(|g| g.irq), Some(9));
        // A virtio console is one more transport.
        let a = vm
            .qemu_args_with_power_button(Accel::Kvm, Console::Virtio)
            .unwrap();
        let after = |flag: &str| a[a.iter().position(|x| x == flag).unwrap() + 1].clone();
        assert_eq!(after("-append").matches("virtio_mmio.device=").count(), 4);
        // Without the button, QEMU's own placement.
        let plain = vm.qemu_args(Machine::Microvm, Accel::Kvm).unwrap();
        assert!(plain.contains(&"microvm,accel=kvm".to_string()));
        assert!(plain.contains(&"--times 2".to_string()));
    }

    #[test]
    fn help_needs_no_devices() {
        let (nets, blocks) = attach(&devices(), &["--block:disk=d.img"], true).unwrap();
        assert!(nets.is_empty());
        assert_eq!(blocks.len(), 1);
    }

    #[test]
    fn missing_taps_and_disks_are_found_before_qemu_starts() {
        let tap = NetAttach {
            name: "service".into(),
            tap: "kiln-no-such0".into(),
            mac: None,
        };
        assert!(matches!(
            check_host_resources(&[tap], &[]),
            Err(AttachError::NoTap { .. })
        ));
        let disk = BlockAttach {
            name: "disk".into(),
            path: "/nonexistent/d.img".into(),
            sector_size: 512,
        };
        let e = check_host_resources(&[], &[disk]).unwrap_err();
        assert!(
            e.to_string().contains("cannot use /nonexistent/d.img"),
            "{e}"
        );
    }

    #[test]
    fn qemu_exit_codes() {
        assert_eq!(qemu_exit(1), QemuExit::Status(0));
        assert_eq!(qemu_exit(3), QemuExit::Status(1));
        assert_eq!(qemu_exit(5), QemuExit::Status(2));
        assert_eq!(qemu_exit(255), QemuExit::Status(255));
        assert_eq!(qemu_exit(0), QemuExit::NoStatus);
        assert_eq!(qemu_exit(-1), QemuExit::NoStatus);
    }

    #[test]
    fn foreign_and_truncated_images_are_refused() {
        assert!(matches!(
            check_image(b"#!/bin/sh\n"),
            Err(ImageError::NotElf(_))
        ));
        // A 64-bit ELF header for aarch64.
        let mut h = [0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[16] = 2; // ET_EXEC
        h[18] = 183; // EM_AARCH64
        let e = check_image(&h).unwrap_err();
        assert_eq!(
            e.to_string(),
            "an ELF image for aarch64, not an x86_64 executable; hint: pass a dist/NAME.virtio built by kiln build -t virtio"
        );
        // x86_64 with program headers past the end.
        h[18] = 62;
        h[32] = 64; // e_phoff
        h[54] = 56; // e_phentsize
        h[56] = 4; // e_phnum
        assert!(matches!(check_image(&h), Err(ImageError::Truncated { .. })));
        // No program headers at all: no PVH note.
        h[56] = 0;
        assert!(matches!(check_image(&h), Err(ImageError::NoPvhNote)));
    }

    /// An x86_64 executable whose one PT_NOTE segment holds `notes`.
    fn image_with_notes(notes: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 120];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[16] = 2; // ET_EXEC
        h[18] = 62; // EM_X86_64
        h[32] = 64; // e_phoff
        h[52] = 64; // e_ehsize
        h[54] = 56; // e_phentsize
        h[56] = 1; // e_phnum
        h[64] = 4; // PT_NOTE
        h[72..80].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        h[96..104].copy_from_slice(&(notes.len() as u64).to_le_bytes()); // p_filesz
        h[104..112].copy_from_slice(&(notes.len() as u64).to_le_bytes()); // p_memsz
        h[112..120].copy_from_slice(&4u64.to_le_bytes()); // p_align
        h.extend_from_slice(notes);
        h
    }

    /// One ELF note, 4-byte aligned.
    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    #[test]
    fn the_kiln_note_says_whether_the_power_button_word_is_read() {
        let xen = note(
            b"Xen\0",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x10_0000u64.to_le_bytes(),
        );
        let info = check_image(&image_with_notes(&xen)).unwrap();
        assert_eq!(info.pvh_entry, 0x10_0000);
        assert!(!info.power_button, "no kiln note: an older image");
        let mut both = xen.clone();
        both.extend(note(
            b"kiln\0",
            crate::power::FEATURES_NOTE,
            &1u32.to_le_bytes(),
        ));
        assert!(check_image(&image_with_notes(&both)).unwrap().power_button);
        let mut other = xen.clone();
        other.extend(note(
            b"kiln\0",
            crate::power::FEATURES_NOTE,
            &2u32.to_le_bytes(),
        ));
        assert!(!check_image(&image_with_notes(&other)).unwrap().power_button);
        let mut short = xen;
        short.extend(note(b"kiln\0", crate::power::FEATURES_NOTE, &[]));
        assert!(!check_image(&image_with_notes(&short)).unwrap().power_button);
    }

    #[test]
    fn command_lines() {
        let vm = Vm {
            image: "dist/www.virtio".into(),
            mem_mb: 64,
            args: vec!["--ipv4=10.0.0.2/24".into()],
            nets: vec![NetAttach {
                name: "service".into(),
                tap: "tap0".into(),
                mac: None,
            }],
            blocks: vec![BlockAttach {
                name: "disk".into(),
                path: "d.img".into(),
                sector_size: 512,
            }],
        };
        let q = vm
            .qemu_args(Machine::Microvm, Accel::Kvm)
            .unwrap()
            .join(" ");
        assert!(q.contains("-netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-device,netdev=net0"), "{q}");
        assert!(
            q.ends_with("-kernel dist/www.virtio -append --ipv4=10.0.0.2/24"),
            "{q}"
        );
        assert!(q.contains(" -serial stdio "), "{q}");
        let q = vm.qemu_args(Machine::Q35, Accel::Tcg).unwrap().join(" ");
        assert!(q.contains("virtio-blk-pci,drive=disk0"), "{q}");
        assert!(q.contains("-bios bios-microvm.bin"), "{q}");
        let q = vm
            .qemu_args_with(Machine::Q35, Accel::Kvm, Console::Virtio)
            .unwrap()
            .join(" ");
        assert!(
            q.contains("-chardev stdio,id=console,mux=on,signal=off -serial chardev:console -device virtio-serial-pci -device virtconsole,chardev=console"),
            "{q}"
        );
        let fc = vm.firecracker_config().unwrap();
        assert!(fc.contains("\"host_dev_name\": \"tap0\""), "{fc}");
        let ch = vm.cloud_hypervisor_args().unwrap().join(" ");
        assert!(ch.contains("--net tap=tap0 --disk path=d.img"), "{ch}");
        // An argument with a space, a quote or a backslash is quoted for
        // the guest's splitter, and QEMU gets the line as one word.
        let spaced = Vm {
            args: vec!["--msg=a \"b\"".into(), "c\\".into(), "".into()],
            ..vm
        };
        assert_eq!(spaced.cmdline(), r#""--msg=a \"b\"" "c\\" """#);
        let q = spaced.qemu_args(Machine::Microvm, Accel::Kvm).unwrap();
        assert_eq!(
            q.last().map(String::as_str),
            Some(spaced.cmdline().as_str())
        );
    }
}
