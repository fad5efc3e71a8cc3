//! Code generation: one backend per target turns a checked [`Plan`] into the
//! files of the generated crate, written only when their content changed.

use std::path::{Path, PathBuf};

use crate::diagnostic::{ConfigError, Located};
use crate::entry::Entry;
use crate::graph::Graph;
use crate::manifest::Manifest;
use crate::model::Target;
use program::{Construct, Resolved};

pub mod program;
pub mod solo5;
pub mod unix;
pub mod virtio;

/// Everything a backend needs: the checked manifest, graph and entry
/// function, and where things are.
#[derive(Debug)]
pub struct Plan<'a> {
    /// The manifest.
    pub manifest: &'a Manifest,
    /// The graph, resolved for the backend's target.
    pub graph: &'a Graph,
    /// The entry function.
    pub entry: &'a Entry,
    /// Which devices are constructed (parameters and what they use), by
    /// position in [`Manifest::devices`].
    pub needed: &'a [bool],
    /// The unikernel crate's package name.
    pub package: &'a str,
    /// The unikernel's directory.
    pub unikernel_dir: &'a Path,
    /// The root of the kiln source tree (for path dependencies).
    pub source_dir: &'a Path,
}

/// A file of the generated crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Its path, relative to the generated crate's directory.
    pub path: PathBuf,
    /// Its content.
    pub contents: String,
}

/// Generates the crate for one target.
pub trait Backend: Sync {
    /// The target.
    fn target(&self) -> Target;
    /// The files of the generated crate, or why this plan cannot be
    /// generated (an implementation this backend does not provide yet).
    fn generate(&self, plan: &Plan<'_>) -> Result<Vec<GeneratedFile>, Located>;

    /// The `--target` triple cargo builds the generated crate for; `None`
    /// for the host. The image is then
    /// `TARGET_DIR/[TRIPLE/]release/NAME`.
    fn cargo_target(&self) -> Option<&'static str> {
        None
    }
}

/// The backends, one per target that kiln can generate code for.
static BACKENDS: &[&dyn Backend] = &[&unix::Unix, &solo5::HVT, &solo5::SPT, &virtio::Virtio];

/// The backend of `target`, or `None` if code generation for it has not
/// landed yet.
pub fn backend(target: Target) -> Option<&'static dyn Backend> {
    BACKENDS.iter().copied().find(|b| b.target() == target)
}

/// Writes `files` under `dir`, each only if its content differs from what
/// is there. Returns whether anything was written.
pub fn write_if_changed(dir: &Path, files: &[GeneratedFile]) -> Result<bool, ConfigError> {
    let mut changed = false;
    for file in files {
        let path = dir.join(&file.path);
        if std::fs::read(&path).is_ok_and(|old| old == file.contents.as_bytes()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ConfigError::write(parent, e))?;
        }
        std::fs::write(&path, &file.contents).map_err(|e| ConfigError::write(&path, e))?;
        changed = true;
    }
    Ok(changed)
}

/// One file of a baked read-only store: its key, where it is, and its
/// SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakedFile {
    /// The key: the path under the source directory, `/`-separated.
    pub key: String,
    /// The file, absolute.
    pub path: PathBuf,
    /// `kiln_baked::digest_of` its contents.
    pub digest: [u8; 32],
}

/// The regular files under `dir`, recursively, sorted by key; symbolic
/// links are followed, other file types and names that are not UTF-8 are
/// skipped.
pub fn baked_files(dir: &Path) -> std::io::Result<Vec<BakedFile>> {
    fn walk(
        dir: &Path,
        prefix: &str,
        depth: usize,
        out: &mut Vec<BakedFile>,
    ) -> std::io::Result<()> {
        // Bounded, so that a symbolic link loop ends.
        if depth > 32 {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let path = entry.path();
            let key = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                walk(&path, &key, depth + 1, out)?;
            } else if meta.is_file() {
                let data = std::fs::read(&path)?;
                out.push(BakedFile {
                    key,
                    path,
                    digest: kiln_baked::digest_of(&data),
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", 0, &mut out)?;
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

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

/// What a backend adds to the `Cargo.toml` every generated crate shares: a
/// package with one binary, the unikernel, kiln-devices, the platform's
/// crates, the kiln libraries the resolved constructs use, the release
/// profile, and a workspace of its own.
pub(super) struct CargoToml<'a> {
    /// Lines added to `[package]`.
    pub package: &'a str,
    /// Lines added to `[[bin]]`.
    pub bin: &'a str,
    /// The platform's dependencies, after kiln-devices: a crate under
    /// `crates/` and what follows its path (`, features = [...]`).
    pub platform: &'a [(&'a str, &'a str)],
    /// Profiles after the release one.
    pub profiles: &'a str,
}

impl CargoToml<'_> {
    /// The `Cargo.toml` of the crate generated for `target`.
    pub(super) fn render(&self, plan: &Plan<'_>, resolved: &Resolved, target: Target) -> String {
        let kv = !resolved.baked.is_empty();
        let store = resolved.any(|c| matches!(c, Construct::TarStore | Construct::LogStore));
        let net = resolved.any(|c| c == Construct::DirectStack);
        let build_dir = plan.unikernel_dir.join("_build").join(target.name());
        let crates = plan.source_dir.join("crates");
        let path = |p: PathBuf| toml_str(&p.display().to_string());
        let dependency = |name: &str, extra: &str| {
            format!("{name} = {{ path = {}{extra} }}\n", path(crates.join(name)))
        };
        let name = &plan.manifest.name.value;
        let platform: String = self
            .platform
            .iter()
            .map(|(name, extra)| dependency(name, extra))
            .collect();
        let libraries: String = [("kiln-baked", kv), ("kiln-store", store), ("kiln-net", net)]
            .iter()
            .filter(|(_, used)| *used)
            .map(|(name, _)| dependency(name, ""))
            .collect();
        format!(
            "# Generated by `kiln configure` for the unikernel `{name}` on {target}; do not edit.\n\
             [package]\n\
             name = {package}\n\
             version = \"0.0.0\"\n\
             edition = \"2024\"\n\
             publish = false\n\
             {package_extra}\
             \n\
             [[bin]]\n\
             name = {bin}\n\
             path = \"src/main.rs\"\n\
             {bin_extra}\
             \n\
             [dependencies]\n\
             unikernel = {{ package = {unikernel}, path = {unikernel_path} }}\n\
             {devices}\
             {platform}\
             {libraries}\
             \n\
             {PROFILE}\n\
             {profiles}\
             # A workspace of its own: not part of any enclosing workspace.\n\
             [workspace]\n",
            package = toml_str(&format!("kiln-generated-{name}-{target}")),
            package_extra = self.package,
            bin = toml_str(name),
            bin_extra = self.bin,
            unikernel = toml_str(plan.package),
            unikernel_path = path(relative_path(&build_dir, plan.unikernel_dir)),
            devices = dependency("kiln-devices", ""),
            profiles = self.profiles,
        )
    }
}

/// A Rust string literal for `s`.
pub fn rust_str(s: &str) -> String {
    format!("{s:?}")
}

/// A TOML basic string for `s`.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A path relative from directory `from` to `to`, both absolute (falls back
/// to `to` itself).
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to_c: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to_c).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return to.to_path_buf();
    }
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to_c[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/a/b/_build/unix"), Path::new("/a/b")),
            PathBuf::from("../..")
        );
        assert_eq!(
            relative_path(Path::new("/a/x"), Path::new("/a/y/z")),
            PathBuf::from("../y/z")
        );
    }

    #[test]
    fn string_escapes() {
        assert_eq!(toml_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(rust_str("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
    }

    #[test]
    fn writes_only_changed_files() {
        let dir = std::env::temp_dir().join(format!("kiln-config-write-{}", std::process::id()));
        let files = vec![GeneratedFile {
            path: PathBuf::from("src/main.rs"),
            contents: "fn main() {}\n".into(),
        }];
        assert!(write_if_changed(&dir, &files).unwrap());
        assert!(!write_if_changed(&dir, &files).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
