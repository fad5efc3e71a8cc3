//! `kiln package`: the unikernel as a reproducible OCI image (`kiln-oci`),
//! for container engines and Kubernetes (self-contained: the tender, the
//! image and `kiln-oci-entry`, or the static unix program) or for urunc
//! (native: the image alone, with urunc's annotations and `/urunc.json`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kiln_config::{Configured, DeviceType, Project, Target};
use kiln_oci::layer::File;
use kiln_oci::{Format, ImageSpec};

use crate::cli::{FlavourArg, FormatArg, PackageArgs};
use crate::error::KilnError;

/// The triple of the entrypoint, static through musl.
const STATIC_TRIPLE: &str = "x86_64-unknown-linux-musl";
/// The triple of static unix programs: glibc linked statically
/// (`crt-static`), as the unix target's code is written against glibc.
const UNIX_STATIC_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Runs `kiln package`.
pub fn run(args: &PackageArgs) -> Result<u8, KilnError> {
    let target = super::target(args.target.target);
    if target == Target::Virtio {
        return Err(usage(
            "virtio images boot on a VMM (QEMU, Firecracker, cloud-hypervisor), not in a container",
            "package with -t hvt, spt or unix, or run dist/NAME.virtio with kiln run -t virtio",
        ));
    }
    if args.flavour == FlavourArg::Native && target == Target::Unix {
        return Err(usage(
            "the native flavour is for urunc, which runs hvt and spt images only",
            "package with -t hvt or -t spt, or use the self-contained flavour for unix",
        ));
    }
    if let Some(tag) = &args.tag {
        check_reference(tag)?;
    }
    check_output(&args.out)?;
    let project = super::open(&args.dir)?;
    // The choices given here, and those of the last `configure` for the
    // rest, as `kiln build` takes them.
    let given = super::choices(&args.choices);
    let configured = project.configure(target, project.choices(target, given)?)?;
    let name = configured.checked.manifest.name.value.clone();
    let (image, tender) = if args.no_build {
        built(&project, &name, target)?
    } else {
        let built = super::build::build(&project, target, given, false)?;
        (built.image, built.tender)
    };
    let reference = args.tag.clone().unwrap_or_else(|| format!("{name}:latest"));
    let read = |path: &Path| std::fs::read(path).map_err(|e| KilnError::io("read", path, e));

    let mut spec = ImageSpec {
        cmd: args.args.clone(),
        reference: reference.clone(),
        ..ImageSpec::default()
    };
    spec.labels
        .insert("org.opencontainers.image.title".into(), name.clone());
    if let Some(doc) = &configured.checked.manifest.doc {
        spec.labels
            .insert("org.opencontainers.image.description".into(), doc.clone());
    }
    spec.labels.insert(
        "org.opencontainers.image.version".into(),
        env!("CARGO_PKG_VERSION").into(),
    );
    let file_name = format!("{name}.{target}");
    let nets = devices(&configured, DeviceType::Net);
    let blocks = devices(&configured, DeviceType::Block);
    match (args.flavour, tender) {
        (FlavourArg::Native, Some(_)) => {
            let binary = format!("/unikernel/{file_name}");
            let native = kiln_oci::urunc::Native {
                binary: binary.clone(),
                hypervisor: target.to_string(),
                cmdline: kiln_args::cmdline::join(&args.args),
                version: env!("CARGO_PKG_VERSION").into(),
                net_dev: nets.first().cloned(),
                blk_dev: blocks.first().cloned(),
            };
            spec.files = vec![
                File {
                    path: binary[1..].to_string(),
                    mode: 0o755,
                    data: read(&image)?,
                },
                File {
                    path: kiln_oci::urunc::JSON_PATH.into(),
                    mode: 0o644,
                    data: native.json(),
                },
            ];
            spec.annotations = native.annotations();
            spec.labels.extend(native.annotations());
        }
        (_, Some(tender)) => {
            let entry = build_entry(&project)?;
            let tender_name = format!("kiln-{target}");
            spec.files = vec![
                File {
                    path: "kiln/entry".into(),
                    mode: 0o755,
                    data: read(&entry)?,
                },
                File {
                    path: format!("kiln/{tender_name}"),
                    mode: 0o755,
                    data: read(&tender)?,
                },
                File {
                    path: format!("kiln/{file_name}"),
                    mode: 0o644,
                    data: read(&image)?,
                },
            ];
            spec.entrypoint = vec![
                "/kiln/entry".into(),
                format!("--tender=/kiln/{tender_name}"),
                format!("--image=/kiln/{file_name}"),
            ];
            spec.entrypoint
                .extend(nets.iter().map(|n| format!("--net={n}")));
            spec.entrypoint
                .extend(blocks.iter().map(|b| format!("--block={b}")));
            spec.entrypoint.push("--".into());
        }
        (_, None) => {
            // The entrypoint too: as the container's first process the
            // program would ignore SIGTERM.
            let entry = build_entry(&project)?;
            let program = static_unix(&project, &configured, &image, &name)?;
            spec.files = vec![
                File {
                    path: "kiln/entry".into(),
                    mode: 0o755,
                    data: read(&entry)?,
                },
                File {
                    path: format!("kiln/{name}"),
                    mode: 0o755,
                    data: read(&program)?,
                },
            ];
            spec.entrypoint = vec![
                "/kiln/entry".into(),
                format!("--image=/kiln/{name}"),
                "--".into(),
            ];
        }
    }
    let format = match args.format {
        FormatArg::OciDir => Format::Dir,
        FormatArg::OciArchive => Format::Archive,
    };
    let written = kiln_oci::write(&spec, format, &args.out).map_err(|e| match e {
        kiln_oci::OciError::Io { .. } => usage(
            &format!("cannot write the image: {e}"),
            "name a writable path with -o (the image is made beside it and renamed into place)",
        ),
        other => KilnError::Build(format!("cannot make the image: {other}")),
    })?;
    eprintln!(
        "wrote {} ({}, {reference}, {} flavour, layer {} bytes)",
        args.out.display(),
        match format {
            Format::Dir => "oci-dir",
            Format::Archive => "oci-archive",
        },
        match args.flavour {
            FlavourArg::Native => "native",
            FlavourArg::SelfContained => "self-contained",
        },
        written.layer_size
    );
    println!("{}", written.manifest_digest);
    Ok(0)
}

fn usage(message: &str, hint: &str) -> KilnError {
    KilnError::Usage {
        message: message.into(),
        hint: hint.into(),
    }
}

/// The names of the constructed devices of type `ty`.
fn devices(configured: &Configured, ty: DeviceType) -> Vec<String> {
    let checked = &configured.checked;
    checked
        .manifest
        .devices
        .iter()
        .zip(&checked.needed)
        .filter(|(d, needed)| **needed && d.ty.value == ty)
        .map(|(d, _)| d.name.value.clone())
        .collect()
}

/// Refuses an image name that engines would not accept: `NAME[:TAG]`, NAME
/// lowercase letters, digits and `._-/`, TAG letters, digits and `._-`.
fn check_reference(reference: &str) -> Result<(), KilnError> {
    let (name, tag) = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (reference, None),
    };
    let name_ok = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && part.as_bytes()[0].is_ascii_alphanumeric()
        });
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    if name_ok && tag_ok {
        Ok(())
    } else {
        Err(usage(
            &format!("bad image name {reference:?}"),
            "use NAME:TAG with a lowercase NAME, like --tag www:1.0 or --tag registry.example/team/www:1.0",
        ))
    }
}

/// Checks before any build that the output's directory exists and is a
/// directory.
fn check_output(out: &Path) -> Result<(), KilnError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if out.file_name().is_none() || !parent.is_dir() {
        return Err(usage(
            &format!(
                "cannot write the image to {}: {} is not a directory",
                out.display(),
                parent.display()
            ),
            "name a path in an existing directory with -o, like -o www.oci.tar",
        ));
    }
    Ok(())
}

/// The image and tender `kiln build` left in `dist/`, for `--no-build`.
fn built(
    project: &Project,
    name: &str,
    target: Target,
) -> Result<(PathBuf, Option<PathBuf>), KilnError> {
    let dist = project.dist_dir();
    let image = dist.join(format!("{name}.{target}"));
    let tender = (target != Target::Unix).then(|| dist.join(format!("kiln-{target}")));
    for path in std::iter::once(&image).chain(&tender) {
        if !path.is_file() {
            return Err(usage(
                &format!("{} is not built: {} is missing", name, path.display()),
                &format!("run `kiln build -t {target}` first, or drop --no-build"),
            ));
        }
    }
    Ok((image, tender))
}

/// `cargo build --release --target TRIPLE`, linked statically and
/// stripped, with cargo's output on stderr.
fn cargo_static(project: &Project, triple: &str) -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .arg("build")
        .arg("--release")
        .arg("--quiet")
        .args(["--target", triple])
        .args([
            "--config",
            &format!("target.{triple}.rustflags=[\"-C\", \"target-feature=+crt-static\"]"),
        ])
        // Symbols are of no use in an image: stripped, the entrypoint is a
        // quarter of its size.
        .args(["--config", "profile.release.strip=\"symbols\""])
        .arg("--target-dir")
        .arg(project.target_dir())
        .stdout(Stdio::from(std::io::stderr()))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS");
    cargo
}

fn run_cargo(mut cargo: Command, what: &str, triple: &str) -> Result<(), KilnError> {
    let status = cargo.status().map_err(|e| {
        KilnError::Build(format!(
            "cannot start cargo: {e}; hint: install Rust with rustup and make sure cargo is on PATH"
        ))
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(KilnError::Build(format!(
            "cargo failed to build {what} for {triple}; the messages above say why; hint: `rustup target add {triple}` if they say it is not installed"
        )))
    }
}

/// Builds `kiln-oci-entry` (static) from kiln's source tree.
fn build_entry(project: &Project) -> Result<PathBuf, KilnError> {
    let source = kiln_config::project::source_dir();
    let mut cargo = cargo_static(project, STATIC_TRIPLE);
    cargo
        .current_dir(&source)
        .arg("--manifest-path")
        .arg(source.join("Cargo.toml"))
        .args(["-p", "kiln-oci-entry"]);
    run_cargo(cargo, "the image entrypoint kiln-oci-entry", STATIC_TRIPLE)?;
    Ok(project
        .target_dir()
        .join(STATIC_TRIPLE)
        .join("release")
        .join("kiln-oci-entry"))
}

/// Whether the ELF program `data` asks for a dynamic loader (`PT_INTERP`).
fn is_dynamic(data: &[u8]) -> bool {
    use object::read::elf::{FileHeader as _, ProgramHeader as _};
    let Ok(header) = object::elf::FileHeader64::<object::Endianness>::parse(data) else {
        return false;
    };
    let Ok(endian) = header.endian() else {
        return false;
    };
    header.program_headers(endian, data).is_ok_and(|headers| {
        headers
            .iter()
            .any(|h| h.p_type(endian) == object::elf::PT_INTERP)
    })
}

/// The unix program, static: `dist/NAME.unix` if it is, else the generated
/// crate built again, linked statically (a FROM-scratch image has no libc).
fn static_unix(
    project: &Project,
    configured: &Configured,
    image: &Path,
    name: &str,
) -> Result<PathBuf, KilnError> {
    let data = std::fs::read(image).map_err(|e| KilnError::io("read", image, e))?;
    if !is_dynamic(&data) {
        return Ok(image.to_path_buf());
    }
    let mut cargo = cargo_static(project, UNIX_STATIC_TRIPLE);
    cargo
        .current_dir(&configured.build_dir)
        .arg("--manifest-path")
        .arg(configured.build_dir.join("Cargo.toml"));
    run_cargo(cargo, name, UNIX_STATIC_TRIPLE)?;
    Ok(project
        .target_dir()
        .join(UNIX_STATIC_TRIPLE)
        .join("release")
        .join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_engines_accept() {
        for ok in [
            "www",
            "www:1.0",
            "kiln/www:latest",
            "registry.example/a-b/c_d:v1.2-rc",
        ] {
            assert!(check_reference(ok).is_ok(), "{ok}");
        }
        for bad in ["", "WWW", "www:", "www:a/b", "/www", "www::x", "-w"] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
    }
}
