//! The kernel command line a VMM passes: the unikernel's arguments (split
//! as on hvt and spt, MirageOS's way: [`kiln_rt::args::cmdline`]), and the
//! virtio-mmio devices a VMM announces the way Linux expects them
//! (`virtio_mmio.device=SIZE@BASE:IRQ[:ID]`, Linux's
//! `drivers/virtio/virtio_mmio.c`). QEMU's microvm appends one such word
//! per attached transport, Firecracker one per device.

use alloc::vec::Vec;

use kiln_rt::args::cmdline;

/// The prefix of a virtio-mmio device word.
pub const MMIO_PREFIX: &str = "virtio_mmio.device=";

/// A virtio-mmio transport announced on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    /// Physical address of its registers.
    pub base: u64,
    /// Size of the register window.
    pub size: u64,
    /// Its interrupt line.
    pub irq: u32,
}

/// Why a virtio-mmio word could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad virtio-mmio device `{word}`: expected SIZE@BASE:IRQ, e.g. 512@0xfeb00e00:12")]
pub struct MmioError {
    /// The word.
    pub word: &'static str,
}

/// A number in C's notation (`0x` hex, `0` octal, decimal), with an
/// optional `K`, `M` or `G` suffix (Linux's `memparse`).
fn number(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let value = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        u64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    value.checked_mul(1 << shift)
}

fn mmio_device(word: &'static str) -> Result<MmioDevice, MmioError> {
    let bad = || MmioError { word };
    let spec = word.strip_prefix(MMIO_PREFIX).ok_or_else(bad)?;
    let (size, rest) = spec.split_once('@').ok_or_else(bad)?;
    let mut parts = rest.split(':');
    let base = parts.next().and_then(number).ok_or_else(bad)?;
    let irq = parts
        .next()
        .and_then(number)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(bad)?;
    let size = number(size).filter(|&s| s > 0).ok_or_else(bad)?;
    base.checked_add(size).ok_or_else(bad)?;
    Ok(MmioDevice { base, size, irq })
}

/// A kernel command line taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// The unikernel's arguments, in order, or why the line does not
    /// split (an argument error for the unikernel to report).
    pub args: Result<Vec<&'static str>, cmdline::CmdlineError>,
    /// The virtio-mmio devices, in order.
    pub devices: Vec<MmioDevice>,
}

/// Splits the command line into the unikernel's arguments and the
/// virtio-mmio devices. A VMM appends its device words unquoted: on a
/// line whose quotes do not split, they are still found among the
/// space-separated words, so that the unikernel boots to report the bad
/// argument.
pub fn split(line: &'static str) -> Result<Cmdline, MmioError> {
    let (args, words) = match cmdline::split_static(line) {
        Ok(words) => (Ok(()), words),
        Err(e) => (Err(e), line.split(' ').filter(|w| !w.is_empty()).collect()),
    };
    let mut kept = Vec::new();
    let mut devices = Vec::new();
    for word in words {
        if word.starts_with(MMIO_PREFIX) {
            devices.push(mmio_device(word)?);
        } else {
            kept.push(word);
        }
    }
    Ok(Cmdline {
        args: args.map(|()| kept),
        devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microvm_words_are_devices_the_rest_arguments() {
        // What QEMU 7.2's microvm passes for `-append "--times 2"` with two
        // virtio-mmio devices.
        let line =
            "--times 2 virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=512@0xfeb00c00:11";
        let Cmdline { args, devices } = split(line).unwrap();
        assert_eq!(args.unwrap(), ["--times", "2"]);
        assert_eq!(
            devices,
            [
                MmioDevice {
                    base: 0xfeb0_0e00,
                    size: 512,
                    irq: 12
                },
                MmioDevice {
                    base: 0xfeb0_0c00,
                    size: 512,
                    irq: 11
                },
            ]
        );
    }

    #[test]
    fn firecracker_words_parse() {
        let d = split("virtio_mmio.device=4K@0xd0000000:5 x")
            .unwrap()
            .devices;
        assert_eq!(
            d,
            [MmioDevice {
                base: 0xd000_0000,
                size: 4096,
                irq: 5
            }]
        );
        let d = split("virtio_mmio.device=1K@0xd0001000:6:3")
            .unwrap()
            .devices;
        assert_eq!(d[0].size, 1024);
    }

    #[test]
    fn malformed_words_are_refused() {
        for w in [
            "virtio_mmio.device=",
            "virtio_mmio.device=512",
            "virtio_mmio.device=512@0xfeb00e00",
            "virtio_mmio.device=0@0x1000:1",
            "virtio_mmio.device=1G@0xffffffffffffffff:1",
            "virtio_mmio.device=512@zz:1",
            "virtio_mmio.device=512@0x1000:99999999999",
        ] {
            assert_eq!(split(w), Err(MmioError { word: w }), "{w}");
        }
    }

    #[test]
    fn arguments_are_unquoted_and_a_bad_quote_keeps_the_devices() {
        let c = split(r#"--msg="a b" x\ y virtio_mmio.device=512@0xfeb00e00:12"#).unwrap();
        assert_eq!(c.args.unwrap(), ["--msg=a b", "x y"]);
        assert_eq!(c.devices.len(), 1);
        let c = split(r#"--msg="a b virtio_mmio.device=512@0xfeb00e00:12"#).unwrap();
        assert_eq!(c.args, Err(cmdline::CmdlineError::UnclosedQuote(6)));
        assert_eq!(c.devices.len(), 1);
    }
}
