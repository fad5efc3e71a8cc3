//! A unikernel directory: its paths, and the `configure` step that reads
//! `unikernel.toml` and the crate, checks everything, and writes the
//! generated crate.

use std::path::{Path, PathBuf};

use crate::codegen::{self, Plan};
use crate::diagnostic::{ConfigError, Located, SourceFile};
use crate::entry::{self, Entry, Param};
use crate::graph::{self, Graph};
use crate::manifest::{self, Manifest};
use crate::model::{Choices, Impl, Target};

/// The root of the kiln source tree that generated crates depend on:
/// `$KILN_SOURCE_DIR`, else the tree this kiln was built from.
pub fn source_dir() -> PathBuf {
    match std::env::var_os("KILN_SOURCE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("..")
            .components()
            .collect::<PathBuf>(),
    }
}

/// `rel` (a path inside a unikernel) as shown in messages: under `shown`,
/// the unikernel's directory as the user named it, unless that is `.`.
pub fn shown_path(shown: &Path, rel: &Path) -> String {
    let shown: PathBuf = shown
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    shown.join(rel).display().to_string()
}

/// A unikernel directory.
#[derive(Debug, Clone)]
pub struct Project {
    /// The directory, absolute.
    pub dir: PathBuf,
    /// The directory as the user named it, for messages.
    pub shown: PathBuf,
}

/// Everything checked about a unikernel for one target.
#[derive(Debug)]
pub struct Checked {
    /// The manifest.
    pub manifest: Manifest,
    /// The graph, resolved.
    pub graph: Graph,
    /// The entry function.
    pub entry: Entry,
    /// Which devices are constructed.
    pub needed: Vec<bool>,
    /// The crate's package name.
    pub package: String,
}

/// The result of `configure`.
#[derive(Debug)]
pub struct Configured {
    /// What was checked.
    pub checked: Checked,
    /// The generated crate's directory.
    pub build_dir: PathBuf,
    /// Whether any generated file was (re)written.
    pub changed: bool,
    /// The `--target` triple to build for (`None`: the host).
    pub cargo_target: Option<&'static str>,
}

const CHOICES_FILE: &str = "kiln-choices";

impl Project {
    /// The unikernel in `dir`.
    pub fn open(dir: &Path) -> Result<Project, ConfigError> {
        let manifest = dir.join("unikernel.toml");
        if !manifest.is_file() {
            return Err(ConfigError::read(
                &manifest,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let shown = dir.to_path_buf();
        let dir = std::path::absolute(dir).map_err(|e| ConfigError::read(dir, e))?;
        let dir = dir.canonicalize().unwrap_or(dir);
        Ok(Project { dir, shown })
    }

    /// `DIR/_build/TARGET`: the generated crate.
    pub fn build_dir(&self, target: Target) -> PathBuf {
        self.dir.join("_build").join(target.name())
    }

    /// The cargo target directory shared by unikernel builds:
    /// `$KILN_TARGET_DIR`, else `DIR/_build/target`.
    pub fn target_dir(&self) -> PathBuf {
        match std::env::var_os("KILN_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => self.dir.join("_build").join("target"),
        }
    }

    /// `DIR/dist`.
    pub fn dist_dir(&self) -> PathBuf {
        self.dir.join("dist")
    }

    /// The choices saved by the last `configure` for `target`: `None` if
    /// it was never configured. A file kiln cannot read, or whose lines it
    /// does not know, is an error naming the file (it is kiln's own, so
    /// configuring again rewrites it).
    pub fn saved_choices(&self, target: Target) -> Result<Option<Choices>, ConfigError> {
        let path = self.build_dir(target).join(CHOICES_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ConfigError::read(&path, e)),
        };
        let file = SourceFile::new(path.display().to_string(), text.clone());
        let mut choices = Choices::default();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let span = offset..offset + line.trim_end().len();
            offset += line.len();
            let line = line.trim_end();
            let choice = match line.split_once('=') {
                Some(("net", v)) => Impl::from_name(v).map(|i| choices.net = Some(i)),
                Some(("kv_ro", v)) => Impl::from_name(v).map(|i| choices.kv_ro = Some(i)),
                _ if line.is_empty() => Some(()),
                _ => None,
            };
            if choice.is_none() {
                return Err(Located::new(
                    &file,
                    span,
                    format!("kiln cannot read the saved choice `{line}`"),
                    "unknown choice",
                )
                .with_help(format!(
                    "run `kiln configure -t {target}` again to rewrite this file"
                ))
                .into());
            }
        }
        Ok(Some(choices))
    }

    /// The choices `given`, and those of the last `configure` for `target`
    /// for the rest: what `kiln build`, `run` and `package` configure with.
    pub fn choices(&self, target: Target, given: Choices) -> Result<Choices, ConfigError> {
        let saved = self.saved_choices(target)?.unwrap_or_default();
        Ok(Choices {
            net: given.net.or(saved.net),
            kv_ro: given.kv_ro.or(saved.kv_ro),
        })
    }

    /// Reads and checks the unikernel for `target` without writing
    /// anything.
    pub fn check(&self, target: Target, choices: Choices) -> Result<Checked, ConfigError> {
        let path = self.dir.join("unikernel.toml");
        let name = shown_path(&self.shown, Path::new("unikernel.toml"));
        let manifest = manifest::parse(&SourceFile::read(&path, name)?)?;
        let graph = graph::resolve(&manifest, target, choices)?;
        for (i, device) in manifest.devices.iter().enumerate() {
            if let (Some(Impl::Baked), Some(source)) = (graph.choice(i), &device.source)
                && !self.dir.join(&source.value).is_dir()
            {
                return Err(Located::new(
                    &manifest.file,
                    source.span.clone(),
                    format!(
                        "device `{}`: the source directory `{}` does not exist",
                        device.name.value, source.value
                    ),
                    "no such directory",
                )
                .with_help(format!(
                    "create {} or name an existing directory, relative to the unikernel",
                    shown_path(&self.shown, Path::new(&source.value))
                ))
                .into());
            }
        }
        let package = self.package_name()?;
        let entry = entry::check(&self.dir, &self.shown, &manifest)?;
        let mut needed = vec![false; manifest.devices.len()];
        let mut stack: Vec<usize> = entry
            .params
            .iter()
            .filter_map(|p| match p {
                Param::Device(i) => Some(*i),
                Param::Argument(_) => None,
            })
            .collect();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut needed[i], true) {
                continue;
            }
            stack.extend(graph.devices[i].uses.iter().map(|(_, d)| *d));
        }
        Ok(Checked {
            manifest,
            graph,
            entry,
            needed,
            package,
        })
    }

    /// The crate's package name, from its Cargo.toml, after checking that
    /// a `kiln-devices` path dependency names this kiln's copy.
    fn package_name(&self) -> Result<String, ConfigError> {
        let path = self.dir.join("Cargo.toml");
        let file = SourceFile::read(&path, shown_path(&self.shown, Path::new("Cargo.toml")))?;
        let table = toml::de::DeTable::parse(&file.text).map_err(|e| {
            Located::new(
                &file,
                e.span().unwrap_or(0..0),
                format!("invalid TOML in Cargo.toml: {}", e.message().trim()),
                e.message().trim().to_string(),
            )
            .with_help("see https://toml.io for the syntax")
        })?;
        let table = table.get_ref();
        if let Some(dep_path) = table
            .get("dependencies")
            .and_then(|d| d.get_ref().as_table()?.get("kiln-devices"))
            .and_then(|d| d.get_ref().as_table()?.get("path"))
            && let Some(value) = dep_path.get_ref().as_str()
        {
            self.check_devices_path(&file, value, dep_path.span())?;
        }
        let name = table
            .get("package")
            .and_then(|p| p.get_ref().as_table()?.get("name"))
            .and_then(|n| n.get_ref().as_str().map(str::to_string));
        name.ok_or_else(|| {
            Located::new(
                &file,
                0..0,
                "Cargo.toml has no [package] name",
                "expected a package",
            )
            .with_help(
                "the unikernel is a library crate: [package] name = \"hello\", with src/lib.rs",
            )
            .into()
        })
    }

    /// The unikernel's `kiln-devices = { path = VALUE }` must be the copy
    /// the generated crate uses, or the two would be different crates with
    /// traits of the same names. `kiln new` writes the path relative to the
    /// unikernel, so a moved unikernel lands here.
    fn check_devices_path(
        &self,
        file: &SourceFile,
        value: &str,
        span: std::ops::Range<usize>,
    ) -> Result<(), ConfigError> {
        let ours = source_dir().join("crates").join("kiln-devices");
        let ours = ours.canonicalize().unwrap_or(ours);
        let theirs = self.dir.join(value);
        let message = match theirs.canonicalize() {
            Ok(found) if found == ours => return Ok(()),
            Ok(found) => format!(
                "kiln-devices at `{value}` is {}, not the copy of this kiln ({})",
                found.display(),
                ours.display()
            ),
            Err(_) => format!("kiln-devices at `{value}` does not exist"),
        };
        let fix = crate::codegen::relative_path(&self.dir, &ours);
        Err(Located::new(file, span, message, "this path")
            .with_help(format!(
                "kiln-devices = {{ path = {} }}",
                crate::codegen::toml_str(&fix.display().to_string())
            ))
            .into())
    }

    /// Checks the unikernel for `target` and writes the generated crate to
    /// `DIR/_build/TARGET/`.
    pub fn configure(&self, target: Target, choices: Choices) -> Result<Configured, ConfigError> {
        let checked = self.check(target, choices)?;
        let Some(backend) = codegen::backend(target) else {
            return Err(Located::unlocated(format!(
                "the {target} target is not yet supported: unikernel.toml and the entry function are valid for {target}, \
                 but this kiln cannot generate {target} code yet"
            ))
            .with_help("build for unix in the meantime: kiln configure -t unix")
            .into());
        };
        let build_dir = self.build_dir(target);
        let source_dir = source_dir();
        let plan = Plan {
            manifest: &checked.manifest,
            graph: &checked.graph,
            entry: &checked.entry,
            needed: &checked.needed,
            package: &checked.package,
            unikernel_dir: &self.dir,
            source_dir: &source_dir,
        };
        let mut files = backend.generate(&plan)?;
        let mut saved = String::new();
        if let Some(net) = choices.net {
            saved.push_str(&format!("net={net}\n"));
        }
        if let Some(kv_ro) = choices.kv_ro {
            saved.push_str(&format!("kv_ro={kv_ro}\n"));
        }
        files.push(codegen::GeneratedFile {
            path: PathBuf::from(CHOICES_FILE),
            contents: saved,
        });
        // The generated crate builds with the toolchain and the dependency
        // versions kiln itself was tested with.
        for shared in ["rust-toolchain.toml", "Cargo.lock"] {
            let target_file = build_dir.join(shared);
            if !target_file.exists()
                && let Ok(contents) = std::fs::read_to_string(source_dir.join(shared))
            {
                files.push(codegen::GeneratedFile {
                    path: PathBuf::from(shared),
                    contents,
                });
            }
        }
        let changed = codegen::write_if_changed(&build_dir, &files)?;
        Ok(Configured {
            checked,
            build_dir,
            changed,
            cargo_target: backend.cargo_target(),
        })
    }
}
