//! `kiln build`: configure, run cargo on the generated crate, and copy the
//! image to `DIR/dist/NAME.TARGET`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use kiln_config::{Project, Target};

use crate::cli::BuildArgs;
use crate::error::KilnError;

/// Runs `kiln build`.
pub fn run(args: &BuildArgs) -> Result<u8, KilnError> {
    let project = super::open(&args.dir)?;
    let image = build(&project, super::target(args.target.target), false)?;
    eprintln!("built {}", image.display());
    Ok(0)
}

/// Configures `project` for `target` (with the choices of its last
/// `configure`), builds it, and returns the path of the image.
pub fn build(project: &Project, target: Target, quiet: bool) -> Result<PathBuf, KilnError> {
    let choices = project.saved_choices(target).unwrap_or_default();
    let configured = project.configure(target, choices)?;
    let name = &configured.checked.manifest.name.value;
    let target_dir = project.target_dir();

    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(configured.build_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&configured.build_dir)
        // Cargo's output is progress, not data: all of it goes to stderr.
        .stdout(Stdio::from(std::io::stderr()))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    if let Some(triple) = configured.cargo_target {
        cargo.arg("--target").arg(triple);
    }
    if quiet {
        cargo.arg("--quiet");
    }
    let status = cargo.status().map_err(|e| {
        KilnError::Build(format!(
            "cannot start cargo: {e}; hint: install Rust with rustup and make sure cargo is on PATH"
        ))
    })?;
    if !status.success() {
        return Err(KilnError::Build(format!(
            "cargo failed to build {name} for {target} ({status}); the messages above say why"
        )));
    }

    let mut built = target_dir.clone();
    if let Some(triple) = configured.cargo_target {
        built.push(triple);
    }
    let built = built.join("release").join(name);
    let dist = project.dist_dir();
    std::fs::create_dir_all(&dist).map_err(|e| KilnError::io("create", &dist, e))?;
    let image = dist.join(format!("{name}.{target}"));
    let fresh = match (std::fs::metadata(&built), std::fs::metadata(&image)) {
        (Ok(b), Ok(i)) => b.len() == i.len() && b.modified().ok() <= i.modified().ok(),
        _ => false,
    };
    if !fresh {
        // Copy beside the image, then rename over it: a running image is
        // never overwritten in place.
        let partial = dist.join(format!(".{name}.{target}.partial"));
        std::fs::copy(&built, &partial)
            .map_err(|e| KilnError::io(format!("copy {} to", built.display()), &partial, e))?;
        std::fs::rename(&partial, &image).map_err(|e| KilnError::io("replace", &image, e))?;
    }
    Ok(image)
}
