//! The vocabulary of `unikernel.toml`: targets, device types, their
//! dependency keys and implementation choices.

use std::fmt;

/// Where a unikernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A host process.
    Unix,
    /// A KVM guest under `kiln-hvt`.
    Hvt,
    /// A seccomp-sandboxed process under `kiln-spt`.
    Spt,
    /// A PVH image for standard VMMs (QEMU, Firecracker, cloud-hypervisor).
    Virtio,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 4] = [Target::Unix, Target::Hvt, Target::Spt, Target::Virtio];

    /// The target's name (`unix`, `hvt`, `spt`).
    pub const fn name(self) -> &'static str {
        match self {
            Target::Unix => "unix",
            Target::Hvt => "hvt",
            Target::Spt => "spt",
            Target::Virtio => "virtio",
        }
    }

    /// Whether a host kernel's sockets, files and clocks are at hand.
    pub const fn has_host_kernel(self) -> bool {
        matches!(self, Target::Unix)
    }
}

/// The type of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// `console`.
    Console,
    /// `clock`: the monotonic clock.
    Clock,
    /// `wall_clock`.
    WallClock,
    /// `sleep`: timers.
    Sleep,
    /// `random`.
    Random,
    /// `net`: a network interface.
    Net,
    /// `block`.
    Block,
    /// `kv_ro`: a read-only key-value store.
    KvRo,
    /// `kv_rw`: a read-write key-value store.
    KvRw,
    /// `stack`: a TCP/UDP stack.
    Stack,
    /// `shutdown`: the host's request to stop.
    Shutdown,
}

/// A key of a device's table that names another device it depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependencyKey {
    /// The key (`net`, `block`).
    pub key: &'static str,
    /// The type the named device must have.
    pub ty: DeviceType,
    /// The device name used when the key is absent; `None` makes the key
    /// required (for the implementations that use it).
    pub default: Option<&'static str>,
}

/// The name of the network interface a stack uses when it names none.
pub const DEFAULT_NET: &str = "service";

impl DeviceType {
    /// Every device type.
    pub const ALL: [DeviceType; 11] = [
        DeviceType::Console,
        DeviceType::Clock,
        DeviceType::WallClock,
        DeviceType::Sleep,
        DeviceType::Random,
        DeviceType::Net,
        DeviceType::Block,
        DeviceType::KvRo,
        DeviceType::KvRw,
        DeviceType::Stack,
        DeviceType::Shutdown,
    ];

    /// The name used in `unikernel.toml`.
    pub const fn name(self) -> &'static str {
        match self {
            DeviceType::Console => "console",
            DeviceType::Clock => "clock",
            DeviceType::WallClock => "wall_clock",
            DeviceType::Sleep => "sleep",
            DeviceType::Random => "random",
            DeviceType::Net => "net",
            DeviceType::Block => "block",
            DeviceType::KvRo => "kv_ro",
            DeviceType::KvRw => "kv_rw",
            DeviceType::Stack => "stack",
            DeviceType::Shutdown => "shutdown",
        }
    }

    /// The `kiln_devices` trait an entry parameter of this type must be
    /// bounded by.
    pub const fn trait_name(self) -> &'static str {
        match self {
            DeviceType::Console => "Console",
            DeviceType::Clock => "MonotonicClock",
            DeviceType::WallClock => "WallClock",
            DeviceType::Sleep => "Sleep",
            DeviceType::Random => "Random",
            DeviceType::Net => "NetworkInterface",
            DeviceType::Block => "Block",
            DeviceType::KvRo => "KvRo",
            DeviceType::KvRw => "KvRw",
            DeviceType::Stack => "Stack",
            DeviceType::Shutdown => "Shutdown",
        }
    }

    /// The keys of this type's table that name other devices.
    pub const fn dependency_keys(self) -> &'static [DependencyKey] {
        match self {
            DeviceType::Stack => &[DependencyKey {
                key: "net",
                ty: DeviceType::Net,
                default: Some(DEFAULT_NET),
            }],
            DeviceType::KvRo | DeviceType::KvRw => &[DependencyKey {
                key: "block",
                ty: DeviceType::Block,
                default: None,
            }],
            _ => &[],
        }
    }

    /// The implementations to choose from with `impl = "..."`, the first
    /// being the default where the target does not say otherwise. Empty
    /// when there is no choice.
    pub const fn choices(self) -> &'static [Impl] {
        match self {
            DeviceType::Stack => &[Impl::Socket, Impl::Direct],
            DeviceType::KvRo => &[Impl::Baked, Impl::Disk],
            _ => &[],
        }
    }

    /// The keys of this type's table other than `type`, `impl`, `doc` and
    /// the dependency keys.
    pub const fn extra_keys(self) -> &'static [&'static str] {
        match self {
            DeviceType::KvRo => &["source"],
            _ => &[],
        }
    }
}

/// A named implementation choice (`impl = "..."` or a command-line flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Impl {
    /// The stack of the host kernel, through sockets.
    Socket,
    /// kiln's own TCP/IP stack (`kiln-net`) over a network interface.
    Direct,
    /// A read-only store compiled into the image from a directory.
    Baked,
    /// A read-only store read from a block device.
    Disk,
}

impl Impl {
    /// Every implementation choice.
    pub const ALL: [Impl; 4] = [Impl::Socket, Impl::Direct, Impl::Baked, Impl::Disk];

    /// The name used in `unikernel.toml` and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Impl::Socket => "socket",
            Impl::Direct => "direct",
            Impl::Baked => "baked",
            Impl::Disk => "disk",
        }
    }
}

/// For enums with `ALL` and a `name` each: `from_name`, and `Display` as
/// the name.
macro_rules! named {
    ($($ty:ident),*) => {$(
        impl $ty {
            /// The one whose [`name`](Self::name) is `name`.
            pub fn from_name(name: &str) -> Option<$ty> {
                $ty::ALL.into_iter().find(|t| t.name() == name)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    )*};
}

named!(Target, DeviceType, Impl);

/// Implementation choices made on the command line; they override the
/// `impl` keys of `unikernel.toml`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Choices {
    /// `--net socket|direct`: the implementation of every stack.
    pub net: Option<Impl>,
    /// `--kv-ro baked|disk`: the implementation of every read-only store.
    pub kv_ro: Option<Impl>,
}

/// Rust keywords, which cannot be parameter names.
pub const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe",
    "use", "where", "while", "abstract", "become", "box", "do", "final", "macro", "override",
    "priv", "try", "typeof", "unsized", "virtual", "yield",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in DeviceType::ALL {
            assert_eq!(DeviceType::from_name(t.name()), Some(t));
        }
        for t in Target::ALL {
            assert_eq!(Target::from_name(t.name()), Some(t));
        }
        for i in Impl::ALL {
            assert_eq!(Impl::from_name(i.name()), Some(i));
        }
        assert_eq!(DeviceType::from_name("Console"), None);
        assert_eq!(Impl::from_name("direct"), Some(Impl::Direct));
    }
}
