//! Reading the unikernel crate with `syn` and matching its entry function's
//! parameters, by name, to the devices and arguments of `unikernel.toml`.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use kiln_args::ArgType;
use proc_macro2::{LineColumn, Span};
use syn::spanned::Spanned;
use syn::{FnArg, GenericParam, Item, Pat, ReturnType, Type, TypeParamBound, Visibility};

use crate::diagnostic::{ConfigError, Located, SourceFile};
use crate::manifest::Manifest;
use crate::model::DeviceType;

/// What a parameter of the entry function receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// The device at this position of [`Manifest::devices`].
    Device(usize),
    /// The argument at this position of [`Manifest::arguments`].
    Argument(usize),
}

/// The checked entry function.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its Rust path from the crate root (`start`, `app::start`).
    pub path: String,
    /// Its parameters, in order.
    pub params: Vec<Param>,
}

/// A source file of the crate, parsed.
struct Module {
    file: SourceFile,
    /// The directory where its child modules' files live.
    child_dir: PathBuf,
    /// Its items (of the file, or of an inline module in it).
    items: Vec<Item>,
}

fn read(path: &Path, name: String) -> Result<SourceFile, ConfigError> {
    SourceFile::read(path, name)
}

/// The byte range of `span` in `text`.
pub fn byte_range(text: &str, span: Span) -> Range<usize> {
    let offset = |lc: LineColumn| -> usize {
        let line_start: usize = text
            .split_inclusive('\n')
            .take(lc.line.saturating_sub(1))
            .map(str::len)
            .sum();
        let rest = text.get(line_start..).unwrap_or("");
        let column: usize = rest.chars().take(lc.column).map(char::len_utf8).sum();
        (line_start + column).min(text.len())
    };
    let start = offset(span.start());
    let end = offset(span.end()).max(start);
    start..end
}

fn parse_module(file: SourceFile, child_dir: PathBuf) -> Result<Module, ConfigError> {
    let parsed = syn::parse_file(&file.text).map_err(|e| {
        Located::new(
            &file,
            byte_range(&file.text, e.span()),
            format!("cannot parse {}: {e}", file.name),
            e.to_string(),
        )
        .with_help(
            "fix the Rust syntax error; `cargo check` in the unikernel's directory shows it too",
        )
    })?;
    Ok(Module {
        file,
        child_dir,
        items: parsed.items,
    })
}

/// `path` as shown in messages: relative to the unikernel's directory,
/// under `shown` (the directory as the user named it).
fn display_path(dir: &Path, shown: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    crate::project::shown_path(shown, rel)
}

/// Finds and checks the entry function of the crate in `dir` (shown in
/// messages as `shown`) against `manifest`.
pub fn check(dir: &Path, shown: &Path, manifest: &Manifest) -> Result<Entry, ConfigError> {
    let lib = dir.join("src").join("lib.rs");
    let mut module = parse_module(read(&lib, display_path(dir, shown, &lib))?, dir.join("src"))?;
    let entry_at = &manifest.entry;
    let segments: Vec<&str> = entry_at.value.split("::").collect();
    let (fn_name, modules) = segments.split_last().unwrap_or((&"", &[]));

    for seg in modules {
        let found = module.items.iter().find_map(|item| match item {
            Item::Mod(m) if m.ident == seg => Some(m.clone()),
            _ => None,
        });
        let Some(m) = found else {
            return Err(Located::new(
                &manifest.file,
                entry_at.span.clone(),
                format!(
                    "entry `{}`: there is no module `{seg}` in {}",
                    entry_at.value, module.file.name
                ),
                "module not found",
            )
            .with_help(format!(
                "declare it in {}: pub mod {seg};",
                module.file.name
            ))
            .into());
        };
        if !matches!(m.vis, Visibility::Public(_)) {
            return Err(Located::new(
                &module.file,
                byte_range(&module.file.text, m.ident.span()),
                format!("entry `{}`: module `{seg}` is private", entry_at.value),
                "not `pub`",
            )
            .with_help(format!("make it public: pub mod {seg}"))
            .into());
        }
        module = match m.content {
            Some((_, items)) => Module {
                file: module.file.clone(),
                child_dir: module.child_dir.join(seg),
                items,
            },
            None => {
                let flat = module.child_dir.join(format!("{seg}.rs"));
                let nested = module.child_dir.join(seg).join("mod.rs");
                let path = if flat.exists() { flat } else { nested };
                let file = read(&path, display_path(dir, shown, &path))?;
                parse_module(file, module.child_dir.join(seg))?
            }
        };
    }

    let found = module.items.iter().find_map(|item| match item {
        Item::Fn(f) if f.sig.ident == fn_name => Some(f.clone()),
        _ => None,
    });
    let Some(func) = found else {
        let candidates: Vec<String> = module
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Fn(f) if f.sig.asyncness.is_some() => Some(f.sig.ident.to_string()),
                _ => None,
            })
            .collect();
        let help = if candidates.is_empty() {
            format!(
                "define it in {}: pub async fn {fn_name}(...)",
                module.file.name
            )
        } else {
            format!(
                "the async functions in {} are: {}",
                module.file.name,
                candidates.join(", ")
            )
        };
        return Err(Located::new(
            &manifest.file,
            entry_at.span.clone(),
            format!(
                "entry function `{fn_name}` not found in {}",
                module.file.name
            ),
            "no such function",
        )
        .with_help(help)
        .into());
    };
    let file = &module.file;
    let at = |span: Span| byte_range(&file.text, span);
    let sig = &func.sig;
    let fn_span = at(sig.ident.span());

    if !matches!(func.vis, Visibility::Public(_)) {
        return Err(Located::new(
            file,
            fn_span,
            format!("entry function `{fn_name}` is not public"),
            "not `pub`",
        )
        .with_help(format!("make it public: pub async fn {fn_name}(...)"))
        .into());
    }
    if sig.asyncness.is_none() {
        return Err(Located::new(
            file,
            fn_span,
            format!("entry function `{fn_name}` is not async"),
            "not `async`",
        )
        .with_help(format!("declare it as: pub async fn {fn_name}(...)"))
        .into());
    }
    if sig.unsafety.is_some()
        || sig.constness.is_some()
        || sig.variadic.is_some()
        || sig.abi.is_some()
    {
        return Err(Located::new(
            file,
            fn_span,
            format!("entry function `{fn_name}` must be a plain `pub async fn`"),
            "unsafe, const, extern or variadic",
        )
        .with_help(format!("declare it as: pub async fn {fn_name}(...)"))
        .into());
    }
    for param in &sig.generics.params {
        if !matches!(param, GenericParam::Type(_) | GenericParam::Lifetime(_)) {
            return Err(Located::new(
                file,
                at(param.span()),
                format!("entry function `{fn_name}` has a const generic parameter"),
                "cannot be inferred",
            )
            .with_help(
                "devices are passed as `impl Trait` or `T: Trait`; remove the const parameter",
            )
            .into());
        }
    }
    check_return(file, fn_name, &sig.output)?;

    let mut params = Vec::new();
    let mut used_type_params: HashSet<String> = HashSet::new();
    for input in &sig.inputs {
        let typed = match input {
            FnArg::Receiver(r) => {
                return Err(Located::new(
                    file,
                    at(r.span()),
                    format!("entry function `{fn_name}` takes `self`"),
                    "a method",
                )
                .with_help("the entry function is a free function of the crate")
                .into());
            }
            FnArg::Typed(t) => t,
        };
        let Pat::Ident(ident) = &*typed.pat else {
            return Err(Located::new(
                file,
                at(typed.pat.span()),
                format!("a parameter of `{fn_name}` is a pattern, not a name"),
                "not a plain name",
            )
            .with_help(
                "parameters are matched by name with devices and arguments; write `name: Type`",
            )
            .into());
        };
        let name = ident.ident.to_string();
        let name_span = at(ident.ident.span());
        let device = manifest.devices.iter().position(|d| d.param() == name);
        let argument = manifest.arguments.iter().position(|a| a.param() == name);
        let param = match (device, argument) {
            (Some(i), _) => Param::Device(i),
            (None, Some(i)) => Param::Argument(i),
            (None, None) => {
                let mut names: Vec<String> = manifest.devices.iter().map(|d| d.param()).collect();
                names.extend(manifest.arguments.iter().map(|a| a.param()));
                let known = if names.is_empty() {
                    "unikernel.toml declares no devices or arguments".to_string()
                } else {
                    format!("declared names: {}", names.join(", "))
                };
                let help = match crate::diagnostic::closest(&name, names.iter().map(String::as_str))
                {
                    Some(near) => format!(
                        "did you mean `{near}`? rename the parameter or the name in unikernel.toml so that they match ({known})"
                    ),
                    None => format!(
                        "declare [devices.{name}] or [arguments.{name}] in unikernel.toml, or remove the parameter ({known})"
                    ),
                };
                return Err(Located::new(
                    file,
                    name_span,
                    format!("parameter `{name}` of `{fn_name}` matches no device or argument of unikernel.toml"),
                    "unknown parameter",
                )
                .with_help(help)
                .into());
            }
        };
        if params.contains(&param) {
            return Err(Located::new(
                file,
                name_span,
                format!("parameter `{name}` appears twice"),
                "second use",
            )
            .with_help("each device and argument is passed once")
            .into());
        }
        match param {
            Param::Device(i) => {
                let ty = manifest.devices[i].ty.value;
                check_device_type(
                    file,
                    fn_name,
                    &name,
                    ty,
                    &typed.ty,
                    sig,
                    &mut used_type_params,
                )?;
            }
            Param::Argument(i) => {
                let ty = manifest.arguments[i].ty.value;
                if !argument_type_matches(ty, &typed.ty) {
                    return Err(Located::new(
                        file,
                        at(typed.ty.span()),
                        format!(
                            "parameter `{name}` of `{fn_name}` has type `{}`, but argument `{}` is a {ty}",
                            type_text(file, &typed.ty),
                            manifest.arguments[i].name.value
                        ),
                        format!("expected `{}`", rust_type(ty)),
                    )
                    .with_help(format!(
                        "write `{name}: {}`, or change the argument's type in unikernel.toml",
                        rust_type(ty)
                    ))
                    .into());
                }
            }
        }
        params.push(param);
    }

    for param in &sig.generics.params {
        if let GenericParam::Type(t) = param
            && !used_type_params.contains(&t.ident.to_string())
        {
            return Err(Located::new(
                file,
                at(t.ident.span()),
                format!(
                    "type parameter `{}` of `{fn_name}` is not the type of a device parameter",
                    t.ident
                ),
                "cannot be inferred",
            )
            .with_help(
                "use each type parameter as the type of exactly one device parameter, or remove it",
            )
            .into());
        }
    }

    // Every argument must be a parameter; every device a parameter or a
    // dependency of another device.
    for (i, arg) in manifest.arguments.iter().enumerate() {
        if !params.contains(&Param::Argument(i)) {
            return Err(Located::new(
                &manifest.file,
                arg.name.span.clone(),
                format!(
                    "argument `{}` is not a parameter of `{fn_name}`",
                    arg.name.value
                ),
                "unused argument",
            )
            .with_help(format!(
                "add `{}: {}` to the parameters of `{fn_name}` in {}, or remove the argument",
                arg.param(),
                rust_type(arg.ty.value),
                file.name
            ))
            .into());
        }
    }
    for (i, device) in manifest.devices.iter().enumerate() {
        let is_dependency = manifest.devices.iter().any(|d| {
            d.deps
                .iter()
                .any(|dep| dep.target.value == device.name.value)
        });
        if !params.contains(&Param::Device(i)) && !is_dependency {
            return Err(Located::new(
                &manifest.file,
                device.name.span.clone(),
                format!(
                    "device `{}` is neither a parameter of `{fn_name}` nor used by another device",
                    device.name.value
                ),
                "unused device",
            )
            .with_help(format!(
                "add `{}: impl {}` to the parameters of `{fn_name}` in {}, or remove the device",
                device.param(),
                device.ty.value.trait_name(),
                file.name
            ))
            .into());
        }
    }

    Ok(Entry {
        path: entry_at.value.clone(),
        params,
    })
}

/// The Rust type an argument type is passed as.
pub fn rust_type(ty: ArgType) -> &'static str {
    match ty {
        ArgType::Bool => "bool",
        ArgType::U8 => "u8",
        ArgType::U16 => "u16",
        ArgType::U32 => "u32",
        ArgType::U64 => "u64",
        ArgType::I32 => "i32",
        ArgType::I64 => "i64",
        ArgType::String => "alloc::string::String",
        ArgType::Ip => "core::net::IpAddr",
        ArgType::Ipv4 => "core::net::Ipv4Addr",
        ArgType::Ipv6 => "core::net::Ipv6Addr",
    }
}

/// The text of `ty` as written in `file`, whitespace collapsed.
fn type_text(file: &SourceFile, ty: &Type) -> String {
    let text = file
        .text
        .get(byte_range(&file.text, ty.span()))
        .unwrap_or("");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn path_segments(path: &syn::Path) -> Vec<String> {
    path.segments.iter().map(|s| s.ident.to_string()).collect()
}

fn argument_type_matches(ty: ArgType, rust: &Type) -> bool {
    let Type::Path(p) = rust else {
        return false;
    };
    if p.qself.is_some() || p.path.segments.iter().any(|s| !s.arguments.is_empty()) {
        return false;
    }
    let segs = path_segments(&p.path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match ty {
        ArgType::String => matches!(
            segs.as_slice(),
            ["String"] | ["alloc" | "std", "string", "String"]
        ),
        ArgType::Ip | ArgType::Ipv4 | ArgType::Ipv6 => {
            let last = match ty {
                ArgType::Ip => "IpAddr",
                ArgType::Ipv4 => "Ipv4Addr",
                _ => "Ipv6Addr",
            };
            match segs.as_slice() {
                [one] => *one == last,
                [ns, "net", one] => (*ns == "core" || *ns == "std") && *one == last,
                _ => false,
            }
        }
        _ => segs.as_slice() == [rust_type(ty)],
    }
}

fn trait_matches(path: &syn::Path, trait_name: &str) -> bool {
    let segs = path_segments(path);
    match segs.as_slice() {
        [one] => one == trait_name,
        [first, .., last] => first == "kiln_devices" && last == trait_name,
        [] => false,
    }
}

/// Checks that a device parameter's type is `impl Trait` or a type
/// parameter bounded by exactly the device type's trait.
fn check_device_type(
    file: &SourceFile,
    fn_name: &str,
    name: &str,
    device: DeviceType,
    ty: &Type,
    sig: &syn::Signature,
    used: &mut HashSet<String>,
) -> Result<(), ConfigError> {
    let want = device.trait_name();
    let mismatch = |found: String| -> ConfigError {
        Located::new(
            file,
            byte_range(&file.text, ty.span()),
            format!(
                "parameter `{name}` of `{fn_name}` is a {device} device, so its type must implement `{want}`, not {found}"
            ),
            format!("expected `impl {want}`"),
        )
        .with_help(format!(
            "write `{name}: impl {want}` (with `use kiln_devices::{want};`), or a type parameter `T: {want}`"
        ))
        .into()
    };
    let bounds: Vec<TypeParamBound> = match ty {
        Type::ImplTrait(it) => it.bounds.iter().cloned().collect(),
        Type::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
            let ident = &p.path.segments[0].ident;
            let Some(param) = sig.generics.type_params().find(|t| t.ident == *ident) else {
                return Err(mismatch(format!("`{}`", type_text(file, ty))));
            };
            if !used.insert(ident.to_string()) {
                return Err(Located::new(
                    file,
                    byte_range(&file.text, ty.span()),
                    format!("type parameter `{ident}` is the type of two device parameters"),
                    "used twice",
                )
                .with_help("each device has its own type; give each parameter its own type parameter or `impl Trait`")
                .into());
            }
            let mut bounds: Vec<TypeParamBound> = param.bounds.iter().cloned().collect();
            if let Some(wc) = &sig.generics.where_clause {
                for pred in &wc.predicates {
                    if let syn::WherePredicate::Type(pt) = pred
                        && let Type::Path(bp) = &pt.bounded_ty
                        && bp.path.is_ident(ident)
                    {
                        bounds.extend(pt.bounds.iter().cloned());
                    }
                }
            }
            bounds
        }
        _ => return Err(mismatch(format!("`{}`", type_text(file, ty)))),
    };
    let traits: Vec<&syn::TraitBound> = bounds
        .iter()
        .filter_map(|b| match b {
            TypeParamBound::Trait(t) => Some(t),
            _ => None,
        })
        .collect();
    match traits.as_slice() {
        [] => Err(mismatch("a type without trait bounds".to_string())),
        [one]
            if trait_matches(&one.path, want)
                && matches!(one.modifier, syn::TraitBoundModifier::None) =>
        {
            Ok(())
        }
        [one] => Err(mismatch(format!("`{}`", path_text(&one.path)))),
        _ => {
            let names: Vec<String> = traits.iter().map(|t| path_text(&t.path)).collect();
            if traits.iter().any(|t| trait_matches(&t.path, want)) {
                Err(Located::new(
                    file,
                    byte_range(&file.text, ty.span()),
                    format!(
                        "parameter `{name}` of `{fn_name}` asks for `{}`; a {device} device only promises `{want}`",
                        names.join(" + ")
                    ),
                    "extra bounds",
                )
                .with_help(format!("bound it by `{want}` alone"))
                .into())
            } else {
                Err(mismatch(format!("`{}`", names.join(" + "))))
            }
        }
    }
}

/// Whether `ty` is a `kiln_devices::Termination`: `()`, `u8`,
/// `ExitStatus`, or (if `allow_result`) a `Result` whose success type is
/// one of those. The error type's `Display` cannot be checked here.
fn is_termination(ty: &Type, allow_result: bool) -> bool {
    match ty {
        Type::Tuple(t) => t.elems.is_empty(),
        Type::Paren(p) => is_termination(&p.elem, allow_result),
        Type::Path(p) if p.qself.is_none() => {
            let Some(last) = p.path.segments.last() else {
                return false;
            };
            match last.ident.to_string().as_str() {
                "u8" | "ExitStatus" => last.arguments.is_empty(),
                "Result" if allow_result => match &last.arguments {
                    syn::PathArguments::AngleBracketed(args) => match args.args.first() {
                        Some(syn::GenericArgument::Type(ok)) => is_termination(ok, false),
                        _ => false,
                    },
                    // An alias without arguments: its types are unknown here.
                    syn::PathArguments::None => true,
                    syn::PathArguments::Parenthesized(_) => false,
                },
                _ => false,
            }
        }
        _ => false,
    }
}

fn path_text(path: &syn::Path) -> String {
    use quote::ToTokens;
    let mut s = path.to_token_stream().to_string();
    s.retain(|c| c != ' ');
    s
}

fn check_return(file: &SourceFile, fn_name: &str, output: &ReturnType) -> Result<(), ConfigError> {
    let ReturnType::Type(_, ty) = output else {
        return Ok(());
    };
    let ok = is_termination(ty, true);
    if ok {
        return Ok(());
    }
    Err(Located::new(
        file,
        byte_range(&file.text, ty.span()),
        format!(
            "entry function `{fn_name}` returns `{}`",
            type_text(file, ty)
        ),
        "not an exit status",
    )
    .with_help(
        "return (), u8 (an exit code), kiln_devices::ExitStatus, or Result<T, E> with T one of those and E: Display",
    )
    .into())
}
