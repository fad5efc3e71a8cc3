//! `kiln up`: builds a unikernel's directory when stale (or takes a built
//! image), then asks the daemon to run it under a name.

use std::path::{Path, PathBuf};

use kiln_config::Target;
use kiln_supervisor::proto::{self, BlockSpec, NetSpec, Request, Restart, Spec};

use crate::cli::{RestartArg, TargetArg, UpArgs};
use crate::error::KilnError;

/// Runs `kiln up`.
pub fn run(args: &UpArgs) -> Result<u8, KilnError> {
    if let Err(e) = proto::check_name(&args.name) {
        return Err(KilnError::Usage {
            message: e.message,
            hint: e.hint,
        });
    }
    let (target, image, tender) = if args.dir.is_dir() {
        let target = super::target(args.target.unwrap_or(TargetArg::Unix));
        let project = super::open(&args.dir)?;
        let built = super::build::build(&project, target, Default::default(), true)?;
        let tender = match target {
            Target::Virtio => Some(find_vmm()?),
            _ => built.tender,
        };
        (target, built.image, tender)
    } else {
        from_image(&args.dir, args.target)?
    };
    let absolute = |p: PathBuf| std::fs::canonicalize(&p).map_err(|e| KilnError::io("find", p, e));
    let image = absolute(image)?;
    let tender = tender.map(absolute).transpose()?;
    let (net, block, guest) = split(&args.rest)?;
    misplaced_option(&guest)?;
    let spec = Spec {
        target: match target {
            Target::Unix => proto::Target::Unix,
            Target::Hvt => proto::Target::Hvt,
            Target::Spt => proto::Target::Spt,
            Target::Virtio => proto::Target::Virtio,
        },
        image,
        tender,
        mem: args.mem,
        net,
        block,
        restart: match args.restart {
            RestartArg::Never => Restart::Never,
            RestartArg::OnFailure => Restart::OnFailure,
            RestartArg::Always => Restart::Always,
        },
        cpu: args.cpu,
        args: guest,
    };
    if let Err(e) = proto::check_spec(&spec) {
        return Err(KilnError::Usage {
            message: e.message,
            hint: e.hint,
        });
    }
    let request = Request::Up {
        name: args.name.clone(),
        spec,
    };
    match super::supervise::call(&args.socket, &request)? {
        Ok(data) => {
            eprintln!(
                "started {} (pid {})",
                args.name,
                data.get("pid").map_or("?".into(), ToString::to_string)
            );
            Ok(0)
        }
        Err(code) => Ok(code),
    }
}

/// QEMU, the VMM the daemon runs virtio images under: found on this
/// client's PATH and sent as an absolute path (the daemon's PATH may
/// differ).
fn find_vmm() -> Result<PathBuf, KilnError> {
    const QEMU: &str = "qemu-system-x86_64";
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(QEMU))
        .find(|p| p.is_file())
        .ok_or_else(|| KilnError::Usage {
            message: format!("virtio images run under QEMU, and there is no {QEMU} on PATH"),
            hint: "install QEMU (apt-get install qemu-system-x86)".into(),
        })
}

/// The target, image and tender of a built image: the target is `-t` or
/// the image's extension, the tender `kiln-TARGET` beside it.
fn from_image(
    image: &Path,
    target: Option<TargetArg>,
) -> Result<(Target, PathBuf, Option<PathBuf>), KilnError> {
    if !image.is_file() {
        return Err(KilnError::Usage {
            message: format!(
                "{} is neither a unikernel directory nor an image",
                image.display()
            ),
            hint: "give the unikernel's directory, or its built image dist/NAME.TARGET".into(),
        });
    }
    let from_extension = match image.extension().and_then(|e| e.to_str()) {
        Some("unix") => Some(TargetArg::Unix),
        Some("hvt") => Some(TargetArg::Hvt),
        Some("spt") => Some(TargetArg::Spt),
        Some("virtio") => Some(TargetArg::Virtio),
        _ => None,
    };
    let target = super::target(target.or(from_extension).unwrap_or(TargetArg::Unix));
    let tender = match target {
        Target::Unix => None,
        Target::Virtio => Some(find_vmm()?),
        Target::Hvt | Target::Spt => {
            let tender = image.with_file_name(format!("kiln-{target}"));
            if !tender.is_file() {
                return Err(KilnError::Usage {
                    message: format!("no tender {} beside the image", tender.display()),
                    hint: format!("`kiln build -t {target}` puts kiln-{target} in dist/"),
                });
            }
            Some(tender)
        }
    };
    Ok((target, image.to_path_buf(), tender))
}

/// `kiln up`'s own options, which clap leaves to the unikernel when they
/// follow an argument it does not know.
const OWN_OPTIONS: &[&str] = &["--restart", "--cpu", "--mem", "--target", "--socket", "-t"];

/// Refuses an option of `kiln up` among the unikernel's arguments when the
/// command line has no `--` to say they are the unikernel's.
fn misplaced_option(guest: &[String]) -> Result<(), KilnError> {
    if std::env::args().any(|a| a == "--") {
        return Ok(());
    }
    let own = guest.iter().find(|a| {
        OWN_OPTIONS
            .iter()
            .any(|o| a.as_str() == *o || a.strip_prefix(o).is_some_and(|r| r.starts_with('=')))
    });
    match own {
        Some(own) => Err(KilnError::Usage {
            message: format!("{own} comes after the unikernel's arguments"),
            hint: "put kiln up's options before NAME, and the unikernel's arguments after --"
                .into(),
        }),
        None => Ok(()),
    }
}

/// Splits what follows DIR into net devices (`--net:DEVICE=BRIDGE`), block
/// devices (`--block:DEVICE=FILE`) and the unikernel's arguments.
type Split = (Vec<NetSpec>, Vec<BlockSpec>, Vec<String>);

fn split(rest: &[String]) -> Result<Split, KilnError> {
    let mut net = Vec::new();
    let mut block = Vec::new();
    let mut guest = Vec::new();
    let bad = |flag: &str| KilnError::Usage {
        message: format!("cannot read {flag}"),
        hint: "write --net:DEVICE=BRIDGE or --block:DEVICE=FILE".into(),
    };
    for arg in rest {
        if let Some(v) = arg.strip_prefix("--net:") {
            let (device, bridge) = v.split_once('=').ok_or_else(|| bad(arg))?;
            net.push(NetSpec {
                device: device.into(),
                bridge: bridge.into(),
            });
        } else if let Some(v) = arg.strip_prefix("--block:") {
            let (device, file) = v.split_once('=').ok_or_else(|| bad(arg))?;
            let path = std::fs::canonicalize(file).map_err(|e| KilnError::io("find", file, e))?;
            block.push(BlockSpec {
                device: device.into(),
                path,
            });
        } else if arg != "--" || !guest.is_empty() {
            guest.push(arg.clone());
        }
    }
    Ok((net, block, guest))
}
