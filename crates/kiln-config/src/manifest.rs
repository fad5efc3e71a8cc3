//! Parsing `unikernel.toml` into a [`Manifest`], keeping the span of every
//! value so that later checks can point at it. The format is described in
//! `UNIKERNEL_TOML.md` at the root of this crate.

use std::ops::Range;

use kiln_args::ArgType;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Located, SourceFile};
use crate::model::{DeviceType, Impl, RUST_KEYWORDS};

/// A value and the byte range of `unikernel.toml` it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Range<usize>,
}

impl<T> At<T> {
    fn new(value: T, span: Range<usize>) -> At<T> {
        At { value, span }
    }
}

/// A parsed `unikernel.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file, for diagnostics.
    pub file: SourceFile,
    /// `unikernel.name`: the name of the image (`dist/NAME.TARGET`).
    pub name: At<String>,
    /// `unikernel.entry`: the path of the entry function in the crate.
    pub entry: At<String>,
    /// `unikernel.doc`: a one-line description.
    pub doc: Option<String>,
    /// The span of the `[unikernel]` key, for errors about the whole file.
    pub unikernel_span: Range<usize>,
    /// The devices, in the order of the file.
    pub devices: Vec<DeviceDecl>,
    /// The runtime arguments, in the order of the file.
    pub arguments: Vec<ArgDecl>,
}

/// A `[devices.NAME]` table.
#[derive(Debug, Clone)]
pub struct DeviceDecl {
    /// The device's name (the table's key).
    pub name: At<String>,
    /// `type`.
    pub ty: At<DeviceType>,
    /// `impl`, if given.
    pub imp: Option<At<Impl>>,
    /// The dependency keys given (`net = "..."`, `block = "..."`).
    pub deps: Vec<DepDecl>,
    /// `source` (baked read-only stores).
    pub source: Option<At<String>>,
}

/// A dependency of a device on another, by name.
#[derive(Debug, Clone)]
pub struct DepDecl {
    /// The key (`net`, `block`).
    pub key: &'static str,
    /// The type the named device must have.
    pub ty: DeviceType,
    /// The name of the device depended on; for a defaulted key, the span
    /// is the dependent device's name.
    pub target: At<String>,
    /// Whether the key was written (or defaulted).
    pub explicit: bool,
}

/// An `[arguments.NAME]` table.
#[derive(Debug, Clone)]
pub struct ArgDecl {
    /// The argument's name (the flag without `--`).
    pub name: At<String>,
    /// `type`.
    pub ty: At<ArgType>,
    /// `default`, as the text the runtime parser accepts; `None` if the
    /// argument is required.
    pub default: Option<At<String>>,
    /// `doc`.
    pub doc: Option<String>,
}

impl DeviceDecl {
    /// The parameter name of the entry function that receives this device.
    pub fn param(&self) -> String {
        param_name(&self.name.value)
    }
}

impl ArgDecl {
    /// The parameter name of the entry function that receives this argument.
    pub fn param(&self) -> String {
        param_name(&self.name.value)
    }
}

/// The Rust parameter name for a device or argument name (`ipv4-gateway`
/// becomes `ipv4_gateway`).
pub fn param_name(name: &str) -> String {
    name.replace('-', "_")
}

type Table<'i> = DeTable<'i>;
type Entry<'a, 'i> = (
    &'a Spanned<std::borrow::Cow<'i, str>>,
    &'a Spanned<DeValue<'i>>,
);

struct Parser<'f> {
    file: &'f SourceFile,
}

impl Parser<'_> {
    fn err(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Located {
        Located::new(self.file, span, message, label)
    }

    fn table<'a, 'i>(&self, entry: Entry<'a, 'i>, what: &str) -> Result<&'a Table<'i>, Located> {
        let (key, value) = entry;
        value.get_ref().as_table().ok_or_else(|| {
            self.err(
                value.span(),
                format!("`{}` must be a table", key.get_ref()),
                format!("found {}", value.get_ref().type_str()),
            )
            .with_help(format!("write it as a table header: [{what}]"))
        })
    }

    fn string(&self, entry: Entry<'_, '_>, example: &str) -> Result<At<String>, Located> {
        let (key, value) = entry;
        match value.get_ref().as_str() {
            Some(s) => Ok(At::new(s.to_string(), value.span())),
            None => Err(self
                .err(
                    value.span(),
                    format!("`{}` must be a string", key.get_ref()),
                    format!("found {}", value.get_ref().type_str()),
                )
                .with_help(format!("for example: {} = \"{example}\"", key.get_ref()))),
        }
    }

    fn unknown_key(
        &self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        in_what: &str,
        known: &[&str],
    ) -> Located {
        self.err(
            key.span(),
            format!("unknown key `{}` in {in_what}", key.get_ref()),
            "not a known key",
        )
        .with_help(format!("the keys of {in_what} are: {}", known.join(", ")))
    }
}

/// Checks a device or argument name: a letter, then letters, digits, `_`
/// or `-`, and not a Rust keyword.
fn check_item_name(p: &Parser<'_>, name: &At<String>, what: &str) -> Result<(), Located> {
    let n = &name.value;
    let ok = n.starts_with(|c: char| c.is_ascii_lowercase())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        return Err(p
            .err(name.span.clone(), format!("invalid {what} name `{n}`"), "invalid name")
            .with_help(format!(
                "a {what} name starts with a lowercase letter and has only lowercase letters, digits, `_` and `-`"
            )));
    }
    let param = param_name(n);
    if RUST_KEYWORDS.contains(&param.as_str()) {
        return Err(p
            .err(
                name.span.clone(),
                format!("{what} name `{n}` is a Rust keyword"),
                "cannot be a parameter name",
            )
            .with_help(format!("the entry function receives the {what} as a parameter named after it; pick another name")));
    }
    if what == "argument" && n == "help" {
        return Err(p
            .err(
                name.span.clone(),
                "argument name `help` is reserved",
                "reserved",
            )
            .with_help("--help prints the unikernel's usage; pick another name"));
    }
    if what == "argument" && n == "log" {
        return Err(p
            .err(
                name.span.clone(),
                "argument name `log` is reserved",
                "reserved",
            )
            .with_help(
                "--log sets the levels of the log records every unikernel keeps; pick another name",
            ));
    }
    Ok(())
}

/// Parses the text of `unikernel.toml`.
pub fn parse(file: &SourceFile) -> Result<Manifest, Located> {
    let p = Parser { file };
    let root = DeTable::parse(&file.text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        p.err(span, format!("invalid TOML: {message}"), message.clone())
            .with_help(if message.contains("duplicate") {
                "every device and argument name may be declared only once"
            } else {
                "see https://toml.io for the syntax"
            })
    })?;

    let mut unikernel = None;
    let mut devices_table = None;
    let mut arguments_table = None;
    for entry in root.get_ref().iter() {
        match entry.0.get_ref().as_ref() {
            "unikernel" => unikernel = Some((entry.0.span(), p.table(entry, "unikernel")?)),
            "devices" => devices_table = Some(p.table(entry, "devices.NAME")?),
            "arguments" => arguments_table = Some(p.table(entry, "arguments.NAME")?),
            _ => {
                return Err(p.unknown_key(
                    entry.0,
                    "unikernel.toml",
                    &["[unikernel]", "[devices.NAME]", "[arguments.NAME]"],
                ));
            }
        }
    }
    let Some((unikernel_span, unikernel)) = unikernel else {
        return Err(p
            .err(
                0..0,
                "unikernel.toml has no [unikernel] table",
                "expected [unikernel] here",
            )
            .with_help("start the file with:\n[unikernel]\nname = \"hello\"\nentry = \"start\""));
    };

    let mut name = None;
    let mut entry_fn = None;
    let mut doc = None;
    for entry in unikernel.iter() {
        match entry.0.get_ref().as_ref() {
            "name" => name = Some(p.string(entry, "hello")?),
            "entry" => entry_fn = Some(p.string(entry, "start")?),
            "doc" => doc = Some(p.string(entry, "What this unikernel does")?.value),
            _ => return Err(p.unknown_key(entry.0, "[unikernel]", &["name", "entry", "doc"])),
        }
    }
    let name = name.ok_or_else(|| {
        p.err(
            unikernel_span.clone(),
            "[unikernel] has no `name`",
            "in this table",
        )
        .with_help("add a name, used for the image: name = \"hello\"")
    })?;
    let unikernel_name_ok = name.value.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !unikernel_name_ok {
        return Err(p
            .err(name.span.clone(), format!("invalid unikernel name `{}`", name.value), "invalid name")
            .with_help("a unikernel name starts with a lowercase letter and has only lowercase letters, digits and `-`"));
    }
    let entry_fn = entry_fn.ok_or_else(|| {
        p.err(
            unikernel_span.clone(),
            "[unikernel] has no `entry`",
            "in this table",
        )
        .with_help("name the async entry function of the crate: entry = \"start\"")
    })?;
    let entry_ok = !entry_fn.value.is_empty()
        && entry_fn.value.split("::").all(|seg| {
            seg.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if !entry_ok {
        return Err(p
            .err(
                entry_fn.span.clone(),
                format!("invalid entry path `{}`", entry_fn.value),
                "not a Rust path",
            )
            .with_help(
                "name a function at the crate root (\"start\") or in a module (\"app::start\")",
            ));
    }

    let mut devices = Vec::new();
    for entry in devices_table.into_iter().flat_map(|t| t.iter()) {
        devices.push(parse_device(&p, entry)?);
    }
    let mut arguments = Vec::new();
    for entry in arguments_table.into_iter().flat_map(|t| t.iter()) {
        arguments.push(parse_argument(&p, entry)?);
    }
    Ok(Manifest {
        file: file.clone(),
        name,
        entry: entry_fn,
        doc,
        unikernel_span,
        devices,
        arguments,
    })
}

/// A `[devices.NAME]` or `[arguments.NAME]` entry (`kind` is `device` or
/// `argument`): its checked name and its table.
fn item<'a, 'i>(
    p: &Parser<'_>,
    entry: Entry<'a, 'i>,
    kind: &str,
) -> Result<(At<String>, &'a Table<'i>), Located> {
    let name = At::new(entry.0.get_ref().to_string(), entry.0.span());
    check_item_name(p, &name, kind)?;
    let table = p.table(entry, &format!("{kind}s.{}", name.value))?;
    Ok((name, table))
}

/// The `type` of `kind` item `name`: `text`, one of `types`' names.
fn item_type<T: Copy>(
    p: &Parser<'_>,
    kind: &str,
    name: &At<String>,
    text: At<String>,
    types: &[T],
    type_name: fn(T) -> &'static str,
) -> Result<At<T>, Located> {
    match types.iter().copied().find(|&t| type_name(t) == text.value) {
        Some(t) => Ok(At::new(t, text.span)),
        None => Err(p
            .err(
                text.span.clone(),
                format!(
                    "unknown {kind} type `{}` for {kind} `{}`",
                    text.value, name.value
                ),
                format!("unknown {kind} type"),
            )
            .with_help(format!(
                "the {kind} types are: {}",
                type_names(types, type_name)
            ))),
    }
}

/// The error for `kind` item `name` declared without a `type`.
fn missing_type<T: Copy>(
    p: &Parser<'_>,
    kind: &str,
    name: &At<String>,
    types: &[T],
    type_name: fn(T) -> &'static str,
) -> Located {
    p.err(
        name.span.clone(),
        format!("{kind} `{}` has no `type`", name.value),
        "declared here",
    )
    .with_help(format!(
        "add a type, one of: {}",
        type_names(types, type_name)
    ))
}

/// The names of `types`, comma-separated.
fn type_names<T: Copy>(types: &[T], type_name: fn(T) -> &'static str) -> String {
    types
        .iter()
        .map(|&t| type_name(t))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_device(p: &Parser<'_>, entry: Entry<'_, '_>) -> Result<DeviceDecl, Located> {
    let (name, table) = item(p, entry, "device")?;
    let ty_entry = table
        .iter()
        .find(|(k, _)| k.get_ref() == "type")
        .ok_or_else(|| missing_type(p, "device", &name, &DeviceType::ALL, DeviceType::name))?;
    let ty_name = p.string(ty_entry, "console")?;
    let ty = item_type(
        p,
        "device",
        &name,
        ty_name,
        &DeviceType::ALL,
        DeviceType::name,
    )?;

    let mut known: Vec<&str> = vec!["type"];
    if !ty.value.choices().is_empty() {
        known.push("impl");
    }
    known.extend(ty.value.dependency_keys().iter().map(|d| d.key));
    known.extend(ty.value.extra_keys());

    let mut imp = None;
    let mut deps = Vec::new();
    let mut source = None;
    for entry in table.iter() {
        let key = entry.0.get_ref().as_ref();
        if key == "type" {
            continue;
        }
        if !known.contains(&key) {
            return Err(p.unknown_key(entry.0, &format!("a {} device", ty.value), &known));
        }
        if key == "impl" {
            let choices: Vec<&str> = ty.value.choices().iter().map(|c| c.name()).collect();
            let text = p.string(entry, choices.first().copied().unwrap_or(""))?;
            let choice = Impl::from_name(&text.value)
                .filter(|i| ty.value.choices().contains(i))
                .ok_or_else(|| {
                    p.err(
                        text.span.clone(),
                        format!(
                            "unknown implementation `{}` for a {} device",
                            text.value, ty.value
                        ),
                        "unknown implementation",
                    )
                    .with_help(format!(
                        "the implementations of {} are: {}",
                        ty.value,
                        choices.join(", ")
                    ))
                })?;
            imp = Some(At::new(choice, text.span));
        } else if key == "source" {
            source = Some(p.string(entry, "htdocs")?);
        } else if let Some(dep) = ty.value.dependency_keys().iter().find(|d| d.key == key) {
            let target = p.string(entry, dep.default.unwrap_or("disk"))?;
            deps.push(DepDecl {
                key: dep.key,
                ty: dep.ty,
                target,
                explicit: true,
            });
        }
    }
    for dep in ty.value.dependency_keys() {
        if let (Some(default), false) = (dep.default, deps.iter().any(|d| d.key == dep.key)) {
            deps.push(DepDecl {
                key: dep.key,
                ty: dep.ty,
                target: At::new(default.to_string(), name.span.clone()),
                explicit: false,
            });
        }
    }
    Ok(DeviceDecl {
        name,
        ty,
        imp,
        deps,
        source,
    })
}

fn parse_argument(p: &Parser<'_>, entry: Entry<'_, '_>) -> Result<ArgDecl, Located> {
    let (name, table) = item(p, entry, "argument")?;
    let mut ty = None;
    let mut default = None;
    let mut doc = None;
    for entry in table.iter() {
        match entry.0.get_ref().as_ref() {
            "type" => {
                let text = p.string(entry, "u32")?;
                ty = Some(item_type(
                    p,
                    "argument",
                    &name,
                    text,
                    &ArgType::ALL,
                    ArgType::name,
                )?);
            }
            "default" => default = Some(entry.1),
            "doc" => doc = Some(p.string(entry, "What this argument sets")?.value),
            _ => {
                return Err(p.unknown_key(entry.0, "an argument", &["type", "default", "doc"]));
            }
        }
    }
    let ty = ty.ok_or_else(|| missing_type(p, "argument", &name, &ArgType::ALL, ArgType::name))?;
    let default = match default {
        None => None,
        Some(value) => Some(At::new(
            default_text(p, &name.value, ty.value, value)?,
            value.span(),
        )),
    };
    Ok(ArgDecl {
        name,
        ty,
        default,
        doc,
    })
}

/// Checks a `default` against the argument's type and returns it as the
/// text the runtime parser reads.
fn default_text(
    p: &Parser<'_>,
    name: &str,
    ty: ArgType,
    value: &Spanned<DeValue<'_>>,
) -> Result<String, Located> {
    let wrong = |found: &str, example: &str| {
        p.err(
            value.span(),
            format!(
                "invalid default for argument `{name}`: expected {}, found {found}",
                ty.expected()
            ),
            format!("not a valid {ty}"),
        )
        .with_help(format!("for example: default = {example}"))
    };
    let found = value.get_ref().type_str();
    let text = match (ty, value.get_ref()) {
        (ArgType::Bool, DeValue::Boolean(b)) => b.to_string(),
        (ArgType::Bool, _) => return Err(wrong(found, "false")),
        (ArgType::String | ArgType::Ip | ArgType::Ipv4 | ArgType::Ipv6, DeValue::String(s)) => {
            s.to_string()
        }
        (ArgType::String, _) => return Err(wrong(found, "\"text\"")),
        (ArgType::Ip | ArgType::Ipv4, _) => return Err(wrong(found, "\"10.0.0.2\"")),
        (ArgType::Ipv6, _) => return Err(wrong(found, "\"fe80::1\"")),
        (_, DeValue::Integer(i)) => match i128::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => n.to_string(),
            Err(_) => i.as_str().to_string(),
        },
        (_, DeValue::String(s)) if ty.parse(s).is_some() => {
            return Err(wrong(found, s)
                .with_help(format!("write the number without quotes: default = {s}")));
        }
        (_, _) => return Err(wrong(found, "4")),
    };
    if ty.parse(&text).is_none() {
        let is_int = !matches!(
            ty,
            ArgType::String | ArgType::Ip | ArgType::Ipv4 | ArgType::Ipv6 | ArgType::Bool
        );
        let (message, label) = if is_int {
            (
                format!("default {text} of argument `{name}` is out of range for {ty}"),
                "out of range".to_string(),
            )
        } else {
            (
                format!(
                    "invalid default for argument `{name}`: `{text}` is not {}",
                    ty.expected()
                ),
                format!("not a {ty}"),
            )
        };
        let help = match ty {
            ArgType::Ip | ArgType::Ipv4 => "for example: default = \"10.0.0.2\"".to_string(),
            ArgType::Ipv6 => "for example: default = \"fe80::1\"".to_string(),
            ArgType::U8 | ArgType::U16 | ArgType::U32 | ArgType::U64 if text.starts_with('-') => {
                format!(
                    "{ty} cannot be negative: give a default of 0 or more, or use a signed type (i32, i64)"
                )
            }
            _ => format!(
                "use a wider type or a value that fits: {} is {}",
                ty,
                ty.expected()
            ),
        };
        return Err(p.err(value.span(), message, label).with_help(help));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Manifest, Located> {
        parse(&SourceFile::new("unikernel.toml", text))
    }

    #[test]
    fn parses_a_full_manifest_in_order() {
        let m = parse_str(
            r#"
[unikernel]
name = "www"
entry = "app::start"
doc = "A web server"

[devices.stack]
type = "stack"
impl = "direct"
[devices.service]
type = "net"
[devices.console]
type = "console"

[arguments.port]
type = "u16"
default = 0x50
[arguments.ipv4-gateway]
type = "ipv4"
"#,
        )
        .unwrap();
        assert_eq!(m.name.value, "www");
        assert_eq!(m.entry.value, "app::start");
        let names: Vec<_> = m.devices.iter().map(|d| d.name.value.as_str()).collect();
        assert_eq!(names, ["stack", "service", "console"]);
        assert_eq!(
            m.devices[0].imp.as_ref().map(|i| i.value),
            Some(Impl::Direct)
        );
        assert_eq!(m.devices[0].deps[0].target.value, "service");
        assert!(!m.devices[0].deps[0].explicit);
        assert_eq!(m.arguments[0].default.as_ref().unwrap().value, "80");
        assert_eq!(m.arguments[1].param(), "ipv4_gateway");
        assert!(m.arguments[1].default.is_none());
    }

    #[test]
    fn rejects_bad_defaults() {
        let base = "[unikernel]\nname = \"a\"\nentry = \"start\"\n[arguments.x]\n";
        for (body, needle) in [
            (
                "type = \"u32\"\ndefault = \"four\"",
                "expected an unsigned integer (u32), found string",
            ),
            ("type = \"u8\"\ndefault = 256", "out of range for u8"),
            ("type = \"u32\"\ndefault = -1", "out of range for u32"),
            (
                "type = \"ipv4\"\ndefault = \"fe80::1\"",
                "is not an IPv4 address",
            ),
            ("type = \"bool\"\ndefault = 1", "found integer"),
        ] {
            let err = parse_str(&format!("{base}{body}")).unwrap_err();
            assert!(err.message().contains(needle), "{body}: {}", err.message());
        }
    }

    #[test]
    fn rejects_unknown_keys_types_and_names() {
        let err =
            parse_str("[unikernel]\nname = \"a\"\nentry = \"s\"\n[devices.c]\ntype = \"consol\"")
                .unwrap_err();
        assert!(err.message().contains("unknown device type `consol`"));
        let err = parse_str("[unikernel]\nname = \"a\"\nentry = \"s\"\n[devices.c]\ntype = \"console\"\nnet = \"x\"").unwrap_err();
        assert!(err.message().contains("unknown key `net`"));
        let err = parse_str("[unikernel]\nname = \"A\"\nentry = \"s\"").unwrap_err();
        assert!(err.message().contains("invalid unikernel name"));
        let err = parse_str(
            "[unikernel]\nname = \"a\"\nentry = \"s\"\n[devices.type]\ntype = \"console\"",
        )
        .unwrap_err();
        assert!(err.message().contains("Rust keyword"));
        let err = parse_str("[unikernel]\nname = \"a\"\nentry = \"s\"\n[devices.c]\ntype = \"console\"\n[devices.c]\ntype = \"sleep\"").unwrap_err();
        assert!(err.message().contains("duplicate"), "{}", err.message());
        let err =
            parse_str("[unikernel]\nname = \"a\"\nentry = \"s\"\n[arguments.n]\ntype = \"f64\"")
                .unwrap_err();
        assert_eq!(
            err.message(),
            "unknown argument type `f64` for argument `n`"
        );
        // Without a `type`: the message names the item, the help lists the
        // types of its kind.
        for (body, message, one_type) in [
            (
                "[devices.c]\ndoc = \"d\"",
                "device `c` has no `type`",
                "wall_clock",
            ),
            (
                "[arguments.n]\ndoc = \"d\"",
                "argument `n` has no `type`",
                "ipv6",
            ),
        ] {
            let err = parse_str(&format!("[unikernel]\nname = \"a\"\nentry = \"s\"\n{body}"))
                .unwrap_err();
            assert_eq!(err.message(), message);
            let help = miette::Diagnostic::help(&err).map(|h| h.to_string());
            assert!(
                help.as_deref()
                    .is_some_and(|h| h.starts_with("add a type, one of: ") && h.contains(one_type)),
                "{help:?}"
            );
        }
    }
}
