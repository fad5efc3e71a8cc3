//! `kiln run`: build when stale, then replace kiln with the unikernel (on
//! unix) or its tender (on hvt and spt), so that its exit status is kiln's.

use std::os::unix::process::CommandExt;
use std::process::Command;

use kiln_config::Target;

use crate::cli::RunArgs;
use crate::error::KilnError;

/// The prefixes of the flags that attach devices; on hvt and spt they are
/// the tender's.
const DEVICE_FLAGS: &[&str] = &["--net:", "--net-mac:", "--block:", "--block-sector-size:"];

/// Splits `args` into the tender's device flags and the guest's arguments,
/// each in order.
pub fn split_device_flags(args: &[String]) -> (Vec<&str>, Vec<&str>) {
    args.iter()
        .map(String::as_str)
        .partition(|a| DEVICE_FLAGS.iter().any(|p| a.starts_with(p)))
}

/// Runs `kiln run`.
pub fn run(args: &RunArgs) -> Result<u8, KilnError> {
    let project = super::open(&args.dir)?;
    let target = super::target(args.target.target);
    if target == Target::Unix && args.mem.is_some() {
        return Err(KilnError::Usage {
            message: "--mem applies to hvt and spt guests only".into(),
            hint: "a unix unikernel is a host process; drop --mem, or run with -t hvt".into(),
        });
    }
    let debugging = args.gdb.is_some() || args.dumpcore.is_some();
    if debugging && target != Target::Hvt {
        return Err(KilnError::Usage {
            message: "--gdb and --dumpcore apply to hvt guests only".into(),
            hint: "run with -t hvt".into(),
        });
    }
    if args.gdb.is_some() {
        debug_info_builds();
    }
    // On a terminal, cargo's own progress shows what a first build (tens of
    // seconds) is doing; in scripts and pipes `kiln run` prints only what
    // the unikernel prints.
    let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let built = super::build::build(&project, target, super::choices(&args.choices), quiet)?;
    let mut command = match &built.tender {
        None => {
            let mut command = Command::new(&built.image);
            command.args(&args.args);
            command
        }
        Some(tender) => {
            let (device_flags, guest) = split_device_flags(&args.args);
            let mut command = match &args.gdb {
                Some(_) => Command::new(build_gdb_tender(&project, quiet)?),
                None => Command::new(tender),
            };
            if let Some(mb) = args.mem {
                command.arg(format!("--mem={mb}"));
            }
            if let Some(addr) = &args.gdb {
                command.arg(format!("--gdb={addr}"));
            }
            if let Some(dir) = &args.dumpcore {
                command.arg("--dumpcore").arg(dir);
            }
            command
                .args(device_flags)
                .arg("--")
                .arg(&built.image)
                .args(guest);
            command
        }
    };
    let program = command.get_program().to_owned();
    let error = command.exec();
    Err(KilnError::io("run", program, error))
}

/// Makes the cargo builds this process starts keep debug information
/// (DWARF line tables, frames and variables) in the image, so that gdb's
/// `bt` and `break FILE:LINE` work; symbols are kept in every build.
fn debug_info_builds() {
    // SAFETY: kiln is single-threaded until it builds; nothing reads the
    // environment concurrently.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("CARGO_PROFILE_RELEASE_DEBUG", "true");
        std::env::set_var("CARGO_PROFILE_RELEASE_STRIP", "none");
    }
}

/// Builds kiln-hvt with every module and the gdb stub, into
/// `dist/kiln-hvt-gdb`.
fn build_gdb_tender(
    project: &kiln_config::project::Project,
    quiet: bool,
) -> Result<std::path::PathBuf, KilnError> {
    const TRIPLE: &str = "x86_64-unknown-linux-musl";
    let source = kiln_config::project::source_dir();
    let target_dir = project.target_dir();
    // The lock `kiln build` takes: one build at a time in a target
    // directory, since tenders share `release/kiln-hvt`.
    let lock_path = target_dir.join(".kiln-build.lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| KilnError::io("create", &lock_path, e))?;
    lock.lock()
        .map_err(|e| KilnError::io("lock", &lock_path, e))?;
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--release", "-p", "kiln-hvt", "--features"])
        .arg("net,block,gdb")
        .args(["--target", TRIPLE])
        .arg("--manifest-path")
        .arg(source.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&source)
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        // The tender itself is built as always (its debug information is
        // not the guest's).
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG")
        .env_remove("CARGO_PROFILE_RELEASE_STRIP");
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
            "cargo failed to build kiln-hvt with its gdb module from {}; the messages above say why",
            source.display()
        )));
    }
    let built = target_dir.join(TRIPLE).join("release").join("kiln-hvt");
    let dist = project.dist_dir();
    let tender = dist.join("kiln-hvt-gdb");
    let partial = dist.join(".kiln-hvt-gdb.partial");
    std::fs::copy(&built, &partial)
        .map_err(|e| KilnError::io(format!("copy {} to", built.display()), &partial, e))?;
    std::fs::rename(&partial, &tender).map_err(|e| KilnError::io("replace", &tender, e))?;
    drop(lock);
    Ok(tender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flags_go_to_the_tender() {
        let args: Vec<String> = [
            "--net:service=tap0",
            "--ipv4=10.0.0.2/24",
            "--block-sector-size:disk=4096",
            "--port",
            "80",
            "--net-mac:service=02:00:00:00:00:01",
            "--block:disk=d.img",
            "--network=x",
        ]
        .map(String::from)
        .to_vec();
        let (tender, guest) = split_device_flags(&args);
        assert_eq!(
            tender,
            [
                "--net:service=tap0",
                "--block-sector-size:disk=4096",
                "--net-mac:service=02:00:00:00:00:01",
                "--block:disk=d.img"
            ]
        );
        assert_eq!(guest, ["--ipv4=10.0.0.2/24", "--port", "80", "--network=x"]);
    }
}
