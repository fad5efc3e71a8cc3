//! Runtime-argument parsing for generated crates: a static [`Spec`] built by
//! `kiln configure` and the argv strings in, typed values out.
//!
//! The same parser runs on every target: on unix the strings come from the
//! process's argv, on hvt, spt and virtio from the one command line the
//! guest receives, split as MirageOS splits it (module [`cmdline`]: spaces
//! separate, `"` quotes, `\` escapes), so the input is a plain iterator of
//! `&str`. Accepted forms:
//!
//! - `--name=value` and `--name value` for the unikernel's own arguments;
//! - `--flag` (true) and `--flag=true|false` for `bool` arguments;
//! - the device flags of the tenders: `--net:NAME=IFACE`,
//!   `--net-mac:NAME=MAC`, `--block:NAME=PATH`,
//!   `--block-sector-size:NAME=N` (default 512);
//! - `--log=FILTER`, which every unikernel takes: the levels of the log
//!   records kept ([`LogFilter`], module `log_filter`);
//! - `--help` (or `-h`), which wins over everything else.
//!
//! Unknown flags, positional words, missing required arguments, repeated
//! arguments and malformed values are [`ArgsError`]s whose `Display` is one
//! line meant to follow `error: `.

#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

pub mod cmdline;
mod log_filter;

pub use cmdline::CmdlineError;
pub use log_filter::{DEFAULT_LEVEL, LOG_EXPECTED, LevelFilter, LogFilter, LogFilterError};

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kiln_devices::MacAddress;

/// The sector size of a block device when `--block-sector-size` is not given.
pub const DEFAULT_SECTOR_SIZE: u32 = 512;

/// The type of a runtime argument, as written in `unikernel.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgType {
    /// `bool`: `--flag`, `--flag=true`, `--flag=false`.
    Bool,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `string`: any UTF-8 text.
    String,
    /// `ip`: an IPv4 or IPv6 address (`core::net::IpAddr`).
    Ip,
    /// `ipv4`: `core::net::Ipv4Addr`.
    Ipv4,
    /// `ipv6`: `core::net::Ipv6Addr`.
    Ipv6,
}

impl ArgType {
    /// Every argument type, in the order the documentation lists them.
    pub const ALL: [ArgType; 11] = [
        ArgType::Bool,
        ArgType::U8,
        ArgType::U16,
        ArgType::U32,
        ArgType::U64,
        ArgType::I32,
        ArgType::I64,
        ArgType::String,
        ArgType::Ip,
        ArgType::Ipv4,
        ArgType::Ipv6,
    ];

    /// The name used in `unikernel.toml` and in usage texts (`u32`, `ip`).
    pub const fn name(self) -> &'static str {
        match self {
            ArgType::Bool => "bool",
            ArgType::U8 => "u8",
            ArgType::U16 => "u16",
            ArgType::U32 => "u32",
            ArgType::U64 => "u64",
            ArgType::I32 => "i32",
            ArgType::I64 => "i64",
            ArgType::String => "string",
            ArgType::Ip => "ip",
            ArgType::Ipv4 => "ipv4",
            ArgType::Ipv6 => "ipv6",
        }
    }

    /// The type named `name` in `unikernel.toml`, if any.
    pub fn from_name(name: &str) -> Option<ArgType> {
        ArgType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// What a valid value looks like, for error messages
    /// ("an unsigned integer (u32)").
    pub const fn expected(self) -> &'static str {
        match self {
            ArgType::Bool => "true or false (bool)",
            ArgType::U8 => "an unsigned integer (u8, at most 255)",
            ArgType::U16 => "an unsigned integer (u16, at most 65535)",
            ArgType::U32 => "an unsigned integer (u32)",
            ArgType::U64 => "an unsigned integer (u64)",
            ArgType::I32 => "an integer (i32)",
            ArgType::I64 => "an integer (i64)",
            ArgType::String => "a string",
            ArgType::Ip => "an IPv4 or IPv6 address (ip)",
            ArgType::Ipv4 => "an IPv4 address like 10.0.0.2 (ipv4)",
            ArgType::Ipv6 => "an IPv6 address like fe80::1 (ipv6)",
        }
    }

    /// Parses `text` as a value of this type; `None` if it is not one.
    pub fn parse(self, text: &str) -> Option<Value> {
        Some(match self {
            ArgType::Bool => match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return None,
            },
            ArgType::U8 => Value::U8(text.parse().ok()?),
            ArgType::U16 => Value::U16(text.parse().ok()?),
            ArgType::U32 => Value::U32(text.parse().ok()?),
            ArgType::U64 => Value::U64(text.parse().ok()?),
            ArgType::I32 => Value::I32(text.parse().ok()?),
            ArgType::I64 => Value::I64(text.parse().ok()?),
            ArgType::String => Value::String(text.to_string()),
            ArgType::Ip => Value::Ip(text.parse().ok()?),
            ArgType::Ipv4 => Value::Ipv4(text.parse().ok()?),
            ArgType::Ipv6 => Value::Ipv6(text.parse().ok()?),
        })
    }
}

impl fmt::Display for ArgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed runtime-argument value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A `bool`.
    Bool(bool),
    /// A `u8`.
    U8(u8),
    /// A `u16`.
    U16(u16),
    /// A `u32`.
    U32(u32),
    /// A `u64`.
    U64(u64),
    /// An `i32`.
    I32(i32),
    /// An `i64`.
    I64(i64),
    /// A `string`.
    String(String),
    /// An `ip`.
    Ip(IpAddr),
    /// An `ipv4`.
    Ipv4(Ipv4Addr),
    /// An `ipv6`.
    Ipv6(Ipv6Addr),
}

/// The Rust types that runtime-argument values convert to.
pub trait FromValue: Sized {
    /// The value as `Self`, or `None` if it holds another type.
    fn from_value(value: Value) -> Option<Self>;
}

macro_rules! from_value {
    ($($variant:ident => $ty:ty),* $(,)?) => {$(
        impl FromValue for $ty {
            fn from_value(value: Value) -> Option<Self> {
                match value {
                    Value::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    )*};
}

from_value! {
    Bool => bool, U8 => u8, U16 => u16, U32 => u32, U64 => u64, I32 => i32,
    I64 => i64, String => String, Ip => IpAddr, Ipv4 => Ipv4Addr, Ipv6 => Ipv6Addr,
}

/// One runtime argument of a unikernel.
#[derive(Debug, Clone, Copy)]
pub struct ArgSpec {
    /// The flag's name, without `--` (`times`, `ipv4-gateway`).
    pub name: &'static str,
    /// Its type.
    pub ty: ArgType,
    /// The default value as text (checked by `kiln configure`); `None`
    /// makes the argument required.
    pub default: Option<&'static str>,
    /// One line of documentation, shown by `--help` (may be empty).
    pub doc: &'static str,
}

/// The kinds of devices that are attached to a host resource by a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A network interface: `--net:NAME=IFACE`, `--net-mac:NAME=MAC`.
    Net,
    /// A block device: `--block:NAME=PATH`, `--block-sector-size:NAME=N`.
    Block,
}

/// A device that needs a host resource given on the command line.
#[derive(Debug, Clone, Copy)]
pub struct DeviceSpec {
    /// The device's name in `unikernel.toml`.
    pub name: &'static str,
    /// Its kind.
    pub kind: DeviceKind,
}

/// Everything the parser needs to know about a unikernel.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The unikernel's name, for the usage line.
    pub program: &'static str,
    /// The unikernel's one-line description (may be empty).
    pub doc: &'static str,
    /// Its runtime arguments.
    pub args: &'static [ArgSpec],
    /// Its devices that are attached by flags.
    pub devices: &'static [DeviceSpec],
}

/// The host interface a net device is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAttach {
    /// The host interface (a tap device on unix and hvt).
    pub iface: String,
    /// The MAC address to use, if `--net-mac` was given.
    pub mac: Option<MacAddress>,
}

/// The host file a block device is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockAttach {
    /// The path of the backing file.
    pub path: String,
    /// The sector size in bytes.
    pub sector_size: u32,
}

/// Why the command line was refused. `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    /// A flag that names no argument and no device flag.
    Unknown(String),
    /// A word that is not a flag.
    Positional(String),
    /// A device flag naming a device that does not exist or has another kind.
    UnknownDevice {
        /// The flag as given, without its value.
        flag: String,
        /// `net` or `block`.
        kind: &'static str,
        /// The device name in the flag.
        name: String,
        /// `; its net devices: a, b`, or empty.
        known: String,
    },
    /// A flag that needs a value and got none.
    MissingValue(String),
    /// A value that does not parse as the flag's type.
    InvalidValue {
        /// The flag, with its `--`.
        flag: String,
        /// The value as given.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// A flag given twice.
    Repeated(String),
    /// A required argument that was not given.
    MissingArgument {
        /// The flag, with its `--`.
        flag: String,
        /// Its type.
        ty: ArgType,
        /// ` (the doc line)`, or empty.
        doc: String,
    },
    /// A device that was not attached.
    MissingDevice {
        /// `net` or `block`.
        kind: &'static str,
        /// The device's name.
        name: String,
        /// `IFACE` or `PATH`.
        what: &'static str,
    },
    /// The generated code asked for a value that does not exist or has
    /// another type (a bug in code generation, never user input).
    Internal(usize),
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::Unknown(flag) => write!(
                f,
                "unknown argument '{flag}'; hint: see --help for the accepted arguments"
            ),
            ArgsError::Positional(word) => write!(
                f,
                "unexpected argument '{word}'; hint: arguments are flags like --name=value"
            ),
            ArgsError::UnknownDevice {
                flag,
                kind,
                name,
                known,
            } => write!(
                f,
                "{flag}: the unikernel has no {kind} device named '{name}'{known}"
            ),
            ArgsError::MissingValue(flag) => {
                write!(f, "missing value for {flag}; hint: write {flag}=VALUE")
            }
            ArgsError::InvalidValue {
                flag,
                value,
                expected,
            } => write!(f, "invalid value '{value}' for {flag}: expected {expected}"),
            ArgsError::Repeated(flag) => write!(f, "{flag} given more than once"),
            ArgsError::MissingArgument { flag, ty, doc } => {
                write!(f, "missing required argument {flag} <{ty}>{doc}")
            }
            ArgsError::MissingDevice { kind, name, what } => write!(
                f,
                "the {kind} device '{name}' is not attached; hint: give --{kind}:{name}={what}"
            ),
            ArgsError::Internal(index) => write!(
                f,
                "internal error: runtime argument #{index} is missing or of another type"
            ),
        }
    }
}

impl core::error::Error for ArgsError {}

/// The parsed command line.
#[derive(Debug)]
pub struct Parsed {
    values: Vec<Option<Value>>,
    nets: Vec<Option<NetAttach>>,
    blocks: Vec<Option<BlockAttach>>,
    log: Option<LogFilter>,
}

impl Parsed {
    /// The `--log` filter, if given (the generated `main` then uses
    /// [`LogFilter::application`]).
    pub fn log_filter(&self) -> Option<&LogFilter> {
        self.log.as_ref()
    }

    /// Takes the value of argument `index` (its position in
    /// [`Spec::args`]) as a `T`.
    pub fn take<T: FromValue>(&mut self, index: usize) -> Result<T, ArgsError> {
        self.values
            .get_mut(index)
            .and_then(Option::take)
            .and_then(T::from_value)
            .ok_or(ArgsError::Internal(index))
    }

    /// The attachment of device `index` (its position in
    /// [`Spec::devices`]), which must be a net device.
    pub fn net(&self, index: usize) -> Result<&NetAttach, ArgsError> {
        self.nets
            .get(index)
            .and_then(Option::as_ref)
            .ok_or(ArgsError::Internal(index))
    }

    /// The attachment of device `index` (its position in
    /// [`Spec::devices`]), which must be a block device.
    pub fn block(&self, index: usize) -> Result<&BlockAttach, ArgsError> {
        self.blocks
            .get(index)
            .and_then(Option::as_ref)
            .ok_or(ArgsError::Internal(index))
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Outcome {
    /// Run with these values.
    Run(Parsed),
    /// Print [`usage`] and exit successfully.
    Help,
}

/// Which flag a word of the command line is.
enum Flag {
    Arg(usize),
    Net(usize),
    NetMac(usize),
    Block(usize),
    SectorSize(usize),
}

fn device_index(spec: &Spec, flag: &str, kind: DeviceKind, name: &str) -> Result<usize, ArgsError> {
    if let Some(i) = spec
        .devices
        .iter()
        .position(|d| d.kind == kind && d.name == name)
    {
        return Ok(i);
    }
    let kind_name = match kind {
        DeviceKind::Net => "net",
        DeviceKind::Block => "block",
    };
    let names: Vec<&str> = spec
        .devices
        .iter()
        .filter(|d| d.kind == kind)
        .map(|d| d.name)
        .collect();
    let known = if names.is_empty() {
        format!("; hint: it has no {kind_name} devices at all")
    } else {
        format!("; hint: its {kind_name} devices: {}", names.join(", "))
    };
    Err(ArgsError::UnknownDevice {
        flag: flag.to_string(),
        kind: kind_name,
        name: name.to_string(),
        known,
    })
}

fn classify(spec: &Spec, flag: &str) -> Result<Flag, ArgsError> {
    let Some(body) = flag.strip_prefix("--") else {
        return Err(ArgsError::Positional(flag.to_string()));
    };
    if let Some((prefix, name)) = body.split_once(':') {
        return match prefix {
            "net" => device_index(spec, flag, DeviceKind::Net, name).map(Flag::Net),
            "net-mac" => device_index(spec, flag, DeviceKind::Net, name).map(Flag::NetMac),
            "block" => device_index(spec, flag, DeviceKind::Block, name).map(Flag::Block),
            "block-sector-size" => {
                device_index(spec, flag, DeviceKind::Block, name).map(Flag::SectorSize)
            }
            _ => Err(ArgsError::Unknown(flag.to_string())),
        };
    }
    match spec.args.iter().position(|a| a.name == body) {
        Some(i) => Ok(Flag::Arg(i)),
        None => Err(ArgsError::Unknown(flag.to_string())),
    }
}

fn invalid(flag: &str, value: &str, expected: &'static str) -> ArgsError {
    ArgsError::InvalidValue {
        flag: flag.to_string(),
        value: value.to_string(),
        expected,
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, flag: &str) -> Result<(), ArgsError> {
    if slot.is_some() {
        return Err(ArgsError::Repeated(flag.to_string()));
    }
    *slot = Some(value);
    Ok(())
}

/// Parses `argv` (without the program name) against `spec`.
pub fn parse<'a, I>(spec: &Spec, argv: I) -> Result<Outcome, ArgsError>
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    let argv = argv.into_iter();
    if argv.clone().any(|a| a == "--help" || a == "-h") {
        return Ok(Outcome::Help);
    }
    let mut values: Vec<Option<Value>> = spec.args.iter().map(|_| None).collect();
    let mut ifaces: Vec<Option<String>> = spec.devices.iter().map(|_| None).collect();
    let mut macs: Vec<Option<MacAddress>> = spec.devices.iter().map(|_| None).collect();
    let mut paths: Vec<Option<String>> = spec.devices.iter().map(|_| None).collect();
    let mut sectors: Vec<Option<u32>> = spec.devices.iter().map(|_| None).collect();

    let mut log = None;
    let mut argv = argv.peekable();
    while let Some(word) = argv.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (word, None),
        };
        if flag == "--log" {
            let value = match inline {
                Some(v) => v,
                None => match argv.peek() {
                    Some(next) if !next.starts_with("--") => argv.next().unwrap_or_default(),
                    _ => return Err(ArgsError::MissingValue(flag.to_string())),
                },
            };
            let filter = LogFilter::parse(value).map_err(|_| invalid(flag, value, LOG_EXPECTED))?;
            set_once(&mut log, filter, flag)?;
            continue;
        }
        let kind = classify(spec, flag)?;
        let is_bool =
            matches!(kind, Flag::Arg(i) if spec.args.get(i).is_some_and(|a| a.ty == ArgType::Bool));
        let value = match inline {
            Some(v) => v,
            None if is_bool => "true",
            None => match argv.peek() {
                Some(next) if !next.starts_with("--") => argv.next().unwrap_or_default(),
                _ => return Err(ArgsError::MissingValue(flag.to_string())),
            },
        };
        match kind {
            Flag::Arg(i) => {
                let (Some(arg), Some(slot)) = (spec.args.get(i), values.get_mut(i)) else {
                    return Err(ArgsError::Internal(i));
                };
                let parsed = arg
                    .ty
                    .parse(value)
                    .ok_or_else(|| invalid(flag, value, arg.ty.expected()))?;
                set_once(slot, parsed, flag)?;
            }
            Flag::Net(i) | Flag::Block(i) => {
                let slots = if matches!(kind, Flag::Net(_)) {
                    &mut ifaces
                } else {
                    &mut paths
                };
                if value.is_empty() {
                    return Err(ArgsError::MissingValue(flag.to_string()));
                }
                let slot = slots.get_mut(i).ok_or(ArgsError::Internal(i))?;
                set_once(slot, value.to_string(), flag)?;
            }
            Flag::NetMac(i) => {
                let mac = MacAddress::parse(value)
                    .filter(MacAddress::is_unicast)
                    .ok_or_else(|| {
                        invalid(flag, value, "a unicast MAC address like 02:00:00:00:00:01")
                    })?;
                let slot = macs.get_mut(i).ok_or(ArgsError::Internal(i))?;
                set_once(slot, mac, flag)?;
            }
            Flag::SectorSize(i) => {
                let size = value
                    .parse::<u32>()
                    .ok()
                    .filter(|s| s.is_power_of_two() && *s >= DEFAULT_SECTOR_SIZE)
                    .ok_or_else(|| invalid(flag, value, "a power of two of at least 512"))?;
                let slot = sectors.get_mut(i).ok_or(ArgsError::Internal(i))?;
                set_once(slot, size, flag)?;
            }
        }
    }

    for (arg, slot) in spec.args.iter().zip(values.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        let flag = format!("--{}", arg.name);
        match arg.default {
            Some(text) => {
                let value = arg
                    .ty
                    .parse(text)
                    .ok_or_else(|| invalid(&flag, text, arg.ty.expected()))?;
                *slot = Some(value);
            }
            None => {
                return Err(ArgsError::MissingArgument {
                    flag,
                    ty: arg.ty,
                    doc: if arg.doc.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", arg.doc)
                    },
                });
            }
        }
    }

    let mut nets = Vec::with_capacity(spec.devices.len());
    let mut blocks = Vec::with_capacity(spec.devices.len());
    for (i, device) in spec.devices.iter().enumerate() {
        let (mut net, mut block) = (None, None);
        match device.kind {
            DeviceKind::Net => {
                let iface = ifaces.get_mut(i).and_then(Option::take).ok_or_else(|| {
                    ArgsError::MissingDevice {
                        kind: "net",
                        name: device.name.to_string(),
                        what: "IFACE",
                    }
                })?;
                let mac = macs.get_mut(i).and_then(Option::take);
                net = Some(NetAttach { iface, mac });
            }
            DeviceKind::Block => {
                let path = paths.get_mut(i).and_then(Option::take).ok_or_else(|| {
                    ArgsError::MissingDevice {
                        kind: "block",
                        name: device.name.to_string(),
                        what: "PATH",
                    }
                })?;
                let sector_size = sectors
                    .get_mut(i)
                    .and_then(Option::take)
                    .unwrap_or(DEFAULT_SECTOR_SIZE);
                block = Some(BlockAttach { path, sector_size });
            }
        }
        nets.push(net);
        blocks.push(block);
    }
    Ok(Outcome::Run(Parsed {
        values,
        nets,
        blocks,
        log,
    }))
}

/// The `--help` text: the description, the arguments with their types,
/// docs and defaults, and the device flags.
pub fn usage(spec: &Spec) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    for arg in spec.args {
        let left = if arg.ty == ArgType::Bool {
            format!("--{}[=<bool>]", arg.name)
        } else {
            format!("--{} <{}>", arg.name, arg.ty)
        };
        let mut right = arg.doc.to_string();
        match arg.default {
            Some(d) if arg.ty == ArgType::String => {
                push_note(&mut right, &format!("[default: \"{d}\"]"))
            }
            Some(d) => push_note(&mut right, &format!("[default: {d}]")),
            None => push_note(&mut right, "[required]"),
        }
        rows.push((left, right));
    }
    for device in spec.devices {
        let name = device.name;
        match device.kind {
            DeviceKind::Net => {
                rows.push((
                    format!("--net:{name}=IFACE"),
                    format!("host tap interface for the net device '{name}' [required]"),
                ));
                rows.push((
                    format!("--net-mac:{name}=MAC"),
                    format!("MAC address of '{name}' [default: chosen by the host]"),
                ));
            }
            DeviceKind::Block => {
                rows.push((
                    format!("--block:{name}=PATH"),
                    format!("file backing the block device '{name}' [required]"),
                ));
                rows.push((
                    format!("--block-sector-size:{name}=N"),
                    format!("sector size of '{name}' in bytes [default: {DEFAULT_SECTOR_SIZE}]"),
                ));
            }
        }
    }
    rows.push((
        "--log <filter>".to_string(),
        "log levels kept: a level (off, error, warn, info, debug, trace) and TARGET=LEVEL \
         pairs, comma-separated, e.g. info,kiln_net=debug [default: the application info, the rest warn]"
            .to_string(),
    ));
    rows.push(("--help".to_string(), "print this help and exit".to_string()));
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);

    let mut out = String::new();
    if spec.doc.is_empty() {
        let _ = writeln!(out, "{}", spec.program);
    } else {
        let _ = writeln!(out, "{}: {}", spec.program, spec.doc);
    }
    let _ = writeln!(out, "\nUsage: {} [OPTIONS]\n\nOptions:", spec.program);
    for (left, right) in rows {
        let _ = writeln!(out, "  {left:width$}  {right}");
    }
    out
}

fn push_note(text: &mut String, note: &str) {
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(note);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    static SPEC: Spec = Spec {
        program: "demo",
        doc: "A demonstration",
        args: &[
            ArgSpec {
                name: "times",
                ty: ArgType::U32,
                default: Some("4"),
                doc: "How many times",
            },
            ArgSpec {
                name: "verbose",
                ty: ArgType::Bool,
                default: Some("false"),
                doc: "",
            },
            ArgSpec {
                name: "ipv4-gateway",
                ty: ArgType::Ipv4,
                default: None,
                doc: "The gateway",
            },
            ArgSpec {
                name: "offset",
                ty: ArgType::I64,
                default: Some("0"),
                doc: "",
            },
        ],
        devices: &[
            DeviceSpec {
                name: "service",
                kind: DeviceKind::Net,
            },
            DeviceSpec {
                name: "disk",
                kind: DeviceKind::Block,
            },
        ],
    };

    const DEVICES: [&str; 2] = ["--net:service=tap0", "--block:disk=/tmp/d.img"];

    fn run(extra: &[&str]) -> Result<Parsed, ArgsError> {
        let mut argv = vec![];
        argv.extend_from_slice(extra);
        match parse(&SPEC, argv.iter().copied())? {
            Outcome::Run(p) => Ok(p),
            Outcome::Help => panic!("unexpected help"),
        }
    }

    fn with_devices(extra: &[&str]) -> Vec<&'static str> {
        let mut v: Vec<&str> = DEVICES.to_vec();
        for e in extra {
            v.push(Box::leak(e.to_string().into_boxed_str()));
        }
        v
    }

    extern crate std;
    use std::boxed::Box;

    #[test]
    fn defaults_fill_in_and_both_value_forms_work() {
        let argv = with_devices(&["--ipv4-gateway", "10.0.0.1", "--offset=-7"]);
        let mut p = run(&argv).unwrap();
        assert_eq!(p.take::<u32>(0), Ok(4));
        assert_eq!(p.take::<bool>(1), Ok(false));
        assert_eq!(p.take::<Ipv4Addr>(2), Ok(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(p.take::<i64>(3), Ok(-7));
        // A value is taken once.
        assert_eq!(p.take::<u32>(0), Err(ArgsError::Internal(0)));
        let net = p.net(0).unwrap();
        assert_eq!(net.iface, "tap0");
        assert_eq!(net.mac, None);
        assert_eq!(p.block(1).unwrap().sector_size, 512);
        assert!(p.net(1).is_err());
    }

    #[test]
    fn bool_flags() {
        let mut p = run(&with_devices(&["--ipv4-gateway=1.2.3.4", "--verbose"])).unwrap();
        assert_eq!(p.take::<bool>(1), Ok(true));
        let mut p = run(&with_devices(&[
            "--ipv4-gateway=1.2.3.4",
            "--verbose=false",
        ]))
        .unwrap();
        assert_eq!(p.take::<bool>(1), Ok(false));
        let err = run(&with_devices(&["--ipv4-gateway=1.2.3.4", "--verbose=yes"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value 'yes' for --verbose: expected true or false (bool)"
        );
        // `--flag value` is not a bool form: the value is a stray word.
        let err = run(&with_devices(&[
            "--ipv4-gateway=1.2.3.4",
            "--verbose",
            "true",
        ]))
        .unwrap_err();
        assert_eq!(err, ArgsError::Positional("true".into()));
    }

    #[test]
    fn invalid_values_name_flag_and_type() {
        let err = run(&with_devices(&["--ipv4-gateway=1.2.3.4", "--times=x"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value 'x' for --times: expected an unsigned integer (u32)"
        );
        let err = run(&with_devices(&["--ipv4-gateway=fe80::1"])).unwrap_err();
        assert!(
            err.to_string().contains("expected an IPv4 address"),
            "{err}"
        );
        let err = run(&with_devices(&["--ipv4-gateway=1.2.3.4", "--times=-1"])).unwrap_err();
        assert!(matches!(err, ArgsError::InvalidValue { .. }));
        let err = run(&with_devices(&[
            "--ipv4-gateway=1.2.3.4",
            "--times=4294967296",
        ]))
        .unwrap_err();
        assert!(matches!(err, ArgsError::InvalidValue { .. }));
    }

    #[test]
    fn unknown_positional_repeated_missing() {
        let err = run(&with_devices(&["--ipv4-gateway=1.2.3.4", "--nope"])).unwrap_err();
        assert_eq!(err, ArgsError::Unknown("--nope".into()));
        let err = run(&with_devices(&["--ipv4-gateway=1.2.3.4", "stray"])).unwrap_err();
        assert_eq!(err, ArgsError::Positional("stray".into()));
        let err = run(&with_devices(&[
            "--ipv4-gateway=1.2.3.4",
            "--times=1",
            "--times",
            "2",
        ]))
        .unwrap_err();
        assert_eq!(err.to_string(), "--times given more than once");
        let err = run(&with_devices(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required argument --ipv4-gateway <ipv4> (The gateway)"
        );
        let err = run(&with_devices(&["--ipv4-gateway=1.2.3.4", "--times"])).unwrap_err();
        assert_eq!(err, ArgsError::MissingValue("--times".into()));
        let err = run(&with_devices(&["--times", "--ipv4-gateway=1.2.3.4"])).unwrap_err();
        assert_eq!(err, ArgsError::MissingValue("--times".into()));
    }

    #[test]
    fn device_flags() {
        let err = run(&["--ipv4-gateway=1.2.3.4", "--block:disk=/x"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the net device 'service' is not attached; hint: give --net:service=IFACE"
        );
        let err = run(&with_devices(&[
            "--ipv4-gateway=1.2.3.4",
            "--net:other=tap1",
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--net:other: the unikernel has no net device named 'other'; hint: its net devices: service"
        );
        let err = run(&with_devices(&[
            "--ipv4-gateway=1.2.3.4",
            "--block:service=x",
        ]))
        .unwrap_err();
        assert!(matches!(
            err,
            ArgsError::UnknownDevice { kind: "block", .. }
        ));
        let mut argv = with_devices(&["--ipv4-gateway=1.2.3.4"]);
        argv.extend([
            "--net-mac:service=02:00:00:00:00:05",
            "--block-sector-size:disk=4096",
        ]);
        let p = run(&argv).unwrap();
        assert_eq!(
            p.net(0).unwrap().mac.map(|m| m.to_string()).as_deref(),
            Some("02:00:00:00:00:05")
        );
        assert_eq!(p.block(1).unwrap().sector_size, 4096);
        let mut argv = with_devices(&["--ipv4-gateway=1.2.3.4"]);
        argv.push("--block-sector-size:disk=1000");
        assert!(matches!(run(&argv), Err(ArgsError::InvalidValue { .. })));
        let mut argv = with_devices(&["--ipv4-gateway=1.2.3.4"]);
        argv.push("--net-mac:service=ff:ff:ff:ff:ff:ff");
        assert!(matches!(run(&argv), Err(ArgsError::InvalidValue { .. })));
        let mut argv = with_devices(&["--ipv4-gateway=1.2.3.4"]);
        argv.push("--net:service=tap9");
        assert_eq!(
            run(&argv).unwrap_err(),
            ArgsError::Repeated("--net:service".into())
        );
    }

    #[test]
    fn log_is_built_in() {
        let run = |argv: &[&str]| {
            let mut argv = with_devices(argv);
            argv.push("--ipv4-gateway=1.2.3.4");
            match parse(&SPEC, argv.iter().copied()) {
                Ok(Outcome::Run(p)) => Ok(p.log_filter().cloned()),
                Ok(Outcome::Help) => panic!("unexpected help"),
                Err(e) => Err(e),
            }
        };
        assert_eq!(run(&[]).unwrap(), None);
        let f = run(&["--log=warn,kiln_net=debug"]).unwrap().unwrap();
        assert_eq!(f.level("kiln_net::stack"), LevelFilter::Debug);
        assert_eq!(f.level("www"), LevelFilter::Warn);
        assert_eq!(
            run(&["--log", "off"]).unwrap().unwrap().max_level(),
            LevelFilter::Off
        );
        assert_eq!(
            run(&["--log=loud"]).unwrap_err().to_string(),
            format!("invalid value 'loud' for --log: expected {LOG_EXPECTED}")
        );
        assert_eq!(
            run(&["--log=info", "--log=warn"]).unwrap_err(),
            ArgsError::Repeated("--log".into())
        );
        assert_eq!(
            run(&["--log"]).unwrap_err(),
            ArgsError::MissingValue("--log".into())
        );
        assert!(usage(&SPEC).contains("--log <filter>"));
    }

    #[test]
    fn help_wins_and_lists_everything() {
        assert!(matches!(
            parse(&SPEC, ["--times=x", "--help"]),
            Ok(Outcome::Help)
        ));
        let text = usage(&SPEC);
        assert!(text.starts_with("demo: A demonstration\n"), "{text}");
        assert!(text.contains("--times <u32>"), "{text}");
        assert!(text.contains("How many times [default: 4]"), "{text}");
        assert!(text.contains("--ipv4-gateway <ipv4>"), "{text}");
        assert!(text.contains("The gateway [required]"), "{text}");
        assert!(text.contains("--verbose[=<bool>]"), "{text}");
        assert!(text.contains("--net:service=IFACE"), "{text}");
        assert!(text.contains("--block-sector-size:disk=N"), "{text}");
    }

    #[test]
    fn every_type_parses_and_rejects() {
        let good = [
            (ArgType::Bool, "true"),
            (ArgType::U8, "255"),
            (ArgType::U16, "65535"),
            (ArgType::U32, "7"),
            (ArgType::U64, "18446744073709551615"),
            (ArgType::I32, "-5"),
            (ArgType::I64, "-9"),
            (ArgType::String, ""),
            (ArgType::Ip, "::1"),
            (ArgType::Ipv4, "127.0.0.1"),
            (ArgType::Ipv6, "fe80::1"),
        ];
        for (ty, text) in good {
            assert!(ty.parse(text).is_some(), "{ty} {text}");
            assert_eq!(ArgType::from_name(ty.name()), Some(ty));
        }
        let bad = [
            (ArgType::Bool, "1"),
            (ArgType::U8, "256"),
            (ArgType::U16, "-1"),
            (ArgType::I32, "2147483648"),
            (ArgType::Ip, "1.2.3"),
            (ArgType::Ipv6, "1.2.3.4"),
        ];
        for (ty, text) in bad {
            assert!(ty.parse(text).is_none(), "{ty} {text}");
        }
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use alloc::vec::Vec;

    static SPEC: Spec = Spec {
        program: "p",
        doc: "",
        args: &[
            ArgSpec {
                name: "n",
                ty: ArgType::U8,
                default: None,
                doc: "",
            },
            ArgSpec {
                name: "b",
                ty: ArgType::Bool,
                default: Some("false"),
                doc: "",
            },
            ArgSpec {
                name: "ip",
                ty: ArgType::Ip,
                default: Some("::"),
                doc: "",
            },
        ],
        devices: &[
            DeviceSpec {
                name: "net0",
                kind: DeviceKind::Net,
            },
            DeviceSpec {
                name: "d",
                kind: DeviceKind::Block,
            },
        ],
    };

    /// Every combination of up to three words from a set of awkward ones
    /// parses to a value or an error, never a panic, and a successful
    /// parse yields every value the spec asks for.
    #[test]
    fn awkward_command_lines_never_panic() {
        let words = [
            "--n",
            "--n=",
            "--n=256",
            "--n=7",
            "7",
            "--b",
            "--b=maybe",
            "--ip",
            "::1",
            "--ip=1.2.3.4",
            "--net:net0=tap0",
            "--net:=x",
            "--net:",
            "--net-mac:net0=zz",
            "--block:d=/x",
            "--block-sector-size:d=0",
            "--block-sector-size:d=4096",
            "--",
            "-",
            "",
            "=",
            "--=",
            "--:",
            "--n=\u{fffd}",
            "--help=no",
        ];
        let base = ["--net:net0=tap0", "--block:d=/x"];
        for a in words {
            for b in words {
                for c in words {
                    let argv: Vec<&str> = base.iter().copied().chain([a, b, c]).collect();
                    if let Ok(Outcome::Run(mut p)) = parse(&SPEC, argv.iter().copied()) {
                        assert!(p.take::<u8>(0).is_ok(), "{argv:?}");
                        assert!(p.take::<bool>(1).is_ok(), "{argv:?}");
                        assert!(p.take::<IpAddr>(2).is_ok(), "{argv:?}");
                        assert!(p.net(0).is_ok() && p.block(1).is_ok(), "{argv:?}");
                    }
                }
            }
        }
    }
}
