//! The generated `src/main.rs`, shared by every backend: the argument spec,
//! the baked tables, argument parsing, each device's construction in
//! dependency order and the call of the entry function; a [`Flavor`] says
//! what differs between a host process and a freestanding image.

use std::fmt::Write as _;

use kiln_args::ArgType;

use super::{BakedFile, Plan, baked_files, rust_str};
use crate::diagnostic::Located;
use crate::entry::{Param, rust_type};
use crate::model::{DeviceType, Impl, Target};

/// How a device is constructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Construct {
    /// A plain expression (`env` and `platform` are in scope).
    Expr(&'static str),
    /// `kiln_unix::Tap::open` with the `--net` flags.
    Tap,
    /// `kiln_unix::FileBlock::open` with the `--block` flags.
    FileBlock,
    /// `env.net("NAME")`: the tender attached it.
    Solo5Net,
    /// `env.block("NAME")`: the tender attached it.
    Solo5Block,
    /// `kiln_baked::Baked` over a table of files compiled into the image.
    Baked,
    /// `kiln_store::TarStore` over the device named by `block`.
    TarStore,
    /// `kiln_store::LogStore` over the device named by `block`.
    LogStore,
    /// `kiln_net::NetStack` over the device named by `net`, built inside
    /// the entry's `block_on` (it spawns its driver task).
    DirectStack,
}

/// A backend's table of implementations: a device type and choice, and how
/// to construct it.
pub type Table = [(DeviceType, Option<Impl>, Construct)];

/// What differs between the targets in `main.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// A host process over `kiln-unix`.
    Unix,
    /// A freestanding image over `kiln-solo5` (hvt, or spt with `spt`).
    Solo5 {
        /// The spt ABI note instead of the hvt one.
        spt: bool,
    },
    /// A freestanding PVH image over `kiln-virtio`, with the same `Env`
    /// interface as kiln-solo5's.
    Virtio,
}

impl Flavor {
    fn target(self) -> Target {
        match self {
            Flavor::Unix => Target::Unix,
            Flavor::Solo5 { spt: false } => Target::Hvt,
            Flavor::Solo5 { spt: true } => Target::Spt,
            Flavor::Virtio => Target::Virtio,
        }
    }

    /// The freestanding platform crate's path in generated code.
    fn platform(self) -> &'static str {
        match self {
            Flavor::Virtio => "::kiln_virtio",
            _ => "::kiln_solo5",
        }
    }

    /// The crate `String`, `Box` and `vec!` come from.
    fn alloc(self) -> &'static str {
        match self {
            Flavor::Unix => "::std",
            Flavor::Solo5 { .. } | Flavor::Virtio => "::alloc",
        }
    }
}

/// The devices resolved to constructions: `None` for devices that are not
/// constructed.
#[derive(Debug)]
pub struct Resolved {
    /// One per device of the manifest.
    pub constructs: Vec<Option<Construct>>,
    /// The files of each baked kv_ro, by device position.
    pub baked: Vec<(usize, Vec<BakedFile>)>,
}

impl Resolved {
    /// Whether any device is constructed as `what`.
    pub fn any(&self, what: impl Fn(Construct) -> bool) -> bool {
        self.constructs.iter().flatten().any(|c| what(*c))
    }
}

/// Resolves every needed device of `plan` with `table`, or says which one
/// this backend cannot build, with `stack_hint` for stacks.
pub fn resolve(plan: &Plan<'_>, table: &Table, stack_hint: &str) -> Result<Resolved, Located> {
    let m = plan.manifest;
    let target = plan.graph.target;
    let mut constructs = Vec::new();
    for (i, device) in m.devices.iter().enumerate() {
        if !plan.needed.get(i).copied().unwrap_or(false) {
            constructs.push(None);
            continue;
        }
        let choice = plan.graph.choice(i);
        let found = table
            .iter()
            .find(|(ty, c, _)| *ty == device.ty.value && *c == choice)
            .map(|(_, _, k)| *k);
        let Some(construct) = found else {
            let what = choice.map_or_else(
                || device.ty.value.to_string(),
                |c| format!("the {c} {}", device.ty.value),
            );
            let hint = match device.ty.value {
                DeviceType::Stack => stack_hint,
                _ => {
                    "this kiln cannot build it yet; remove the device or pick another implementation"
                }
            };
            return Err(Located::new(
                &m.file,
                device.name.span.clone(),
                format!(
                    "device `{}`: {what} is not yet supported on {target}",
                    device.name.value
                ),
                "not yet supported",
            )
            .with_help(hint));
        };
        constructs.push(Some(construct));
    }
    let stacks: Vec<usize> = (0..constructs.len())
        .filter(|i| constructs[*i] == Some(Construct::DirectStack))
        .collect();
    if let Some(&second) = stacks.get(1) {
        let device = &m.devices[second];
        return Err(Located::new(
            &m.file,
            device.name.span.clone(),
            format!(
                "device `{}`: a second direct stack is not yet supported: the stack's runtime arguments (--ipv4, ...) would apply to both",
                device.name.value
            ),
            "second direct stack",
        )
        .with_label(m.devices[stacks[0]].name.span.clone(), "first direct stack")
        .with_help("use one stack device, shared by every part of the unikernel"));
    }
    let mut baked = Vec::new();
    for (i, device) in m.devices.iter().enumerate() {
        if constructs.get(i).copied().flatten() != Some(Construct::Baked) {
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
    Ok(Resolved { constructs, baked })
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

/// `src/main.rs` for `plan` with the devices of `resolved`. `prelude` goes
/// right after the `use` lines (the Solo5 notes).
pub fn main_rs(plan: &Plan<'_>, resolved: &Resolved, flavor: Flavor, prelude: &str) -> String {
    let m = plan.manifest;
    let constructs = &resolved.constructs;
    let alloc = flavor.alloc();
    let direct = constructs.contains(&Some(Construct::DirectStack));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "//! Generated by `kiln configure` for the unikernel `{}` on {}; do not edit.\n",
        m.name.value,
        flavor.target()
    );
    if matches!(flavor, Flavor::Solo5 { .. } | Flavor::Virtio) {
        s.push_str("#![no_std]\n#![no_main]\n\nextern crate alloc;\n\n");
        s.push_str("use ::alloc::string::ToString as _;\n");
    }
    s.push_str("use ::kiln_devices::{ExitStatus, Termination as _};\n");
    s.push_str("use ::kiln_rt::args;\n\n");
    s.push_str(prelude);

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
    // Positions of attached devices in SPEC.devices, by device position.
    // On Solo5 the tender attaches them, so the guest lists none.
    s.push_str("    ],\n    devices: &[\n");
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

    for (i, files) in &resolved.baked {
        let device = &m.devices[*i];
        let _ = writeln!(
            s,
            "/// The files of the baked kv_ro `{}`.\nstatic KV_{}: &[::kiln_baked::Entry] = &[",
            device.name.value,
            device.param().to_uppercase()
        );
        for file in files {
            let digest: Vec<String> = file.digest.iter().map(|b| format!("0x{b:02x}")).collect();
            let _ = writeln!(
                s,
                "    ::kiln_baked::Entry {{\n        path: {},\n        data: include_bytes!({}),\n        digest: [{}],\n    }},",
                rust_str(&file.key),
                rust_str(&file.path.display().to_string()),
                digest.join(", ")
            );
        }
        s.push_str("];\n\n");
    }

    let exit = match flavor {
        Flavor::Unix => "::kiln_unix::exit",
        Flavor::Solo5 { .. } => "::kiln_solo5::exit",
        Flavor::Virtio => "::kiln_virtio::exit",
    };
    let _ = write!(
        s,
        "/// Exit code of `--help`: MirageOS's (`Functoria_runtime.help_version`),\n\
         /// which supervisors (albatross) do not restart.\n\
         const EXIT_HELP: u8 = 63;\n\
         /// Exit code of an argument error: MirageOS's\n\
         /// (`Functoria_runtime.argument_error`), which supervisors do not restart.\n\
         const EXIT_ARGUMENT_ERROR: u8 = 64;\n\n\
         /// Exits with `code` after printing `error: {{message}}`.\n\
         fn fail(code: u8, message: impl ::core::fmt::Display) -> ! {{\n    \
         {exit}(ExitStatus {{ code, message: Some(message.to_string()) }})\n}}\n\n"
    );
    // On Solo5 the tender attaches the devices: --help names its flags.
    let mut tender_usage = String::new();
    let tender = match flavor {
        Flavor::Unix => None,
        Flavor::Solo5 { spt: true } => Some("kiln-spt"),
        Flavor::Solo5 { spt: false } => Some("kiln-hvt"),
        Flavor::Virtio => Some("the VMM"),
    };
    if let Some(tender) = tender {
        let mut rows = Vec::new();
        for (i, device) in m.devices.iter().enumerate() {
            let name = &device.name.value;
            match constructs.get(i).copied().flatten() {
                Some(Construct::Solo5Net) => {
                    rows.push((
                        format!("--net:{name}=IFACE"),
                        format!("host tap interface for the net device '{name}' [required]"),
                    ));
                    rows.push((
                        format!("--net-mac:{name}=MAC"),
                        if flavor == Flavor::Virtio {
                            format!("MAC address of '{name}' [default: chosen by the VMM]")
                        } else {
                            format!("MAC address of '{name}' [default: chosen by the tender]")
                        },
                    ));
                }
                Some(Construct::Solo5Block) => {
                    rows.push((
                        format!("--block:{name}=PATH"),
                        format!("file backing the block device '{name}' [required]"),
                    ));
                    rows.push((
                        format!("--block-sector-size:{name}=N"),
                        format!("sector size of '{name}' in bytes [default: 512]"),
                    ));
                }
                _ => {}
            }
        }
        if !rows.is_empty() {
            let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
            tender_usage = if flavor == Flavor::Virtio {
                "\nDevices, attached by the VMM (kiln run -t virtio turns these flags into its devices, in this order):\n".to_string()
            } else {
                format!("\nDevices, attached by {tender} (kiln run passes it these flags):\n")
            };
            for (left, right) in rows {
                let _ = writeln!(tender_usage, "  {left:width$}  {right}");
            }
        }
    }
    let custom_usage = direct || !tender_usage.is_empty();
    if custom_usage {
        let then = match (direct, tender_usage.is_empty()) {
            (true, true) => "the direct stack's",
            (true, false) => "the direct stack's, and the tender's device flags",
            _ => "the tender's device flags",
        };
        let _ = write!(
            s,
            "/// The usage: the unikernel's arguments, then {then}.\n\
             fn usage() -> {alloc}::string::String {{\n    \
             let mut usage = args::usage(&SPEC);\n"
        );
        if direct {
            let _ = write!(
                s,
                "    usage.push_str(\"\\nStack options:\\n\");\n    \
                 for flag in ::kiln_net::FLAGS {{\n        \
                 let left = match flag.value {{\n            \
                 Some(value) => {alloc}::format!(\"--{{}}={{value}}\", flag.name),\n            \
                 None => {alloc}::format!(\"--{{}}\", flag.name),\n        \
                 }};\n        \
                 usage.push_str(&{alloc}::format!(\"  {{left:24}}  {{}}\\n\", flag.doc));\n    \
                 }}\n"
            );
        }
        if !tender_usage.is_empty() {
            let _ = writeln!(s, "    usage.push_str({});", rust_str(&tender_usage));
        }
        s.push_str("    usage\n}\n\n");
    }
    let usage = if custom_usage {
        "usage()"
    } else {
        "args::usage(&SPEC)"
    };
    match flavor {
        Flavor::Unix => {
            s.push_str("fn main() {\n");
            s.push_str("    let argv = ::kiln_unix::args().unwrap_or_else(|e| fail(EXIT_ARGUMENT_ERROR, e));\n");
        }
        Flavor::Solo5 { .. } | Flavor::Virtio => {
            let _ = writeln!(
                s,
                "fn run(env: &'static {}::Env) -> ExitStatus {{",
                flavor.platform()
            );
            s.push_str(
                "    let argv = env.args().unwrap_or_else(|e| fail(EXIT_ARGUMENT_ERROR, e));\n",
            );
        }
    }
    let words = match (flavor, direct) {
        (_, true) => "argv.iter().copied()",
        (Flavor::Unix, false) => "argv.iter().map(String::as_str)",
        (Flavor::Solo5 { .. } | Flavor::Virtio, false) => "argv.iter().copied()",
    };
    if direct {
        // The stack's arguments come out first; with --help they are not
        // checked, so that help is always available.
        let all = match flavor {
            Flavor::Unix => "argv.iter().map(String::as_str)",
            Flavor::Solo5 { .. } | Flavor::Virtio => "argv.iter().copied()",
        };
        let _ = write!(
            s,
            "    let (net_config, argv) = ::kiln_net::Config::extract({all}).unwrap_or_else(|e| {{\n        \
             if argv.iter().any(|a| *a == \"--help\" || *a == \"-h\") {{\n            \
             (::kiln_net::Config::default(), {alloc}::vec![\"--help\"])\n        \
             }} else {{\n            \
             fail(EXIT_ARGUMENT_ERROR, e)\n        \
             }}\n    \
             }});\n"
        );
    }
    let mut_kw = if m.arguments.is_empty() { "" } else { "mut " };
    let _ = writeln!(
        s,
        "    let {mut_kw}parsed = match args::parse(&SPEC, {words}) {{"
    );
    match flavor {
        Flavor::Unix => {
            let _ = write!(
                s,
                "        Ok(args::Outcome::Run(parsed)) => parsed,\n\
                 \x20       Ok(args::Outcome::Help) => {{\n\
                 \x20           use ::std::io::Write as _;\n\
                 \x20           let usage = {usage};\n\
                 \x20           if ::std::io::stdout().write_all(usage.as_bytes()).is_err() {{\n\
                 \x20               fail(1, \"cannot write the usage to stdout\");\n\
                 \x20           }}\n\
                 \x20           ::kiln_unix::exit(ExitStatus {{ code: EXIT_HELP, message: None }})\n\
                 \x20       }}\n\
                 \x20       Err(e) => fail(EXIT_ARGUMENT_ERROR, e),\n\
                 \x20   }};\n"
            );
        }
        Flavor::Solo5 { .. } | Flavor::Virtio => {
            let _ = write!(
                s,
                "        Ok(args::Outcome::Run(parsed)) => parsed,\n\
                 \x20       Ok(args::Outcome::Help) => {{\n\
                 \x20           use ::kiln_devices::Console as _;\n\
                 \x20           let usage = {usage};\n\
                 \x20           if env.console().write(usage.as_bytes()).is_err() {{\n\
                 \x20               fail(1, \"cannot write the usage to the console\");\n\
                 \x20           }}\n\
                 \x20           return ExitStatus {{ code: EXIT_HELP, message: None }};\n\
                 \x20       }}\n\
                 \x20       Err(e) => fail(EXIT_ARGUMENT_ERROR, e),\n\
                 \x20   }};\n"
            );
        }
    }
    // The logger, as soon as --log is known: before the devices, whose
    // construction is logged.
    let platform_crate = match flavor {
        Flavor::Unix => "::kiln_unix",
        Flavor::Solo5 { .. } | Flavor::Virtio => flavor.platform(),
    };
    let console = match flavor {
        Flavor::Unix => "::kiln_unix::Console::stdout()",
        Flavor::Solo5 { .. } => "::kiln_solo5::Console::new()",
        Flavor::Virtio => "::kiln_virtio::Console::new()",
    };
    let _ = write!(
        s,
        "    ::kiln_rt::logger::init(\n        \
         parsed.log_filter().cloned().unwrap_or_else(|| args::LogFilter::application({:?})),\n        \
         ::kiln_rt::logger::Sink {{\n            \
         write: |bytes| {{\n                \
         let _ = ::kiln_devices::Console::write(&{console}, bytes);\n            \
         }},\n            \
         now: || ::kiln_devices::MonotonicClock::now(&{platform_crate}::MonotonicClock::new()),\n        \
         }},\n    \
         );\n    \
         ::kiln_rt::log::info!(target: \"kiln\", \"{} on {}\");\n",
        plan.package,
        m.name.value.replace(['{', '}', '"', '\\'], "_"),
        flavor.target()
    );
    if flavor != Flavor::Unix {
        let _ = writeln!(
            s,
            "    ::kiln_rt::log::info!(target: \"kiln\", \"memory: {{}} KiB of heap\", {}::heap_stats().size / 1024);",
            flavor.platform()
        );
    }
    if m.arguments.is_empty() && next == 0 {
        s.push_str("    let _ = parsed;\n");
    }
    for (i, arg) in m.arguments.iter().enumerate() {
        let ty = match arg.ty.value {
            ArgType::String => format!("{alloc}::string::String"),
            other if rust_type(other).contains("::") => format!("::{}", rust_type(other)),
            other => rust_type(other).to_string(),
        };
        let _ = writeln!(
            s,
            "    let arg_{}: {ty} = parsed.take({i}).unwrap_or_else(|e| fail(EXIT_ARGUMENT_ERROR, e));",
            arg.param()
        );
    }
    match flavor {
        Flavor::Unix => s.push_str("    let platform = ::kiln_unix::platform();\n"),
        Flavor::Solo5 { .. } | Flavor::Virtio => s.push_str("    let platform = env.platform();\n"),
    }
    s.push_str("    let _ = platform;\n");
    if direct {
        let random = match flavor {
            Flavor::Unix => "::kiln_unix::Random::new()",
            Flavor::Solo5 { .. } | Flavor::Virtio => "env.random()",
        };
        let _ = writeln!(
            s,
            "    let net_seed = ::kiln_devices::Random::next_u64(&{random}).unwrap_or_else(|e| fail(1, e));"
        );
    }
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
    // Built inside the entry's `block_on`, after the others.
    let mut in_runtime = Vec::new();
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
                "::kiln_baked::Baked::new(KV_{}).unwrap_or_else(|e| fail(1, e))",
                device.param().to_uppercase()
            ),
            Construct::Tap => format!(
                "{{\n        let attach = parsed.net({index}).unwrap_or_else(|e| fail(EXIT_ARGUMENT_ERROR, e));\n        \
                 ::kiln_unix::Tap::open(platform, {name}, &attach.iface, attach.mac).unwrap_or_else(|e| fail(1, e))\n    }}"
            ),
            Construct::FileBlock => format!(
                "{{\n        let attach = parsed.block({index}).unwrap_or_else(|e| fail(EXIT_ARGUMENT_ERROR, e));\n        \
                 ::kiln_unix::FileBlock::open(platform, {name}, &attach.path, attach.sector_size)\n            \
                 .unwrap_or_else(|e| fail(1, e))\n    }}"
            ),
            Construct::Solo5Net => format!("env.net({name}).unwrap_or_else(|e| fail(1, e))"),
            Construct::Solo5Block => format!("env.block({name}).unwrap_or_else(|e| fail(1, e))"),
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
            Construct::DirectStack => {
                // A guest's heap bounds what its connections may hold:
                // what is free of it once the devices have their queues.
                // A host process has no such bound.
                let config = match flavor {
                    Flavor::Unix => "net_config".to_string(),
                    _ => format!(
                        "{{\n            \
                         let heap = {}::heap_stats();\n            \
                         net_config.fit_heap(heap.size.saturating_sub(heap.in_use))\n        \
                         }}",
                        flavor.platform()
                    ),
                };
                in_runtime.push(format!(
                    "        let {var} = ::kiln_net::NetStack::new({}, {config}, net_seed)\n            \
                     .unwrap_or_else(|e| fail(1, e));\n",
                    uses("net")
                ));
                continue;
            }
        };
        if used_by_others[i] {
            let _ = writeln!(
                s,
                "    let {var} = &*{alloc}::boxed::Box::leak({alloc}::boxed::Box::new({expr}));"
            );
        } else {
            let _ = writeln!(s, "    let {var} = {expr};");
        }
        // The boot information: what each attached device is.
        match construct {
            Construct::Tap | Construct::Solo5Net => {
                let _ = writeln!(
                    s,
                    "    ::kiln_rt::log::info!(target: \"kiln\", \"net {{}}: mac {{}}, mtu {{}}\", {name}, \
                     ::kiln_devices::NetworkInterface::mac(&{var}), ::kiln_devices::NetworkInterface::mtu(&{var}));"
                );
            }
            Construct::FileBlock | Construct::Solo5Block => {
                let _ = writeln!(
                    s,
                    "    {{\n        let info = ::kiln_devices::Block::info(&{var});\n        \
                     ::kiln_rt::log::info!(target: \"kiln\", \"block {{}}: {{}} bytes, {{}} sectors of {{}} bytes{{}}\", {name}, \
                     info.capacity(), info.sectors, info.sector_size, if info.read_only {{ \", read-only\" }} else {{ \"\" }});\n    }}"
                );
            }
            Construct::Baked => {
                let _ = writeln!(
                    s,
                    "    ::kiln_rt::log::info!(target: \"kiln\", \"kv_ro {{}}: {{}} files baked in\", {name}, KV_{}.len());",
                    device.param().to_uppercase()
                );
            }
            _ => {}
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
    let call = format!("::unikernel::{}({})", plan.entry.path, args.join(", "));
    let future = if in_runtime.is_empty() {
        call
    } else {
        format!(
            "async move {{\n{}        {call}.await\n    }}",
            in_runtime.concat()
        )
    };
    match flavor {
        Flavor::Unix => {
            let _ = writeln!(
                s,
                "    let status = ::kiln_rt::block_on(platform, {future}).exit_status();"
            );
            s.push_str("    ::kiln_unix::exit(status)\n}\n");
        }
        Flavor::Solo5 { .. } | Flavor::Virtio => {
            let _ = writeln!(
                s,
                "    ::kiln_rt::block_on(platform, {future}).exit_status()"
            );
            let _ = writeln!(s, "}}\n\n{}::main!(run);", flavor.platform());
        }
    }
    s
}
