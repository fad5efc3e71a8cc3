//! Which implementation choices exist on which target, and why the others
//! cannot: a table, so that new targets and implementations are one row.
//!
//! This says what is *possible*; whether kiln can already generate code for
//! a possible implementation is the business of the target's backend in
//! [`crate::codegen`].

use crate::model::{DeviceType, Impl, Target};

/// Why an implementation cannot exist on a target, and the fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Impossible {
    /// The reason, completing "... is not available on TARGET: ".
    pub why: &'static str,
    /// The fix.
    pub hint: &'static str,
}

/// One row: an implementation choice of a device type, what it is built
/// from, and the targets it cannot exist on.
#[derive(Debug, Clone, Copy)]
pub struct Implementation {
    /// The device type.
    pub device: DeviceType,
    /// The choice (`None` for device types without a choice).
    pub choice: Option<Impl>,
    /// The dependency keys this implementation uses; the others are
    /// ignored (a socket stack does not use its `net`).
    pub uses: &'static [&'static str],
    /// The targets it cannot exist on, with the reason.
    pub impossible_on: &'static [(Target, Impossible)],
}

const NO_SOCKETS: Impossible = Impossible {
    why: "there is no host kernel whose sockets it could use; the unikernel talks to a network interface itself",
    hint: "use kiln's own TCP/IP stack: pass --net direct, or set impl = \"direct\" on the device",
};

/// Every implementation.
pub const IMPLEMENTATIONS: &[Implementation] = &[
    Implementation {
        device: DeviceType::Console,
        choice: None,
        uses: &[],
        impossible_on: &[],
    },
    Implementation {
        device: DeviceType::Clock,
        choice: None,
        uses: &[],
        impossible_on: &[],
    },
    Implementation {
        device: DeviceType::WallClock,
        choice: None,
        uses: &[],
        impossible_on: &[],
    },
    Implementation {
        device: DeviceType::Sleep,
        choice: None,
        uses: &[],
        impossible_on: &[],
    },
    Implementation {
        device: DeviceType::Shutdown,
        choice: None,
        uses: &[],
        impossible_on: &[],
    },
    Implementation {
        device: DeviceType::Random,
        choice: None,
        uses: &[],
        impossible_on: &[],
    },
    Implementation {
        device: DeviceType::Net,
        choice: None,
        uses: &[],
        impossible_on: &[],
    },
    Implementation {
        device: DeviceType::Block,
        choice: None,
        uses: &[],
        impossible_on: &[],
    },
    Implementation {
        device: DeviceType::Stack,
        choice: Some(Impl::Socket),
        uses: &[],
        impossible_on: &[
            (Target::Hvt, NO_SOCKETS),
            (Target::Spt, NO_SOCKETS),
            (Target::Virtio, NO_SOCKETS),
        ],
    },
    Implementation {
        device: DeviceType::Stack,
        choice: Some(Impl::Direct),
        uses: &["net"],
        impossible_on: &[],
    },
    Implementation {
        device: DeviceType::KvRo,
        choice: Some(Impl::Baked),
        uses: &[],
        impossible_on: &[],
    },
    Implementation {
        device: DeviceType::KvRo,
        choice: Some(Impl::Disk),
        uses: &["block"],
        impossible_on: &[],
    },
    Implementation {
        device: DeviceType::KvRw,
        choice: None,
        uses: &["block"],
        impossible_on: &[],
    },
];

/// The default choice for a device type on a target (`None` for types
/// without a choice).
pub fn default_choice(device: DeviceType, target: Target) -> Option<Impl> {
    match device {
        DeviceType::Stack if target.has_host_kernel() => Some(Impl::Socket),
        DeviceType::Stack => Some(Impl::Direct),
        DeviceType::KvRo => Some(Impl::Baked),
        _ => None,
    }
}

/// The row for `device` with `choice`.
pub fn find(device: DeviceType, choice: Option<Impl>) -> Option<&'static Implementation> {
    IMPLEMENTATIONS
        .iter()
        .find(|i| i.device == device && i.choice == choice)
}

impl Implementation {
    /// Why this implementation cannot exist on `target`, if it cannot.
    pub fn impossible_on(&self, target: Target) -> Option<Impossible> {
        self.impossible_on
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, why)| *why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_choice_has_a_row_and_defaults_are_possible() {
        for device in DeviceType::ALL {
            let choices: Vec<Option<Impl>> = if device.choices().is_empty() {
                vec![None]
            } else {
                device.choices().iter().copied().map(Some).collect()
            };
            for choice in choices {
                assert!(find(device, choice).is_some(), "{device} {choice:?}");
            }
            for target in Target::ALL {
                let row = find(device, default_choice(device, target)).unwrap();
                assert!(row.impossible_on(target).is_none(), "{device} on {target}");
            }
        }
        assert!(
            find(DeviceType::Stack, Some(Impl::Socket))
                .unwrap()
                .impossible_on(Target::Hvt)
                .is_some()
        );
    }
}
