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
            let mut command = Command::new(tender);
            if let Some(mb) = args.mem {
                command.arg(format!("--mem={mb}"));
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
