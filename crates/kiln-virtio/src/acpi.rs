//! The little of ACPI kiln reads, for VMMs that describe their virtio-mmio
//! devices only there (QEMU's microvm with ACPI on, its default): the
//! RSDP, the XSDT (or RSDT), the FADT's DSDT, the MADT's I/O APICs, and in
//! the DSDT each device whose `_HID` is `LNRO0005` (virtio-mmio) with the
//! `Memory32Fixed` and `Interrupt` descriptors of its `_CRS`.
//!
//! Spec: ACPI 6.5, 5.2.5 (RSDP), 5.2.6 (table header), 5.2.8 (XSDT),
//! 5.2.9 (FADT), 5.2.12 (MADT, I/O APIC structure), 20 (AML encoding:
//! `NameOp`, `StringPrefix`, `BufferOp`, `PkgLength`), 6.4.3.4 and 6.4.3.6
//! (the two resource descriptors). The DSDT is not interpreted: QEMU's
//! microvm writes these devices as constant `Name` objects, which a scan
//! of the AML finds; anything else is skipped. All bytes come from guest
//! memory the VMM wrote and are read through [`Memory`], bounded.

use crate::cmdline::MmioDevice;

/// Physical memory as the boot code can read it: `None` outside what it
/// may read.
pub trait Memory {
    /// The byte at `addr`.
    fn byte(&self, addr: u64) -> Option<u8>;
}

/// Most bytes kiln reads of one table (QEMU's microvm DSDT is about 2 KiB).
pub const TABLE_MAX: u32 = 64 << 10;
/// Most tables an XSDT/RSDT lists that kiln looks at.
const ENTRIES_MAX: u32 = 64;
/// The `_HID` of virtio-mmio devices (the Linux driver's ACPI match).
const VIRTIO_MMIO_HID: &[u8] = b"LNRO0005";

fn bytes<const N: usize>(m: &impl Memory, addr: u64) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = m.byte(addr.checked_add(i as u64)?)?;
    }
    Some(out)
}

fn u32_at(m: &impl Memory, addr: u64) -> Option<u32> {
    bytes::<4>(m, addr).map(u32::from_le_bytes)
}

fn u64_at(m: &impl Memory, addr: u64) -> Option<u64> {
    bytes::<8>(m, addr).map(u64::from_le_bytes)
}

/// A table: its address and length (header included, capped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Table {
    addr: u64,
    len: u32,
}

impl Table {
    /// The table at `addr`, if its header has `signature`.
    fn at(m: &impl Memory, addr: u64, signature: &[u8; 4]) -> Option<Table> {
        if bytes::<4>(m, addr)? != *signature {
            return None;
        }
        let len = u32_at(m, addr + 4)?;
        (36..=TABLE_MAX)
            .contains(&len)
            .then_some(Table { addr, len })
    }

    fn byte(&self, m: &impl Memory, offset: u32) -> Option<u8> {
        (offset < self.len).then(|| m.byte(self.addr + u64::from(offset)))?
    }
}

/// The tables the RSDP at `rsdp` leads to, with `signature`: the first.
fn find_table(m: &impl Memory, rsdp: u64, signature: &[u8; 4]) -> Option<Table> {
    if bytes::<8>(m, rsdp)? != *b"RSD PTR " {
        return None;
    }
    let revision = m.byte(rsdp + 15)?;
    let (root, width) = if revision >= 2 {
        let xsdt = u64_at(m, rsdp + 24)?;
        (Table::at(m, xsdt, b"XSDT")?, 8u32)
    } else {
        let rsdt = u64::from(u32_at(m, rsdp + 16)?);
        (Table::at(m, rsdt, b"RSDT")?, 4u32)
    };
    let entries = ((root.len - 36) / width).min(ENTRIES_MAX);
    (0..entries).find_map(|i| {
        let at = root.addr + 36 + u64::from(i * width);
        let addr = if width == 8 {
            u64_at(m, at)?
        } else {
            u64::from(u32_at(m, at)?)
        };
        Table::at(m, addr, signature)
    })
}

/// An I/O APIC of the MADT: its registers' address and first GSI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApic {
    /// Physical address of its registers.
    pub address: u64,
    /// The global system interrupt of its input 0.
    pub gsi_base: u32,
}

/// What the ACPI tables say of the VM's virtio-mmio devices and I/O APICs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// The virtio-mmio devices, in the DSDT's order.
    pub mmio: [Option<MmioDevice>; Found::MMIO_MAX],
    /// The I/O APICs, in the MADT's order.
    pub ioapics: [Option<IoApic>; Found::IOAPICS_MAX],
}

impl Found {
    /// Most virtio-mmio devices kept (QEMU's microvm has 24 transports).
    pub const MMIO_MAX: usize = 32;
    /// Most I/O APICs kept.
    pub const IOAPICS_MAX: usize = 4;

    /// The devices found.
    pub fn mmio(&self) -> impl Iterator<Item = MmioDevice> + '_ {
        self.mmio.iter().flatten().copied()
    }
}

/// Reads the virtio-mmio devices and I/O APICs of the tables the RSDP at
/// `rsdp` leads to; what is missing or malformed is left out.
pub fn read(m: &impl Memory, rsdp: u64) -> Found {
    let mut found = Found::default();
    if let Some(madt) = find_table(m, rsdp, b"APIC") {
        // Interrupt controller structures from offset 44: type, length.
        let mut at = 44u32;
        let mut n = 0;
        while let (Some(kind), Some(len)) = (madt.byte(m, at), madt.byte(m, at + 1)) {
            if len < 2 {
                break;
            }
            if kind == 1 && len >= 12 && n < Found::IOAPICS_MAX {
                let field = |o: u32| u32_at(m, madt.addr + u64::from(at + o));
                if let (Some(address), Some(gsi_base)) = (field(4), field(8)) {
                    found.ioapics[n] = Some(IoApic {
                        address: u64::from(address),
                        gsi_base,
                    });
                    n += 1;
                }
            }
            at += u32::from(len);
        }
    }
    let dsdt = find_table(m, rsdp, b"FACP").and_then(|fadt| {
        // X_DSDT (offset 140) when the FADT is long enough and it is set,
        // else DSDT (offset 40).
        let x = (fadt.len >= 148)
            .then(|| u64_at(m, fadt.addr + 140))
            .flatten()
            .filter(|&x| x != 0);
        let addr = x.or_else(|| u32_at(m, fadt.addr + 40).map(u64::from))?;
        Table::at(m, addr, b"DSDT")
    });
    if let Some(dsdt) = dsdt {
        scan_dsdt(m, dsdt, &mut found.mmio);
    }
    found
}

/// The AML after `offset` in `t` as bytes, through a closure.
fn aml_matches(m: &impl Memory, t: Table, offset: u32, pattern: &[u8]) -> bool {
    pattern
        .iter()
        .enumerate()
        .all(|(i, &p)| t.byte(m, offset + i as u32) == Some(p))
}

/// Finds each `Name (_HID, "LNRO0005")` and the `Name (_CRS, Buffer)` that
/// follows it (before the next `_HID`), and reads the window and the
/// interrupt from the buffer's resource descriptors.
fn scan_dsdt(m: &impl Memory, t: Table, out: &mut [Option<MmioDevice>]) {
    // NameOp '_HID' StringPrefix "LNRO0005" NUL.
    let mut hid = [0u8; 15];
    hid[..6].copy_from_slice(&[0x08, b'_', b'H', b'I', b'D', 0x0d]);
    hid[6..14].copy_from_slice(VIRTIO_MMIO_HID);
    let mut n = 0;
    let mut at = 36;
    while at < t.len && n < out.len() {
        if !aml_matches(m, t, at, &hid) {
            at += 1;
            continue;
        }
        at += hid.len() as u32;
        // The next `_CRS` name, unless another `_HID` comes first.
        let mut crs = at;
        let found = loop {
            if crs >= t.len || aml_matches(m, t, crs, &[0x08, b'_', b'H', b'I', b'D']) {
                break None;
            }
            if aml_matches(m, t, crs, &[0x08, b'_', b'C', b'R', b'S', 0x11]) {
                break Some(crs + 6);
            }
            crs += 1;
        };
        if let Some(buffer) = found
            && let Some(device) = read_crs(m, t, buffer)
        {
            out[n] = Some(device);
            n += 1;
        }
    }
}

/// An AML `PkgLength` at `at`: (the length, the bytes it took).
fn pkg_length(m: &impl Memory, t: Table, at: u32) -> Option<(u32, u32)> {
    let lead = t.byte(m, at)?;
    let follow = u32::from(lead >> 6);
    if follow == 0 {
        return Some((u32::from(lead & 0x3f), 1));
    }
    let mut len = u32::from(lead & 0x0f);
    for i in 0..follow {
        len |= u32::from(t.byte(m, at + 1 + i)?) << (4 + 8 * i);
    }
    Some((len, 1 + follow))
}

/// Reads a `_CRS` buffer (after its `BufferOp`): a `Memory32Fixed`
/// (0x86) gives the window, an extended `Interrupt` (0x89) the line.
fn read_crs(m: &impl Memory, t: Table, at: u32) -> Option<MmioDevice> {
    let (pkg, taken) = pkg_length(m, t, at)?;
    let end = at.checked_add(pkg)?.min(t.len);
    // BufferSize: a ByteConst, WordConst or DWordConst.
    let mut p = at + taken;
    p += match t.byte(m, p)? {
        0x0a => 2,
        0x0b => 3,
        0x0c => 5,
        _ => return None,
    };
    let (mut base, mut size, mut irq) = (None, None, None);
    while p < end {
        let tag = t.byte(m, p)?;
        if tag & 0x80 == 0 {
            // A small descriptor; 0x79 (0x0f << 3 | 1) ends the list.
            if tag & 0x78 == 0x78 {
                break;
            }
            p += 1 + u32::from(tag & 0x07);
            continue;
        }
        let len = u32::from(t.byte(m, p + 1)?) | u32::from(t.byte(m, p + 2)?) << 8;
        let body = p + 3;
        let field = |o: u32| u32_at(m, t.addr + u64::from(body + o));
        match tag {
            0x86 if len >= 9 => {
                base = field(1);
                size = field(5);
            }
            0x89 if len >= 6 && t.byte(m, body + 1)? >= 1 => irq = field(2),
            _ => {}
        }
        p = body + len;
    }
    Some(MmioDevice {
        base: u64::from(base?),
        size: u64::from(size?),
        irq: irq?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// Memory from `base` on.
    struct Bytes {
        base: u64,
        data: Vec<u8>,
    }

    impl Memory for Bytes {
        fn byte(&self, addr: u64) -> Option<u8> {
            let i = usize::try_from(addr.checked_sub(self.base)?).ok()?;
            self.data.get(i).copied()
        }
    }

    fn put(data: &mut Vec<u8>, at: usize, bytes: &[u8]) {
        if data.len() < at + bytes.len() {
            data.resize(at + bytes.len(), 0);
        }
        data[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn header(signature: &[u8; 4], len: usize) -> Vec<u8> {
        let mut t = alloc::vec![0u8; 36];
        t[..4].copy_from_slice(signature);
        t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        t
    }

    /// One virtio-mmio device as QEMU's microvm writes it:
    /// `Device (VR00) { Name (_HID, "LNRO0005") Name (_UID, 0)
    /// Name (_CCA, One) Name (_CRS, ResourceTemplate () { Memory32Fixed
    /// (ReadWrite, BASE, 0x200) Interrupt (...) { IRQ } }) }`.
    fn device(base: u32, irq: u32) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&[0x08, b'_', b'H', b'I', b'D', 0x0d]);
        d.extend_from_slice(b"LNRO0005\0");
        d.extend_from_slice(&[0x08, b'_', b'U', b'I', b'D', 0x00]);
        d.extend_from_slice(&[0x08, b'_', b'C', b'C', b'A', 0x01]);
        let mut res = alloc::vec![0x86, 9, 0, 1];
        res.extend_from_slice(&base.to_le_bytes());
        res.extend_from_slice(&0x200u32.to_le_bytes());
        res.extend_from_slice(&[0x89, 6, 0, 0x0b, 1]);
        res.extend_from_slice(&irq.to_le_bytes());
        res.extend_from_slice(&[0x79, 0]);
        // BufferOp PkgLength ByteConst(size) bytes
        let body = 2 + res.len();
        d.extend_from_slice(&[0x08, b'_', b'C', b'R', b'S', 0x11]);
        d.push((1 + body) as u8);
        d.extend_from_slice(&[0x0a, res.len() as u8]);
        d.extend_from_slice(&res);
        let mut dev = alloc::vec![0x5b, 0x82, (1 + 4 + d.len()) as u8];
        dev.extend_from_slice(b"VR00");
        dev.extend_from_slice(&d);
        dev
    }

    /// RSDP at 0x1000 (revision 2), XSDT at 0x1100, FADT at 0x1200, MADT
    /// at 0x1300, DSDT at 0x2000.
    fn machine(devices: &[(u32, u32)]) -> Bytes {
        let mut m = Vec::new();
        let mut rsdp = b"RSD PTR ".to_vec();
        rsdp.resize(36, 0);
        rsdp[15] = 2;
        rsdp[24..32].copy_from_slice(&0x1100u64.to_le_bytes());
        put(&mut m, 0x1000, &rsdp);
        let mut xsdt = header(b"XSDT", 36 + 16);
        xsdt.extend_from_slice(&0x1200u64.to_le_bytes());
        xsdt.extend_from_slice(&0x1300u64.to_le_bytes());
        put(&mut m, 0x1100, &xsdt);
        let mut fadt = header(b"FACP", 148);
        fadt.resize(148, 0);
        fadt[40..44].copy_from_slice(&0x2000u32.to_le_bytes());
        put(&mut m, 0x1200, &fadt);
        let mut madt = header(b"APIC", 44 + 8 + 12 + 12);
        madt.resize(44, 0);
        madt.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // a local APIC
        for (id, addr, gsi) in [(0u8, 0xfec0_0000u32, 0u32), (1, 0xfec1_0000, 24)] {
            madt.extend_from_slice(&[1, 12, id, 0]);
            madt.extend_from_slice(&addr.to_le_bytes());
            madt.extend_from_slice(&gsi.to_le_bytes());
        }
        put(&mut m, 0x1300, &madt);
        let mut aml = Vec::new();
        for &(base, irq) in devices {
            aml.extend_from_slice(&device(base, irq));
        }
        let mut dsdt = header(b"DSDT", 36 + aml.len());
        dsdt.extend_from_slice(&aml);
        put(&mut m, 0x2000, &dsdt);
        Bytes { base: 0, data: m }
    }

    #[test]
    fn finds_microvm_devices_and_ioapics() {
        let m = machine(&[(0xfeb0_0000, 24), (0xfeb0_0200, 25)]);
        let found = read(&m, 0x1000);
        let mmio: Vec<_> = found.mmio().collect();
        assert_eq!(
            mmio,
            [
                MmioDevice {
                    base: 0xfeb0_0000,
                    size: 0x200,
                    irq: 24
                },
                MmioDevice {
                    base: 0xfeb0_0200,
                    size: 0x200,
                    irq: 25
                }
            ]
        );
        assert_eq!(
            found.ioapics[1],
            Some(IoApic {
                address: 0xfec1_0000,
                gsi_base: 24
            })
        );
    }

    #[test]
    fn bad_tables_give_nothing() {
        let m = machine(&[(0xfeb0_0000, 24)]);
        // No RSDP there.
        assert_eq!(read(&m, 0x1008), Found::default());
        // A DSDT cut short: its length claims more than memory holds.
        let mut cut = machine(&[(0xfeb0_0000, 24)]);
        let len = cut.data.len();
        cut.data.truncate(len - 8);
        assert_eq!(read(&cut, 0x1000).mmio().count(), 0);
        // Another _HID: not virtio-mmio.
        let mut other = machine(&[(0xfeb0_0000, 24)]);
        let at = other
            .data
            .windows(8)
            .position(|w| w == b"LNRO0005")
            .unwrap();
        other.data[at + 7] = b'6';
        assert_eq!(read(&other, 0x1000).mmio().count(), 0);
        // A length of zero in the MADT ends its walk.
        let mut zero = machine(&[]);
        zero.data[0x1300 + 45] = 0;
        assert!(read(&zero, 0x1000).ioapics.iter().all(Option::is_none));
    }
}
