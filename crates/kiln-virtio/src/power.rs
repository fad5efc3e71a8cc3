//! The stop request on virtio: ACPI's power button, as QEMU's microvm
//! delivers it through its Generic Event Device (GED).
//!
//! With `-M microvm,acpi=on` QEMU has a GED whose event selector, a 32-bit
//! register at the GED's base, holds the pending events and clears on read
//! (QEMU's `hw/acpi/generic_event_device.c`); `system_powerdown` (QMP) sets
//! the power-down event in it and pulses the GED's interrupt line. The GED
//! is described only in the DSDT's AML, which kiln does not interpret, so
//! kiln's host side, which chooses the machine, names it on the kernel
//! command line: `kiln.ged=BASE:IRQ` ([`GED_PREFIX`], [`word`]), beside
//! QEMU's own `virtio_mmio.device=` words. A guest that declares a
//! `shutdown` device then routes that IOAPIC input to [`GED_VECTOR`]
//! (unmasked), which is also how a supervisor sees, in the IOAPIC's state
//! (QEMU's `info pic`), that the guest handles the button; on that
//! interrupt it reads the selector, and the power-down event completes
//! `Shutdown::requested`. Without the word (another VMM, another machine)
//! the device never completes and a stop is the VMM's.

/// The prefix of the command-line word naming the GED.
pub const GED_PREFIX: &str = "kiln.ged=";

/// The ELF note by which an image says what its command line reads (the
/// PVH entry's file, `sys/entry.rs`, writes it): name `"kiln"`, this type,
/// a 32-bit mask of [`FEATURE_GED`].
pub const FEATURES_NOTE: u32 = 1;

/// In [`FEATURES_NOTE`]'s mask: the image reads the [`GED_PREFIX`] word. An
/// image without it (built before the word) would take it for an argument.
pub const FEATURE_GED: u32 = 1;

/// Where QEMU's microvm puts the GED (`GED_MMIO_BASE`,
/// `include/hw/i386/microvm.h`), and its interrupt line (`GED_MMIO_IRQ`).
pub const MICROVM_GED_BASE: u64 = 0xfea0_0000;
/// See [`MICROVM_GED_BASE`].
pub const MICROVM_GED_IRQ: u32 = 9;

/// The power-down event's bit in the selector (`ACPI_GED_PWR_DOWN_EVT`).
pub const GED_PWR_DOWN_EVT: u32 = 0x2;

/// The vector the GED's interrupt is routed to: beside the virtio
/// devices' (0x30) and the timer's (0x31).
pub const GED_VECTOR: u8 = 0x32;

/// A GED the command line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ged {
    /// Physical address of the event selector.
    pub base: u64,
    /// Its IOAPIC input.
    pub irq: u32,
}

/// The `kiln.ged=` word for `ged` (the host side puts it on the command
/// line).
pub fn word(ged: Ged) -> alloc::string::String {
    alloc::format!("{GED_PREFIX}{:#x}:{}", ged.base, ged.irq)
}

/// The GED a `kiln.ged=BASE:IRQ` word names, if it is one and well formed
/// (a base in the 32-bit device window, 4-byte aligned; an IOAPIC input
/// below 24).
pub fn parse(word: &str) -> Option<Ged> {
    let (base, irq) = word.strip_prefix(GED_PREFIX)?.split_once(':')?;
    let base = u64::from_str_radix(base.strip_prefix("0x")?, 16).ok()?;
    let irq: u32 = irq.parse().ok()?;
    (base.is_multiple_of(4) && (0xc000_0000..0xfec0_0000).contains(&base) && irq < 24)
        .then_some(Ged { base, irq })
}

/// The last GED word of `cmdline`, if any.
pub fn from_cmdline(cmdline: &str) -> Option<Ged> {
    cmdline
        .split(' ')
        .rev()
        .filter(|w| w.starts_with(GED_PREFIX))
        .find_map(parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_round_trips() {
        let ged = Ged {
            base: MICROVM_GED_BASE,
            irq: MICROVM_GED_IRQ,
        };
        assert_eq!(word(ged), "kiln.ged=0xfea00000:9");
        assert_eq!(parse(&word(ged)), Some(ged));
        assert_eq!(
            from_cmdline("--times 2 kiln.ged=0xfea00000:9 virtio_mmio.device=512@0xfeb00e00:12"),
            Some(ged)
        );
        assert_eq!(from_cmdline("--times 2"), None);
    }

    #[test]
    fn bad_words_name_no_ged() {
        for bad in [
            "kiln.ged=",
            "kiln.ged=0xfea00000",
            "kiln.ged=fea00000:9",
            "kiln.ged=0xfea00002:9",
            "kiln.ged=0x1000:9",
            "kiln.ged=0xfee00000:9",
            "kiln.ged=0xfea00000:24",
            "kiln.ged=0xfea00000:x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
