//! `kiln build`: configure, run cargo on the generated crate, and copy the
//! image to `DIR/dist/NAME.TARGET`; for hvt and spt also build the tender
//! with only the modules the device graph needs, as `DIR/dist/kiln-TARGET`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kiln_config::{Choices, Configured, DeviceType, Project, Target};

use crate::cli::BuildArgs;
use crate::error::KilnError;

/// What `build` made.
#[derive(Debug)]
pub struct Built {
    /// `DIR/dist/NAME.TARGET`.
    pub image: PathBuf,
    /// `DIR/dist/kiln-hvt` or `DIR/dist/kiln-spt`; `None` on unix.
    pub tender: Option<PathBuf>,
}

/// Runs `kiln build`.
pub fn run(args: &BuildArgs) -> Result<u8, KilnError> {
    let project = super::open(&args.dir)?;
    let built = build(
        &project,
        super::target(args.target.target),
        super::choices(&args.choices),
        false,
    )?;
    eprintln!("built {}", built.image.display());
    if let Some(tender) = &built.tender {
        eprintln!("built {}", tender.display());
    }
    Ok(0)
}

/// What rustc says when a crate needs std on a target without it.
const NO_STD_MARK: &str = "can't find crate for `std`";

/// Configures `project` for `target` (with the choices `given`, and those of
/// its last `configure` for the rest), builds it (and its tender on hvt and
/// spt), and returns what it made.
pub fn build(
    project: &Project,
    target: Target,
    given: Choices,
    quiet: bool,
) -> Result<Built, KilnError> {
    build_with(project, target, given, quiet, false)
}

/// [`build`], and with `gdb` for a debugger: the image keeps its debug
/// information (DWARF line tables, frames and variables, so that gdb's `bt`
/// and `break FILE:LINE` work; symbols are kept in every build) and the hvt
/// tender is built with its gdb module as `dist/kiln-hvt-gdb` (the spt
/// tender needs none: its `--gdb` stops the guest process for gdb to attach).
pub fn build_with(
    project: &Project,
    target: Target,
    given: Choices,
    quiet: bool,
    gdb: bool,
) -> Result<Built, KilnError> {
    let configured = project.configure(target, project.choices(target, given)?)?;
    let name = configured.checked.manifest.name.value.clone();
    let target_dir = project.target_dir();
    std::fs::create_dir_all(&target_dir).map_err(|e| KilnError::io("create", &target_dir, e))?;
    // Builds sharing a target directory also share the binaries cargo
    // leaves at `release/NAME`: one kiln at a time builds and copies.
    let lock_path = target_dir.join(".kiln-build.lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| KilnError::io("create", &lock_path, e))?;
    lock.lock()
        .map_err(|e| KilnError::io("lock", &lock_path, e))?;

    let mut cargo = cargo_command(&configured.build_dir, &target_dir, quiet);
    cargo
        .arg("--manifest-path")
        .arg(configured.build_dir.join("Cargo.toml"));
    if gdb {
        cargo
            .env("CARGO_PROFILE_RELEASE_DEBUG", "true")
            .env("CARGO_PROFILE_RELEASE_STRIP", "none");
    }
    if let Some(triple) = configured.cargo_target {
        cargo.arg("--target").arg(triple);
    }
    let needs_std = run_cargo(cargo, configured.cargo_target.is_some())?;
    if let Some(needs_std) = needs_std {
        let why = if needs_std {
            format!(
                "; the unikernel crate `{}` or one of its dependencies needs std, which {target} images (x86_64-unknown-none) do not have\n  \
                 hint: make the crate #![no_std] (core and alloc) and turn off the std features of its dependencies (default-features = false)",
                configured.checked.package
            )
        } else {
            "; the messages above say why".to_string()
        };
        return Err(KilnError::Build(format!(
            "cargo failed to build {name} for {target}{why}"
        )));
    }

    let mut built = target_dir.clone();
    if let Some(triple) = configured.cargo_target {
        built.push(triple);
    }
    let built = built.join("release").join(&name);
    let dist = project.dist_dir();
    std::fs::create_dir_all(&dist).map_err(|e| KilnError::io("create", &dist, e))?;
    let image = dist.join(format!("{name}.{target}"));
    install(&built, &image)?;

    let tender = match target {
        Target::Unix | Target::Virtio => None,
        Target::Hvt | Target::Spt => Some(build_tender(
            &configured,
            target,
            &target_dir,
            &dist,
            quiet,
            gdb,
        )?),
    };
    drop(lock);
    Ok(Built { image, tender })
}

/// `cargo build --release` in `dir` into `target_dir`, with cargo's output
/// on stderr.
fn cargo_command(dir: &Path, target_dir: &Path, quiet: bool) -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .arg("build")
        .arg("--release")
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(dir)
        // Cargo's output is progress, not data: all of it goes to stderr.
        .stdout(Stdio::from(std::io::stderr()))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS");
    if quiet {
        cargo.arg("--quiet");
    }
    cargo
}

/// Runs `cargo`; `None` when it succeeded, else whether rustc said a crate
/// needs std (looked for only when `watch_std`).
fn run_cargo(mut cargo: Command, watch_std: bool) -> Result<Option<bool>, KilnError> {
    let start_error = |e: std::io::Error| {
        KilnError::Build(format!(
            "cannot start cargo: {e}; hint: install Rust with rustup and make sure cargo is on PATH"
        ))
    };
    if !watch_std {
        let status = cargo.status().map_err(start_error)?;
        return Ok((!status.success()).then_some(false));
    }
    let mut child = cargo.stderr(Stdio::piped()).spawn().map_err(start_error)?;
    let mut needs_std = false;
    if let Some(stderr) = child.stderr.take() {
        let mut out = std::io::stderr().lock();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            needs_std |= line.contains(NO_STD_MARK);
            let _ = writeln!(out, "{line}");
        }
    }
    let status = child.wait().map_err(start_error)?;
    Ok((!status.success()).then_some(needs_std))
}

/// Copies `built` to `dest` unless `dest` already has the same bytes; the
/// copy goes beside `dest` and is renamed over it, so that a running
/// program is never overwritten in place.
fn install(built: &Path, dest: &Path) -> Result<(), KilnError> {
    let new = std::fs::read(built).map_err(|e| KilnError::io("read", built, e))?;
    if std::fs::read(dest).is_ok_and(|old| old == new) {
        return Ok(());
    }
    let file_name = dest
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let partial = dest.with_file_name(format!(".{file_name}.partial"));
    std::fs::copy(built, &partial)
        .map_err(|e| KilnError::io(format!("copy {} to", built.display()), &partial, e))?;
    std::fs::rename(&partial, dest).map_err(|e| KilnError::io("replace", dest, e))
}

/// The tender modules the image needs: `net` and `block` for its
/// constructed devices of those types.
pub fn tender_modules(configured: &Configured) -> Vec<&'static str> {
    let checked = &configured.checked;
    let has = |ty: DeviceType| {
        checked
            .manifest
            .devices
            .iter()
            .zip(&checked.needed)
            .any(|(d, needed)| *needed && d.ty.value == ty)
    };
    [("net", DeviceType::Net), ("block", DeviceType::Block)]
        .into_iter()
        .filter(|(_, ty)| has(*ty))
        .map(|(m, _)| m)
        .collect()
}

/// Builds `kiln-TARGET` from kiln's source tree with only the modules the
/// image needs, and copies it to `dist/kiln-TARGET`.
/// The triple tenders are built for: they drive x86_64 Linux's KVM and
/// seccomp, and are linked statically against musl.
const TENDER_TRIPLE: &str = "x86_64-unknown-linux-musl";

fn build_tender(
    configured: &Configured,
    target: Target,
    target_dir: &Path,
    dist: &Path,
    quiet: bool,
    gdb: bool,
) -> Result<PathBuf, KilnError> {
    let package = format!("kiln-{target}");
    let source = kiln_config::project::source_dir();
    let mut modules = tender_modules(configured);
    // kiln-spt's --gdb needs no module: gdb attaches to the guest process.
    let gdb = gdb && target == Target::Hvt;
    if gdb {
        modules.push("gdb");
    }
    let mut cargo = cargo_command(&source, target_dir, quiet);
    // A static musl binary: no dynamic loader or libc start-up at every
    // run (about 0.5 ms of an spt hello), and smaller than glibc linked
    // statically.
    cargo
        .arg("--manifest-path")
        .arg(source.join("Cargo.toml"))
        .arg("-p")
        .arg(&package)
        .arg("--no-default-features")
        .args(["--target", TENDER_TRIPLE]);
    if !modules.is_empty() {
        cargo.arg("--features").arg(modules.join(","));
    }
    if run_cargo(cargo, false)?.is_some() {
        return Err(KilnError::Build(format!(
            "cargo failed to build the tender {package} from {} (modules: {}); the messages above say why; hint: tenders are built for {TENDER_TRIPLE}, `rustup target add {TENDER_TRIPLE}` if the messages say it is not installed",
            source.display(),
            if modules.is_empty() {
                "none".to_string()
            } else {
                modules.join(", ")
            }
        )));
    }
    // A gdb tender is installed beside the plain one, which stays as built.
    let tender = dist.join(if gdb {
        format!("{package}-gdb")
    } else {
        package.clone()
    });
    install(
        &target_dir
            .join(TENDER_TRIPLE)
            .join("release")
            .join(&package),
        &tender,
    )?;
    Ok(tender)
}
