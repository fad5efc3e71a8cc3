//! The device graph: names, dependencies, cycles and types checked once for
//! every target, then each device resolved to an implementation for one
//! target.

use std::collections::HashMap;

use crate::diagnostic::Located;
use crate::impls::{self, Implementation};
use crate::manifest::{DepDecl, Manifest};
use crate::model::{Choices, DeviceType, Impl, Target};

/// A device resolved for a target.
#[derive(Debug, Clone)]
pub struct ResolvedDevice {
    /// Its position in [`Manifest::devices`].
    pub index: usize,
    /// Its implementation.
    pub implementation: &'static Implementation,
    /// Where the choice came from, for `describe`.
    pub chosen_by: ChosenBy,
    /// The devices it uses (positions in [`Manifest::devices`]), by key.
    pub uses: Vec<(&'static str, usize)>,
}

/// Where an implementation choice came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChosenBy {
    /// The device type has no choice.
    Only,
    /// The target's default.
    Default,
    /// The `impl` key of `unikernel.toml`.
    Manifest,
    /// A flag of `kiln configure`.
    CommandLine,
}

/// The device graph of a manifest, resolved for one target.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The target.
    pub target: Target,
    /// One entry per device of the manifest, in the same order.
    pub devices: Vec<ResolvedDevice>,
}

impl Graph {
    /// The implementation choice of device `index`, if its type has one.
    pub fn choice(&self, index: usize) -> Option<Impl> {
        self.devices
            .get(index)
            .and_then(|d| d.implementation.choice)
    }
}

/// Checks the graph of `manifest` and resolves it for `target` with the
/// command-line `choices`.
pub fn resolve(manifest: &Manifest, target: Target, choices: Choices) -> Result<Graph, Located> {
    check_names(manifest)?;
    let by_name: HashMap<&str, usize> = manifest
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.value.as_str(), i))
        .collect();
    check_dependencies_exist(manifest, &by_name)?;
    check_cycles(manifest, &by_name)?;
    check_dependency_types(manifest, &by_name)?;

    let mut devices = Vec::with_capacity(manifest.devices.len());
    for (index, device) in manifest.devices.iter().enumerate() {
        let ty = device.ty.value;
        let cli = match ty {
            DeviceType::Stack => choices.net,
            DeviceType::KvRo => choices.kv_ro,
            _ => None,
        };
        let (choice, chosen_by) = if ty.choices().is_empty() {
            (None, ChosenBy::Only)
        } else if let Some(c) = cli {
            (Some(c), ChosenBy::CommandLine)
        } else if let Some(c) = &device.imp {
            (Some(c.value), ChosenBy::Manifest)
        } else {
            (impls::default_choice(ty, target), ChosenBy::Default)
        };
        let Some(implementation) = impls::find(ty, choice) else {
            let name = choice.map_or("", Impl::name);
            return Err(Located::new(
                &manifest.file,
                device.name.span.clone(),
                format!(
                    "no implementation `{name}` for the {ty} device `{}`",
                    device.name.value
                ),
                "this device",
            ));
        };
        if let Some(impossible) = implementation.impossible_on(target) {
            let name = &device.name.value;
            let what = choice.map_or_else(|| ty.name().to_string(), |c| format!("the {c} {ty}"));
            let (span, label, from) = match chosen_by {
                ChosenBy::Manifest => (
                    device
                        .imp
                        .as_ref()
                        .map_or(device.name.span.clone(), |i| i.span.clone()),
                    format!("{} chosen here", choice.map_or("", Impl::name)),
                    String::new(),
                ),
                ChosenBy::CommandLine => {
                    let flag = if ty == DeviceType::Stack {
                        "--net"
                    } else {
                        "--kv-ro"
                    };
                    (
                        device.name.span.clone(),
                        format!(
                            "{flag} {} applies to this device",
                            choice.map_or("", Impl::name)
                        ),
                        format!(" (chosen by {flag} {})", choice.map_or("", Impl::name)),
                    )
                }
                ChosenBy::Only | ChosenBy::Default => (
                    device.name.span.clone(),
                    "this device".to_string(),
                    String::new(),
                ),
            };
            return Err(Located::new(
                &manifest.file,
                span,
                format!(
                    "device `{name}`: {what} is not available on {target}{from}: {}",
                    impossible.why
                ),
                label,
            )
            .with_help(impossible.hint));
        }
        let mut uses = Vec::new();
        for key in implementation.uses {
            match device.deps.iter().find(|d| d.key == *key) {
                Some(dep) => {
                    if let Some(&i) = by_name.get(dep.target.value.as_str()) {
                        uses.push((*key, i));
                    }
                }
                None => {
                    let choice = choice.map_or("", Impl::name);
                    return Err(Located::new(
                        &manifest.file,
                        device.name.span.clone(),
                        format!(
                            "device `{}`: the {choice} {ty} needs a `{key}` device, but none is named",
                            device.name.value
                        ),
                        format!("add `{key} = \"...\"` to this table"),
                    )
                    .with_help(format!(
                        "name the {key} device it reads from, e.g. {key} = \"disk\" with [devices.disk] type = \"{key}\""
                    )));
                }
            }
        }
        if let (Some(Impl::Baked), None) = (choice, &device.source) {
            return Err(Located::new(
                &manifest.file,
                device.name.span.clone(),
                format!(
                    "device `{}`: a baked kv_ro needs a `source` directory",
                    device.name.value
                ),
                "add `source = \"...\"` to this table",
            )
            .with_help(
                "name the directory to bake in, relative to the unikernel: source = \"htdocs\"",
            ));
        }
        devices.push(ResolvedDevice {
            index,
            implementation,
            chosen_by,
            uses,
        });
    }
    Ok(Graph { target, devices })
}

/// Names of devices and arguments must be distinct, also after `-` becomes
/// `_` (they share the entry function's parameter names).
fn check_names(manifest: &Manifest) -> Result<(), Located> {
    let mut seen: HashMap<String, (&str, &crate::manifest::At<String>)> = HashMap::new();
    let items = manifest
        .devices
        .iter()
        .map(|d| ("device", &d.name))
        .chain(manifest.arguments.iter().map(|a| ("argument", &a.name)));
    for (what, name) in items {
        let param = crate::manifest::param_name(&name.value);
        if let Some((first_what, first)) = seen.get(&param) {
            return Err(Located::new(
                &manifest.file,
                name.span.clone(),
                format!(
                    "duplicate name: {what} `{}` and {first_what} `{}` would both be the parameter `{param}`",
                    name.value, first.value
                ),
                "second declaration",
            )
            .with_label(first.span.clone(), "first declared here")
            .with_help("devices and arguments share one namespace (the entry function's parameters); rename one"));
        }
        seen.insert(param, (what, name));
    }
    Ok(())
}

fn check_dependencies_exist(
    manifest: &Manifest,
    by_name: &HashMap<&str, usize>,
) -> Result<(), Located> {
    for device in &manifest.devices {
        for dep in &device.deps {
            if by_name.contains_key(dep.target.value.as_str()) {
                continue;
            }
            return Err(missing_dependency(
                manifest,
                &device.name.value,
                device.ty.value,
                dep,
            ));
        }
    }
    Ok(())
}

fn missing_dependency(manifest: &Manifest, name: &str, ty: DeviceType, dep: &DepDecl) -> Located {
    let target = &dep.target.value;
    let near = crate::diagnostic::closest(
        target,
        manifest
            .devices
            .iter()
            .filter(|d| d.ty.value == dep.ty)
            .map(|d| d.name.value.as_str()),
    );
    let declare = match near {
        Some(near) => format!(
            "did you mean `{near}`? or declare it:\n[devices.{target}]\ntype = \"{}\"",
            dep.ty
        ),
        None => format!("declare it:\n[devices.{target}]\ntype = \"{}\"", dep.ty),
    };
    if dep.explicit {
        Located::new(
            &manifest.file,
            dep.target.span.clone(),
            format!("device `{name}` depends on `{target}`, which is not declared"),
            "no device of this name",
        )
        .with_help(declare)
    } else {
        Located::new(
            &manifest.file,
            dep.target.span.clone(),
            format!(
                "{ty} `{name}` depends on the {} device `{target}` (the default for `{}`), which is not declared",
                dep.ty, dep.key
            ),
            format!("needs a {} device", dep.ty),
        )
        .with_help(format!("{declare}\nor name another with {} = \"...\"", dep.key))
    }
}

fn check_cycles(manifest: &Manifest, by_name: &HashMap<&str, usize>) -> Result<(), Located> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = manifest.devices.len();
    let mut marks = vec![Mark::New; n];
    // Iterative depth-first search; `path` holds the devices on the stack.
    for start in 0..n {
        if marks[start] != Mark::New {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let deps = &manifest.devices[node].deps;
            if *next >= deps.len() {
                marks[node] = Mark::Done;
                path.pop();
                continue;
            }
            let dep = &deps[*next];
            *next += 1;
            let Some(&to) = by_name.get(dep.target.value.as_str()) else {
                continue;
            };
            match marks[to] {
                Mark::Done => {}
                Mark::New => {
                    marks[to] = Mark::Active;
                    path.push((to, 0));
                }
                Mark::Active => {
                    let from = path.iter().position(|(d, _)| *d == to).unwrap_or(0);
                    let mut names: Vec<&str> = path[from..]
                        .iter()
                        .map(|(d, _)| manifest.devices[*d].name.value.as_str())
                        .collect();
                    names.push(manifest.devices[to].name.value.as_str());
                    return Err(Located::new(
                        &manifest.file,
                        dep.target.span.clone(),
                        format!("dependency cycle: {}", names.join(" -> ")),
                        "closes the cycle",
                    )
                    .with_help("a device cannot depend on itself, directly or through others; break the cycle"));
                }
            }
        }
    }
    Ok(())
}

fn check_dependency_types(
    manifest: &Manifest,
    by_name: &HashMap<&str, usize>,
) -> Result<(), Located> {
    for device in &manifest.devices {
        for dep in &device.deps {
            let Some(&to) = by_name.get(dep.target.value.as_str()) else {
                continue;
            };
            let target = &manifest.devices[to];
            if target.ty.value == dep.ty {
                continue;
            }
            return Err(Located::new(
                &manifest.file,
                dep.target.span.clone(),
                format!(
                    "device `{}`: `{}` must name a {} device, but `{}` is a {}",
                    device.name.value, dep.key, dep.ty, target.name.value, target.ty.value
                ),
                format!("expected a {} device", dep.ty),
            )
            .with_label(
                target.ty.span.clone(),
                format!("`{}` is a {} device", target.name.value, target.ty.value),
            )
            .with_help(format!("name a device of type {} here", dep.ty)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::SourceFile;

    fn graph(body: &str, target: Target, choices: Choices) -> Result<Graph, Located> {
        let text = format!("[unikernel]\nname = \"t\"\nentry = \"start\"\n{body}");
        let m = crate::manifest::parse(&SourceFile::new("unikernel.toml", text))?;
        resolve(&m, target, choices)
    }

    const STACK: &str = "[devices.stack]\ntype = \"stack\"\n[devices.service]\ntype = \"net\"\n";

    #[test]
    fn stack_defaults_per_target() {
        let g = graph(STACK, Target::Unix, Choices::default()).unwrap();
        assert_eq!(g.choice(0), Some(Impl::Socket));
        assert!(g.devices[0].uses.is_empty());
        let g = graph(STACK, Target::Hvt, Choices::default()).unwrap();
        assert_eq!(g.choice(0), Some(Impl::Direct));
        assert_eq!(g.devices[0].uses, vec![("net", 1)]);
        let g = graph(
            STACK,
            Target::Unix,
            Choices {
                net: Some(Impl::Direct),
                kv_ro: None,
            },
        )
        .unwrap();
        assert_eq!(g.choice(0), Some(Impl::Direct));
        assert_eq!(g.devices[0].chosen_by, ChosenBy::CommandLine);
    }

    #[test]
    fn socket_on_hvt_explains() {
        let err = graph(
            STACK,
            Target::Hvt,
            Choices {
                net: Some(Impl::Socket),
                kv_ro: None,
            },
        )
        .unwrap_err();
        assert!(
            err.message().contains("not available on hvt"),
            "{}",
            err.message()
        );
        assert!(
            err.message().contains("no host kernel"),
            "{}",
            err.message()
        );
    }

    /// The message of the error resolving `body` for unix, by default.
    fn unix_error(body: &str) -> String {
        graph(body, Target::Unix, Choices::default())
            .unwrap_err()
            .message()
            .to_string()
    }

    #[test]
    fn graph_errors() {
        // (manifest body, part of the message)
        let cases = [
            (
                "[devices.stack]\ntype = \"stack\"\n",
                "`service` (the default for `net`), which is not declared",
            ),
            (
                "[devices.a]\ntype = \"stack\"\nnet = \"c\"\n[devices.c]\ntype = \"console\"\n",
                "`net` must name a net device, but `c` is a console",
            ),
            (
                "[devices.kv]\ntype = \"kv_ro\"\nimpl = \"disk\"\n",
                "needs a `block` device",
            ),
        ];
        for (body, expected) in cases {
            let message = unix_error(body);
            assert!(message.contains(expected), "{message}");
        }
        assert_eq!(
            unix_error(
                "[devices.a]\ntype = \"stack\"\nnet = \"b\"\n[devices.b]\ntype = \"stack\"\nnet = \"a\"\n"
            ),
            "dependency cycle: a -> b -> a"
        );
        let message =
            unix_error("[devices.x-y]\ntype = \"console\"\n[arguments.x_y]\ntype = \"u8\"\n");
        assert!(message.starts_with("duplicate name"), "{message}");
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use crate::diagnostic::SourceFile;

    const SEED: &str = "[unikernel]\nname = \"www\"\nentry = \"app::start\"\ndoc = \"d\"\n\
        [devices.stack]\ntype = \"stack\"\nnet = \"service\"\nimpl = \"direct\"\n\
        [devices.service]\ntype = \"net\"\n[devices.files]\ntype = \"kv_ro\"\nblock = \"disk\"\nsource = \"h\"\n\
        [devices.disk]\ntype = \"block\"\n[arguments.port]\ntype = \"u16\"\ndefault = 80\ndoc = \"p\"\n";

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Mangled manifests (bytes replaced, deleted, duplicated, lines
    /// swapped) never panic the parser or the resolver: every outcome is a
    /// manifest or a located error inside the file.
    #[test]
    fn mangled_manifests_never_panic() {
        let pieces = [
            "[",
            "]",
            "\"",
            "=",
            "\n",
            "type",
            "net",
            "stack",
            "service",
            "-1",
            "999999999999999999999",
            ".",
            "é",
            "#",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let mut text = SEED.to_string();
            for _ in 0..=rng.below(4) {
                let at = rng.below(text.len());
                let at = (0..=at)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                match rng.below(3) {
                    0 => text.insert_str(at, pieces[rng.below(pieces.len())]),
                    1 => {
                        let end = (at + rng.below(8)).min(text.len());
                        let end = (end..=text.len())
                            .find(|i| text.is_char_boundary(*i))
                            .unwrap_or(text.len());
                        text.replace_range(at..end, "");
                    }
                    _ => {
                        let line: String =
                            text.lines().nth(rng.below(20)).unwrap_or("").to_string();
                        text.insert_str(at, &line);
                    }
                }
            }
            let file = SourceFile::new("unikernel.toml", text.clone());
            if let Ok(m) = crate::manifest::parse(&file) {
                for target in Target::ALL {
                    let _ = resolve(&m, target, Choices::default());
                }
            }
        }
    }
}
