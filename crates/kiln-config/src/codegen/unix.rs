//! The unix backend: a host binary crate calling `kiln-unix`, per
//! `kiln-unix`'s API (platform, args, exit and one type per device).

use std::fmt::Write as _;
use std::path::PathBuf;

use kiln_rt::args::ArgType;

use super::{
    Backend, BakedFile, GeneratedFile, Plan, baked_files, relative_path, rust_str, toml_str,
};
use crate::diagnostic::Located;
use crate::entry::{Param, rust_type};
use crate::model::{DeviceType, Impl, Target};

/// The unix backend.
#[derive(Debug)]
pub struct Unix;

/// How a device is constructed on unix.
#[derive(Debug, Clone, Copy)]
enum Construct {
    /// A plain expression.
    Expr(&'static str),
    /// `kiln_unix::Tap::open` with the `--net` flags.
    Tap,
    /// `kiln_unix::FileBlock::open` with the `--block` flags.
    FileBlock,
    /// `kiln_kv::Baked` over a table of files compiled into the image.
    Baked,
    /// `kiln_store::TarStore` over the device named by `block`.
    TarStore,
    /// `kiln_store::LogStore` over the device named by `block`.
    LogStore,
}

/// The constructed devices in an order where each comes after the devices
/// it uses (depth first, in the order of `unikernel.toml`).
fn construction_order(plan: &Plan<'_>, constructs: &[Option<Construct>]) -> Vec<usize> {
    fn visit(i: usize, plan: &Plan<'_>, done: &mut [bool], order: &mut Vec<usize>) {
        if done.get(i).copied().unwrap_or(true) {
            return;
        }
        done[i] = true;
        if let Some(d) = plan.graph.devices.get(i) {
            for (_, to) in &d.uses {
                visit(*to, plan, done, order);
            }
        }
        order.push(i);
    }
    let mut done: Vec<bool> = constructs.iter().map(Option::is_none).collect();
    let mut order = Vec::new();
    for i in 0..constructs.len() {
        visit(i, plan, &mut done, &mut order);
    }
    order
}

/// The implementations this backend provides: a device type and choice,
/// and how to construct it.
const IMPLEMENTATIONS: &[(DeviceType, Option<Impl>, Construct)] = &[
    (
        DeviceType::Console,
        None,
        Construct::Expr("::kiln_unix::Console::stdout()"),
    ),
    (
        DeviceType::Clock,
        None,
        Construct::Expr("::kiln_unix::MonotonicClock::new()"),
    ),
    (
        DeviceType::WallClock,
        None,
        Construct::Expr("::kiln_unix::WallClock::new()"),
    ),
    (DeviceType::Sleep, None, Construct::Expr("::kiln_rt::Timer")),
    (
        DeviceType::Random,
        None,
        Construct::Expr("::kiln_unix::Random::new()"),
    ),
    (DeviceType::Net, None, Construct::Tap),
    (DeviceType::Block, None, Construct::FileBlock),
    (
        DeviceType::Stack,
        Some(Impl::Socket),
        Construct::Expr("::kiln_unix::SocketStack::new(platform)"),
    ),
    (DeviceType::KvRo, Some(Impl::Baked), Construct::Baked),
    (DeviceType::KvRo, Some(Impl::Disk), Construct::TarStore),
    (DeviceType::KvRw, None, Construct::LogStore),
];

/// The release profile of generated crates. `opt-level = 3`, measured on a
/// checksum loop over 1 MiB (200 rounds) built by kiln: 14-15 ms at 3,
/// 68-101 ms at "s", 89-121 ms at "z"; the image is 420 KB at 3 against
/// 399 KB at "s" (5% smaller), and build times were within noise of each
/// other. A few percent of size is not worth a 5x slower data path.
const PROFILE: &str = "[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = \"abort\"
debug = false
strip = \"debuginfo\"
";

impl Backend for Unix {
    fn target(&self) -> Target {
        Target::Unix
    }

    fn generate(&self, plan: &Plan<'_>) -> Result<Vec<GeneratedFile>, Located> {
        let m = plan.manifest;
        let mut constructs = Vec::new();
        for (i, device) in m.devices.iter().enumerate() {
            if !plan.needed.get(i).copied().unwrap_or(false) {
                constructs.push(None);
                continue;
            }
            let choice = plan.graph.choice(i);
            let found = IMPLEMENTATIONS
                .iter()
                .find(|(ty, c, _)| *ty == device.ty.value && *c == choice)
                .map(|(_, _, k)| *k);
            let Some(construct) = found else {
                let what = choice.map_or_else(
                    || device.ty.value.to_string(),
                    |c| format!("the {c} {}", device.ty.value),
                );
                let hint = match (device.ty.value, choice) {
                    (DeviceType::Stack, _) => {
                        "on unix, use the host's stack: --net socket (the default)"
                    }
                    _ => {
                        "this kiln cannot build it yet; remove the device or pick another implementation"
                    }
                };
                return Err(Located::new(
                    &m.file,
                    device.name.span.clone(),
                    format!(
                        "device `{}`: {what} is not yet supported on unix",
                        device.name.value
                    ),
                    "not yet supported",
                )
                .with_help(hint));
            };
            constructs.push(Some(construct));
        }
        let mut baked = Vec::new();
        for (i, device) in m.devices.iter().enumerate() {
            if !matches!(constructs.get(i), Some(Some(Construct::Baked))) {
                continue;
            }
            let Some(source) = &device.source else {
                continue;
            };
            let dir = plan.unikernel_dir.join(&source.value);
            let files = baked_files(&dir).map_err(|e| {
                Located::new(
                    &m.file,
                    source.span.clone(),
                    format!(
                        "device `{}`: cannot read the source directory `{}`: {e}",
                        device.name.value, source.value
                    ),
                    "cannot be read",
                )
                .with_help("make the directory and its files readable")
            })?;
            baked.push((i, files));
        }
        Ok(vec![
            GeneratedFile {
                path: PathBuf::from("Cargo.toml"),
                contents: cargo_toml(
                    plan,
                    !baked.is_empty(),
                    constructs
                        .iter()
                        .any(|c| matches!(c, Some(Construct::TarStore | Construct::LogStore))),
                ),
            },
            GeneratedFile {
                path: PathBuf::from("src/main.rs"),
                contents: main_rs(plan, &constructs, &baked),
            },
        ])
    }
}

fn cargo_toml(plan: &Plan<'_>, kv: bool, store: bool) -> String {
    let build_dir = plan.unikernel_dir.join("_build").join("unix");
    let crates = plan.source_dir.join("crates");
    let path = |p: PathBuf| toml_str(&p.display().to_string());
    let name = &plan.manifest.name.value;
    format!(
        "# Generated by `kiln configure` for the unikernel `{name}` on unix; do not edit.\n\
         [package]\n\
         name = {package}\n\
         version = \"0.0.0\"\n\
         edition = \"2024\"\n\
         publish = false\n\
         \n\
         [[bin]]\n\
         name = {bin}\n\
         path = \"src/main.rs\"\n\
         \n\
         [dependencies]\n\
         unikernel = {{ package = {unikernel}, path = {unikernel_path} }}\n\
         kiln-devices = {{ path = {devices} }}\n\
         kiln-rt = {{ path = {rt}, features = [\"std\"] }}\n\
         kiln-unix = {{ path = {unix} }}\n\
         {kv}\
         \n\
         {PROFILE}\n\
         # A workspace of its own: not part of any enclosing workspace.\n\
         [workspace]\n",
        package = toml_str(&format!("kiln-generated-{name}-unix")),
        bin = toml_str(name),
        unikernel = toml_str(plan.package),
        unikernel_path = path(relative_path(&build_dir, plan.unikernel_dir)),
        devices = path(crates.join("kiln-devices")),
        rt = path(crates.join("kiln-rt")),
        unix = path(crates.join("kiln-unix")),
        kv = [("kiln-kv", kv), ("kiln-store", store)]
            .iter()
            .filter(|(_, used)| *used)
            .map(|(name, _)| format!("{name} = {{ path = {} }}\n", path(crates.join(name))))
            .collect::<String>(),
    )
}

fn arg_type_variant(ty: ArgType) -> &'static str {
    match ty {
        ArgType::Bool => "Bool",
        ArgType::U8 => "U8",
        ArgType::U16 => "U16",
        ArgType::U32 => "U32",
        ArgType::U64 => "U64",
        ArgType::I32 => "I32",
        ArgType::I64 => "I64",
        ArgType::String => "String",
        ArgType::Ip => "Ip",
        ArgType::Ipv4 => "Ipv4",
        ArgType::Ipv6 => "Ipv6",
    }
}

fn main_rs(
    plan: &Plan<'_>,
    constructs: &[Option<Construct>],
    baked: &[(usize, Vec<BakedFile>)],
) -> String {
    let m = plan.manifest;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "//! Generated by `kiln configure` for the unikernel `{}` on unix; do not edit.\n",
        m.name.value
    );
    s.push_str("use ::kiln_devices::{ExitStatus, Termination as _};\n");
    s.push_str("use ::kiln_rt::args;\n\n");

    // The runtime-argument spec.
    s.push_str("static SPEC: args::Spec = args::Spec {\n");
    let _ = writeln!(s, "    program: {},", rust_str(&m.name.value));
    let _ = writeln!(s, "    doc: {},", rust_str(m.doc.as_deref().unwrap_or("")));
    s.push_str("    args: &[\n");
    for arg in &m.arguments {
        let default = arg.default.as_ref().map_or_else(
            || "None".to_string(),
            |d| format!("Some({})", rust_str(&d.value)),
        );
        let _ = writeln!(
            s,
            "        args::ArgSpec {{ name: {}, ty: args::ArgType::{}, default: {default}, doc: {} }},",
            rust_str(&arg.name.value),
            arg_type_variant(arg.ty.value),
            rust_str(arg.doc.as_deref().unwrap_or("")),
        );
    }
    s.push_str("    ],\n    devices: &[\n");
    // Positions of attached devices in SPEC.devices, by device position.
    let mut attach_index = vec![None; m.devices.len()];
    let mut next = 0;
    for (i, device) in m.devices.iter().enumerate() {
        let kind = match constructs.get(i).copied().flatten() {
            Some(Construct::Tap) => "Net",
            Some(Construct::FileBlock) => "Block",
            _ => continue,
        };
        let _ = writeln!(
            s,
            "        args::DeviceSpec {{ name: {}, kind: args::DeviceKind::{kind} }},",
            rust_str(&device.name.value)
        );
        attach_index[i] = Some(next);
        next += 1;
    }
    s.push_str("    ],\n};\n\n");

    for (i, files) in baked {
        let device = &m.devices[*i];
        let _ = writeln!(
            s,
            "/// The files of the baked kv_ro `{}`.\nstatic KV_{}: &[::kiln_kv::Entry] = &[",
            device.name.value,
            device.param().to_uppercase()
        );
        for file in files {
            let digest: Vec<String> = file.digest.iter().map(|b| format!("0x{b:02x}")).collect();
            let _ = writeln!(
                s,
                "    ::kiln_kv::Entry {{\n        path: {},\n        data: include_bytes!({}),\n        digest: [{}],\n    }},",
                rust_str(&file.key),
                rust_str(&file.path.display().to_string()),
                digest.join(", ")
            );
        }
        s.push_str("];\n\n");
    }

    s.push_str(
        "/// Exits with `code` after printing `error: {message}`.\n\
         fn fail(code: u8, message: impl ::core::fmt::Display) -> ! {\n    \
         ::kiln_unix::exit(ExitStatus { code, message: Some(message.to_string()) })\n}\n\n",
    );
    s.push_str("fn main() {\n");
    s.push_str("    let argv = ::kiln_unix::args().unwrap_or_else(|e| fail(2, e));\n");
    let mut_kw = if m.arguments.is_empty() { "" } else { "mut " };
    let _ = writeln!(
        s,
        "    let {mut_kw}parsed = match args::parse(&SPEC, argv.iter().map(String::as_str)) {{"
    );
    s.push_str(
        "        Ok(args::Outcome::Run(parsed)) => parsed,\n\
         \x20       Ok(args::Outcome::Help) => {\n\
         \x20           use ::std::io::Write as _;\n\
         \x20           let usage = args::usage(&SPEC);\n\
         \x20           if ::std::io::stdout().write_all(usage.as_bytes()).is_err() {\n\
         \x20               fail(1, \"cannot write the usage to stdout\");\n\
         \x20           }\n\
         \x20           ::kiln_unix::exit(ExitStatus::SUCCESS)\n\
         \x20       }\n\
         \x20       Err(e) => fail(2, e),\n\
         \x20   };\n",
    );
    if m.arguments.is_empty() && next == 0 {
        s.push_str("    let _ = parsed;\n");
    }
    for (i, arg) in m.arguments.iter().enumerate() {
        let ty = match arg.ty.value {
            ArgType::String => "::std::string::String".to_string(),
            other if rust_type(other).contains("::") => format!("::{}", rust_type(other)),
            other => rust_type(other).to_string(),
        };
        let _ = writeln!(
            s,
            "    let arg_{}: {ty} = parsed.take({i}).unwrap_or_else(|e| fail(2, e));",
            arg.param()
        );
    }
    s.push_str("    let platform = ::kiln_unix::platform();\n");
    s.push_str("    let _ = platform;\n");
    // Devices in dependency order; a device that others use is leaked to a
    // `&'static` reference (a `&B` is a device too), so that it can be
    // shared and the entry function may require `'static` devices.
    let used_by_others: Vec<bool> = (0..m.devices.len())
        .map(|i| {
            plan.graph.devices.iter().enumerate().any(|(j, d)| {
                constructs.get(j).copied().flatten().is_some()
                    && d.uses.iter().any(|(_, to)| *to == i)
            })
        })
        .collect();
    for i in construction_order(plan, constructs) {
        let Some(construct) = constructs.get(i).copied().flatten() else {
            continue;
        };
        let device = &m.devices[i];
        let var = format!("dev_{}", device.param());
        let name = rust_str(&device.name.value);
        let index = attach_index[i].unwrap_or(0);
        let uses = |key: &str| {
            plan.graph.devices[i]
                .uses
                .iter()
                .find(|(k, _)| *k == key)
                .map_or_else(String::new, |(_, to)| {
                    format!("dev_{}", m.devices[*to].param())
                })
        };
        let expr = match construct {
            Construct::Expr(expr) => expr.to_string(),
            Construct::Baked => format!(
                "::kiln_kv::Baked::new(KV_{}).unwrap_or_else(|e| fail(1, e))",
                device.param().to_uppercase()
            ),
            Construct::Tap => format!(
                "{{\n        let attach = parsed.net({index}).unwrap_or_else(|e| fail(2, e));\n        \
                 ::kiln_unix::Tap::open(platform, {name}, &attach.iface, attach.mac).unwrap_or_else(|e| fail(1, e))\n    }}"
            ),
            Construct::FileBlock => format!(
                "{{\n        let attach = parsed.block({index}).unwrap_or_else(|e| fail(2, e));\n        \
                 ::kiln_unix::FileBlock::open(platform, {name}, &attach.path, attach.sector_size)\n            \
                 .unwrap_or_else(|e| fail(1, e))\n    }}"
            ),
            Construct::TarStore => format!(
                "::kiln_rt::block_on(platform, ::kiln_store::TarStore::open({name}, {}))\n        \
                 .unwrap_or_else(|e| fail(1, e))",
                uses("block")
            ),
            Construct::LogStore => format!(
                "::kiln_rt::block_on(platform, ::kiln_store::LogStore::open({name}, {}))\n        \
                 .unwrap_or_else(|e| fail(1, e))",
                uses("block")
            ),
        };
        if used_by_others[i] {
            let _ = writeln!(
                s,
                "    let {var} = &*::std::boxed::Box::leak(::std::boxed::Box::new({expr}));"
            );
        } else {
            let _ = writeln!(s, "    let {var} = {expr};");
        }
    }
    let args: Vec<String> = plan
        .entry
        .params
        .iter()
        .map(|p| match *p {
            Param::Device(i) => format!("dev_{}", m.devices[i].param()),
            Param::Argument(i) => format!("arg_{}", m.arguments[i].param()),
        })
        .collect();
    let _ = writeln!(
        s,
        "    let status = ::kiln_rt::block_on(platform, ::unikernel::{}({})).exit_status();",
        plan.entry.path,
        args.join(", ")
    );
    s.push_str("    ::kiln_unix::exit(status)\n}\n");
    s
}
