//! Preparing what the benchmarks run: the `kiln` tool and the baselines
//! built with cargo and gcc, copies of the examples outside the workspace,
//! and their images per target built through `kiln configure` and
//! `kiln build`.
//!
//! A full run builds the workspace programs it runs (`kiln`, `bare-kvm`,
//! `kiln-hvt` and its harness) with the release profile; a quick run uses
//! the dev profile, which `cargo test --workspace` has already built.
//! Images are always built by `kiln build`, whose generated crates and
//! tenders have one release profile, into the cargo target directory
//! kiln's own tests use, so that dependencies compiled there (or by an
//! earlier run) are compiled once for every example of a target.

use crate::report::Unavailable;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{DocumentMut, Item, Table};

use crate::error::{BenchError, tail};
use crate::exec::{self, Argv, Context, argv};

/// How long one build may take.
pub const BUILD_LIMIT: Duration = Duration::from_secs(1800);

/// Paths everything else uses.
pub struct Env {
    /// The kiln workspace (holds `examples/`).
    pub workspace: PathBuf,
    /// The cargo target directory this command was built in.
    pub target_dir: PathBuf,
    /// The cargo profile of the workspace programs the command builds and
    /// runs: `release`, or `dev` in a quick run.
    pub profile: Profile,
    /// `TARGET/kiln-bench`: copies of the examples, baselines, logs.
    pub work: PathBuf,
    /// The `kiln` binary.
    pub kiln: PathBuf,
    /// `cargo`.
    pub cargo: OsString,
}

/// A cargo profile the workspace programs are built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `--release` (full runs).
    Release,
    /// The default dev profile (quick runs).
    Dev,
}

impl Profile {
    /// The directory of the target directory it builds into.
    pub fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Dev => "debug",
        }
    }

    /// What a row's name says about a program built with it: nothing for
    /// release builds (the figures of the page), `, dev build` otherwise.
    pub fn note(self) -> &'static str {
        match self {
            Profile::Release => "",
            Profile::Dev => ", dev build",
        }
    }
}

impl Env {
    /// Finds the workspace and the target directory; the workspace
    /// programs are built with `profile`.
    pub fn new(profile: Profile) -> Result<Self, BenchError> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let workspace = workspace
            .canonicalize()
            .map_err(|e| BenchError::io("find the workspace", workspace, e))?;
        let exe = std::env::current_exe()
            .map_err(|e| BenchError::Setup(format!("cannot find this program's path: {e}")))?;
        let target_dir = exe
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                BenchError::Setup(format!(
                    "{} is not in a cargo target directory; hint: cargo run --release -p kiln-bench",
                    exe.display()
                ))
            })?;
        let work = target_dir.join("kiln-bench");
        std::fs::create_dir_all(&work).map_err(|e| BenchError::io("create", &work, e))?;
        Ok(Env {
            kiln: target_dir.join(profile.dir()).join("kiln"),
            cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            workspace,
            target_dir,
            profile,
            work,
        })
    }

    /// Where the workspace programs of [`Env::profile`] are.
    pub fn built(&self) -> PathBuf {
        self.target_dir.join(self.profile.dir())
    }

    /// The cargo target directory unikernel builds share: the one kiln's
    /// tests build their unikernels in (`shared_target_dir` in
    /// `crates/kiln/tests/common/mod.rs`), so that a run after `cargo
    /// test` finds the generated crates' dependencies and the tenders
    /// compiled.
    pub fn unikernel_target(&self) -> PathBuf {
        self.target_dir.join("tmp").join("kiln-e2e-target")
    }

    /// `cargo build` (`--release` unless the profile is dev) of `extra` in
    /// the workspace; cargo's stdout.
    pub fn cargo_build(&self, extra: &[&str]) -> Result<String, BenchError> {
        let mut a = argv([self.cargo.as_os_str()]);
        a.extend(argv(["build", "--quiet", "--manifest-path"]));
        a.push(self.workspace.join("Cargo.toml").into());
        if self.profile == Profile::Release {
            a.push("--release".into());
        }
        a.extend(argv(extra));
        let target = self.target_dir.as_os_str();
        let env = [("CARGO_TARGET_DIR", Some(target))];
        let f = exec::run_ok(
            &a,
            Context {
                dir: Some(&self.workspace),
                env: &env,
            },
            BUILD_LIMIT,
        )?;
        Ok(f.stdout)
    }

    /// Builds the `kiln` tool. With the dev profile: every binary and
    /// example of the workspace (`kiln`, `kiln-hvt`, `bare-kvm`) and
    /// kiln-hvt's bench harness, whose dependencies then have the features
    /// `cargo test --workspace` gave them, so that after the tests only the
    /// harness compiles (one package alone would resolve other features
    /// and compile its dependencies anew); the harness's path.
    pub fn build_kiln(&self) -> Result<Option<PathBuf>, BenchError> {
        match self.profile {
            Profile::Release => self.cargo_build(&["-p", "kiln"]).map(|_| None),
            Profile::Dev => {
                let out = self.cargo_build(&[
                    "--workspace",
                    "--bins",
                    "--examples",
                    "--bench",
                    "hvt",
                    "--message-format=json-render-diagnostics",
                ])?;
                bench_executable(&out, "hvt").map(Some).ok_or_else(|| {
                    BenchError::Setup(format!(
                        "cargo did not say where it built kiln-hvt's bench harness: {}",
                        tail(&out, 300)
                    ))
                })
            }
        }
    }

    /// Builds kiln-hvt's bare KVM baseline (with the dev profile,
    /// [`Env::build_kiln`] has); its path.
    pub fn build_bare_kvm(&self) -> Result<PathBuf, BenchError> {
        if self.profile == Profile::Release {
            self.cargo_build(&["-p", "kiln-hvt", "--example", "bare-kvm"])?;
        }
        let path = self.built().join("examples/bare-kvm");
        if path.is_file() {
            Ok(path)
        } else {
            Err(BenchError::Setup(format!(
                "cargo built no {}; hint: cargo build -p kiln-hvt --example bare-kvm",
                path.display()
            )))
        }
    }

    /// Builds a static C program that exits at once with gcc; its path.
    pub fn build_static_hello(&self) -> Result<PathBuf, BenchError> {
        let src = self.work.join("static-hello.c");
        let bin = self.work.join("static-hello");
        let c = "int main(void)\n{\n    return 0;\n}\n";
        std::fs::write(&src, c).map_err(|e| BenchError::io("write", &src, e))?;
        let a = argv([
            OsStr::new("gcc"),
            OsStr::new("-static"),
            OsStr::new("-O2"),
            OsStr::new("-o"),
            bin.as_os_str(),
            src.as_os_str(),
        ]);
        exec::run_ok(&a, Context::default(), Duration::from_secs(120))?;
        Ok(bin)
    }

    /// `kiln ARGS` with `KILN_TARGET_DIR` set to `target` (or removed).
    pub fn kiln(
        &self,
        args: &[&OsStr],
        target: Option<&Path>,
    ) -> Result<exec::Finished, BenchError> {
        let mut a = argv([self.kiln.as_os_str()]);
        a.extend(argv(args));
        let env = [("KILN_TARGET_DIR", target.map(Path::as_os_str))];
        exec::run(
            &a,
            Context {
                dir: None,
                env: &env,
            },
            BUILD_LIMIT,
        )
    }

    /// Copies `examples/NAME` to `WORK/apps/COPY` as a crate outside the
    /// workspace (workspace-inherited fields filled in, dev-dependencies,
    /// tests and benches left out), keeping an earlier copy's `_build` and
    /// `dist` so that rebuilds are incremental; its path.
    pub fn copy_example(&self, name: &str, copy: &str) -> Result<PathBuf, BenchError> {
        let from = self.workspace.join("examples").join(name);
        let to = self.work.join("apps").join(copy);
        std::fs::create_dir_all(&to).map_err(|e| BenchError::io("create", &to, e))?;
        let skip = ["_build", "dist", "target", "tests", "benches"];
        let entries = std::fs::read_dir(&from).map_err(|e| BenchError::io("read", &from, e))?;
        for entry in entries.flatten() {
            let file = entry.file_name();
            if skip.iter().any(|s| OsStr::new(s) == file) {
                continue;
            }
            let dest = to.join(&file);
            if dest.is_dir() {
                std::fs::remove_dir_all(&dest).map_err(|e| BenchError::io("remove", &dest, e))?;
            }
            copy_tree(&entry.path(), &dest)?;
        }
        let manifest = to.join("Cargo.toml");
        let text =
            std::fs::read_to_string(&manifest).map_err(|e| BenchError::io("read", &manifest, e))?;
        let root = self.workspace.join("Cargo.toml");
        let root_text =
            std::fs::read_to_string(&root).map_err(|e| BenchError::io("read", &root, e))?;
        let out = standalone_manifest(&text, &root_text, &self.workspace, &from)?;
        std::fs::write(&manifest, out).map_err(|e| BenchError::io("write", &manifest, e))?;
        Ok(to)
    }
}

/// The executable of the bench target `name` in cargo's JSON messages.
fn bench_executable(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|m| {
            let target = &m["target"];
            target["name"] == name
                && target["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bench"))
        })
        .and_then(|m| m["executable"].as_str().map(PathBuf::from))
}

/// Copies a file or a directory tree (symbolic links are left out).
fn copy_tree(from: &Path, to: &Path) -> Result<(), BenchError> {
    let meta = std::fs::symlink_metadata(from).map_err(|e| BenchError::io("stat", from, e))?;
    if meta.is_dir() {
        std::fs::create_dir_all(to).map_err(|e| BenchError::io("create", to, e))?;
        let entries = std::fs::read_dir(from).map_err(|e| BenchError::io("read", from, e))?;
        for entry in entries.flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if meta.is_file() {
        std::fs::copy(from, to).map_err(|e| BenchError::io("copy to", to, e))?;
    }
    Ok(())
}

fn inherits(item: &Item) -> bool {
    item.as_table_like()
        .and_then(|t| t.get("workspace"))
        .and_then(Item::as_bool)
        == Some(true)
}

/// Rewrites the manifest of the member crate in `crate_dir` into one that
/// builds on its own anywhere: inherited fields filled in, path
/// dependencies absolute.
fn standalone_manifest(
    text: &str,
    root: &str,
    workspace: &Path,
    crate_dir: &Path,
) -> Result<String, BenchError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        BenchError::Setup(format!("cannot read {what} as TOML: {e}"))
    };
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| bad("an example's Cargo.toml", &e))?;
    let root: DocumentMut = root
        .parse()
        .map_err(|e| bad("the workspace Cargo.toml", &e))?;
    let ws = root.get("workspace");
    let ws_package = ws.and_then(|w| w.get("package"));
    let ws_deps = ws.and_then(|w| w.get("dependencies"));

    if let Some(package) = doc.get_mut("package").and_then(Item::as_table_like_mut) {
        let keys: Vec<String> = package
            .iter()
            .filter(|(_, v)| inherits(v))
            .map(|(k, _)| k.to_owned())
            .collect();
        for key in keys {
            let value = ws_package
                .and_then(|p| p.get(&key))
                .cloned()
                .ok_or_else(|| {
                    BenchError::Setup(format!("the workspace has no package.{key} to inherit"))
                })?;
            package.insert(&key, value);
        }
    }
    if let Some(deps) = doc
        .get_mut("dependencies")
        .and_then(Item::as_table_like_mut)
    {
        let keys: Vec<String> = deps
            .iter()
            .filter(|(_, v)| inherits(v))
            .map(|(k, _)| k.to_owned())
            .collect();
        for key in keys {
            let mut table = toml_edit::InlineTable::new();
            if let Some(from) = ws_deps.and_then(|d| d.get(&key)) {
                if let Some(version) = from.as_str() {
                    table.insert("version", version.into());
                } else if let Some(t) = from.as_table_like() {
                    for (k, v) in t.iter() {
                        if let Some(v) = v.as_value() {
                            table.insert(k, v.clone());
                        }
                    }
                }
            } else {
                return Err(BenchError::Setup(format!(
                    "the workspace has no dependency {key} to inherit"
                )));
            }
            if let Some(path) = table.get("path").and_then(|p| p.as_str()) {
                let abs = workspace.join(path).display().to_string();
                table.insert("path", abs.into());
            }
            if let Some(features) = deps
                .get(&key)
                .and_then(Item::as_table_like)
                .and_then(|t| t.get("features"))
                .and_then(Item::as_value)
            {
                table.insert("features", features.clone());
            }
            deps.insert(&key, Item::Value(table.into()));
        }
        for (_, dep) in deps.iter_mut() {
            if let Some(t) = dep.as_table_like_mut()
                && let Some(path) = t.get("path").and_then(Item::as_str)
                && Path::new(path).is_relative()
            {
                let abs = crate_dir.join(path).display().to_string();
                t.insert("path", toml_edit::value(abs));
            }
        }
    }
    for section in ["dev-dependencies", "lints", "bench", "test", "example"] {
        doc.remove(section);
    }
    doc.insert("workspace", Item::Table(Table::new()));
    Ok(doc.to_string())
}

/// Where a unikernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// A host process with the host's stack (or no network).
    Unix,
    /// A host process with kiln's own stack over a tap.
    UnixDirect,
    /// A KVM guest under kiln-hvt.
    Hvt,
    /// A seccomp-sandboxed process under kiln-spt.
    Spt,
}

impl Variant {
    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Unix => "unix",
            Variant::UnixDirect => "unix-direct",
            Variant::Hvt => "hvt",
            Variant::Spt => "spt",
        }
    }

    /// The `kiln -t` target.
    pub fn target(self) -> &'static str {
        match self {
            Variant::Unix | Variant::UnixDirect => "unix",
            Variant::Hvt => "hvt",
            Variant::Spt => "spt",
        }
    }

    /// The `--net` choice for a unikernel with a stack.
    fn net(self) -> &'static str {
        match self {
            Variant::Unix => "socket",
            _ => "direct",
        }
    }

    /// Whether it runs under a tender (and so takes `--mem`).
    pub fn tendered(self) -> bool {
        matches!(self, Variant::Hvt | Variant::Spt)
    }

    /// Whether its network is a tap (kiln's own stack).
    pub fn tap(self) -> bool {
        self != Variant::Unix
    }
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Built {
    /// Which variant.
    pub variant: Variant,
    /// `DIR/dist/NAME.TARGET`.
    pub image: PathBuf,
    /// `DIR/dist/kiln-hvt` or `kiln-spt`.
    pub tender: Option<PathBuf>,
    /// Why it cannot run on this machine, if it cannot.
    pub unrunnable: Option<Unavailable>,
}

impl Built {
    /// The command line running it: under `tender --mem=MEM` on hvt and
    /// spt, with its net device on the tap `tap`, then `args`.
    pub fn argv(&self, mem: Option<u32>, tap: Option<&str>, args: &[String]) -> Argv {
        let mut a = Vec::new();
        let net = tap.map(|t| OsString::from(format!("--net:service={t}")));
        if let Some(tender) = &self.tender {
            a.push(tender.as_os_str().to_owned());
            a.extend(mem.map(|m| OsString::from(format!("--mem={m}"))));
            a.extend(net);
            a.push("--".into());
            a.push(self.image.as_os_str().to_owned());
        } else {
            a.push(self.image.as_os_str().to_owned());
            a.extend(net);
        }
        a.extend(args.iter().map(OsString::from));
        a
    }
}

/// What building a variant gave.
#[derive(Debug, Clone)]
pub enum Availability {
    /// An image.
    Ready(Built),
    /// kiln accepted it but the build failed.
    Broken(String),
}

/// The main message of a kiln diagnostic (the text after `×` and its
/// continuation lines), or the end of stderr.
pub fn diagnostic(stderr: &str) -> String {
    let mut lines = stderr.lines();
    let mut msg = String::new();
    for line in lines.by_ref() {
        if let Some((_, rest)) = line.split_once('×') {
            msg.push_str(rest.trim());
            break;
        }
    }
    for line in lines {
        match line.trim_start().strip_prefix('│') {
            Some(more) if !msg.is_empty() => {
                msg.push(' ');
                msg.push_str(more.trim());
            }
            _ => break,
        }
    }
    if !msg.is_empty() {
        return msg;
    }
    // Not a kiln diagnostic: cargo's first error, else the end.
    match stderr.lines().position(|l| l.starts_with("error")) {
        Some(i) => tail(
            &stderr
                .lines()
                .skip(i)
                .take(8)
                .collect::<Vec<_>>()
                .join("\n"),
            300,
        ),
        None => tail(stderr, 300),
    }
}

/// Why KVM cannot be used here, if it cannot.
pub fn kvm_missing() -> Option<Unavailable> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) => Some(Unavailable::NoKvm(e.to_string())),
    }
}

/// Configures and builds the unikernel in `dir` for `variant` (with the
/// direct or socket stack if `net`), with the shared target directory.
pub fn build(env: &Env, dir: &Path, variant: Variant, net: bool) -> Availability {
    let t = variant.target();
    let mut args = vec![OsStr::new("configure"), OsStr::new("-t"), OsStr::new(t)];
    if net {
        args.extend([OsStr::new("--net"), OsStr::new(variant.net())]);
    }
    args.push(dir.as_os_str());
    let target = env.unikernel_target();
    match env.kiln(&args, Some(&target)) {
        Ok(f) if f.status.success() => {}
        Ok(f) => return Availability::Broken(format!("configure: {}", diagnostic(&f.stderr))),
        Err(e) => return Availability::Broken(e.to_string()),
    }
    let args = [
        OsStr::new("build"),
        OsStr::new("-t"),
        OsStr::new(t),
        dir.as_os_str(),
    ];
    match env.kiln(&args, Some(&target)) {
        Ok(f) if f.status.success() => {}
        Ok(f) => return Availability::Broken(diagnostic(&f.stderr)),
        Err(e) => return Availability::Broken(e.to_string()),
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.split('-').next().unwrap_or_default().to_owned();
    let image = dir.join("dist").join(format!("{name}.{t}"));
    if !image.is_file() {
        return Availability::Broken(format!("kiln build made no {}", image.display()));
    }
    let tender = match variant {
        Variant::Hvt => Some(dir.join("dist/kiln-hvt")),
        Variant::Spt => Some(dir.join("dist/kiln-spt")),
        _ => None,
    };
    if let Some(t) = &tender
        && !t.is_file()
    {
        return Availability::Broken(format!("kiln build made no {}", t.display()));
    }
    let unrunnable = match variant {
        Variant::Hvt => kvm_missing(),
        _ => None,
    };
    Availability::Ready(Built {
        variant,
        image,
        tender,
        unrunnable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_manifest_builds_on_its_own() {
        let root = "[workspace]\nmembers = []\n[workspace.package]\nversion = \"0.3.0\"\nedition = \"2024\"\n\
                    [workspace.dependencies]\nkiln-devices = { path = \"crates/kiln-devices\" }\n\
                    libc = \"0.2\"\n";
        let member = "[package]\nname = \"hello\"\nversion.workspace = true\nedition.workspace = true\n\n\
                      [dependencies]\nkiln-devices.workspace = true\nlibc = { workspace = true, features = [\"std\"] }\n\
                      kiln-rt = { path = \"../../crates/kiln-rt\" }\n\n\
                      [dev-dependencies]\nkiln-unix = { path = \"../../crates/kiln-unix\" }\n\n\
                      [lints]\nworkspace = true\n";
        let out = standalone_manifest(
            member,
            root,
            Path::new("/ws"),
            Path::new("/ws/examples/hello"),
        )
        .unwrap();
        let doc: DocumentMut = out.parse().unwrap();
        assert_eq!(doc["package"]["version"].as_str(), Some("0.3.0"));
        assert_eq!(doc["package"]["edition"].as_str(), Some("2024"));
        let deps = &doc["dependencies"];
        assert_eq!(
            deps["kiln-devices"]["path"].as_str(),
            Some("/ws/crates/kiln-devices")
        );
        assert_eq!(deps["libc"]["version"].as_str(), Some("0.2"));
        assert_eq!(
            deps["libc"]["features"].as_array().map(|a| a.len()),
            Some(1)
        );
        assert_eq!(
            deps["kiln-rt"]["path"].as_str(),
            Some("/ws/examples/hello/../../crates/kiln-rt")
        );
        assert!(doc.get("dev-dependencies").is_none());
        assert!(doc.get("lints").is_none());
        assert!(doc.get("workspace").is_some());
    }

    #[test]
    fn finds_the_bench_executable() {
        let messages = "{\"reason\":\"compiler-artifact\",\"target\":{\"kind\":[\"bin\"],\"name\":\"hvt\"},\"executable\":\"/t/debug/hvt\"}\n\
                        not json\n\
                        {\"reason\":\"compiler-artifact\",\"target\":{\"kind\":[\"bench\"],\"name\":\"hvt\"},\"executable\":\"/t/debug/deps/hvt-1f\"}\n\
                        {\"reason\":\"build-finished\",\"success\":true}\n";
        assert_eq!(
            bench_executable(messages, "hvt"),
            Some(PathBuf::from("/t/debug/deps/hvt-1f"))
        );
        assert_eq!(bench_executable(messages, "store"), None);
    }

    #[test]
    fn diagnostic_takes_the_main_message() {
        let stderr = "  × the hvt target is not yet supported: a\n  │ b\n  hint: c\n";
        assert_eq!(
            diagnostic(stderr),
            "the hvt target is not yet supported: a b"
        );
        let cargo = "   Compiling x\nerror[E0433]: cannot find crate\n  --> src/lib.rs:1:1\n";
        assert!(diagnostic(cargo).starts_with("error[E0433]: cannot find crate"));
    }

    #[test]
    fn tender_command_lines() {
        let b = Built {
            variant: Variant::Hvt,
            image: "/d/www.hvt".into(),
            tender: Some("/d/kiln-hvt".into()),
            unrunnable: None,
        };
        assert_eq!(
            exec::show(&b.argv(Some(8), Some("tap0"), &["--port=80".into()])),
            "/d/kiln-hvt --mem=8 --net:service=tap0 -- /d/www.hvt --port=80"
        );
        let u = Built {
            variant: Variant::UnixDirect,
            image: "/d/www.unix".into(),
            tender: None,
            unrunnable: None,
        };
        assert_eq!(
            exec::show(&u.argv(None, Some("tap0"), &["--port=80".into()])),
            "/d/www.unix --net:service=tap0 --port=80"
        );
    }
}
