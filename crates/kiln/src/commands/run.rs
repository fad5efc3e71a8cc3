//! `kiln run`: build when stale, then replace kiln with the unikernel (on
//! unix) or its tender (on hvt and spt), so that its exit status is kiln's.
//! On virtio, check the image and the host resources, then run QEMU as a
//! child and turn its exit code back into the unikernel's status (or print
//! a VMM's command line with `--print-command`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use kiln_config::Target;
use kiln_virtio::host::{self, Accel, Console, Machine, QemuExit, StopSignals, Vm};

use crate::cli::{AccelArg, ConsoleArg, MachineArg, RunArgs, VmmArg};
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
    let target = super::target(args.target.target);
    if target == Target::Virtio {
        return run_virtio(args);
    }
    if args.image.is_some() || args.print_command {
        return Err(KilnError::Usage {
            message: "--image and --print-command apply to the virtio target only".into(),
            hint: "run with -t virtio, or drop them".into(),
        });
    }
    let project = super::open(&args.dir)?;
    if target == Target::Unix && args.mem.is_some() {
        return Err(KilnError::Usage {
            message: "--mem applies to hvt, spt and virtio guests only".into(),
            hint: "a unix unikernel is a host process; drop --mem, or run with -t hvt".into(),
        });
    }
    if target == Target::Spt
        && let Some(addr) = args.gdb.as_deref()
        && addr != SPT_GDB_DEFAULT
    {
        return Err(KilnError::Usage {
            message: format!("--gdb={addr}: spt guests have no gdb stub to listen on an address"),
            hint: "run with plain --gdb: the guest process waits and kiln-spt prints the `gdb -p PID IMAGE` command that attaches to it".into(),
        });
    }
    let gdb_spt = target == Target::Spt && args.gdb.is_some();
    let debugging = args.gdb.is_some() || args.dumpcore.is_some();
    if debugging && !matches!(target, Target::Hvt | Target::Spt) {
        return Err(KilnError::Usage {
            message: "--gdb and --dumpcore apply to hvt and spt guests only".into(),
            hint: "run with -t hvt or -t spt".into(),
        });
    }
    // On a terminal, cargo's own progress shows what a first build (tens of
    // seconds) is doing; in scripts and pipes `kiln run` prints only what
    // the unikernel prints.
    let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let built = super::build::build_with(
        &project,
        target,
        super::choices(&args.choices),
        quiet,
        args.gdb.is_some(),
    )?;
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
            if gdb_spt {
                command.arg("--gdb");
            } else if let Some(addr) = &args.gdb {
                command.arg(format!("--gdb={addr}"));
            }
            if let Some(dir) = &args.dumpcore {
                command.arg("--dumpcore").arg(dir);
            }
            // The tender joins the guest's words with spaces into one
            // command line, which the guest splits MirageOS's way: quoted,
            // each argument arrives as it was given.
            command.args(device_flags).arg("--").arg(&built.image).args(
                guest
                    .iter()
                    .map(|a| kiln_args::cmdline::quote(a).into_owned()),
            );
            command
        }
    };
    let program = command.get_program().to_owned();
    let error = command.exec();
    Err(KilnError::io("run", program, error))
}

/// What clap gives `--gdb` without a value (kiln-hvt's default address),
/// the only value `--gdb` takes on spt.
const SPT_GDB_DEFAULT: &str = "127.0.0.1:1234";

/// The QEMU program the virtio target runs.
const QEMU: &str = "qemu-system-x86_64";

/// A usage error (exit 2) from a message that may end in `; hint: ...`.
fn usage(what: impl std::fmt::Display) -> KilnError {
    let text = what.to_string();
    let (message, hint) = match text.split_once("; hint: ") {
        Some((m, h)) => (m.to_string(), h.to_string()),
        None => (text, "see kiln run --help".to_string()),
    };
    KilnError::Usage { message, hint }
}

/// Whether /dev/kvm can be opened for reading and writing; else why not.
fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A word for a POSIX shell: as it is when it is safe, else single-quoted.
fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `kiln run -t virtio`.
fn run_virtio(args: &RunArgs) -> Result<u8, KilnError> {
    let image: PathBuf = match &args.image {
        Some(image) => image.clone(),
        None => {
            let project = super::open(&args.dir)?;
            let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
            super::build::build(
                &project,
                Target::Virtio,
                super::choices(&args.choices),
                quiet,
            )?
            .image
        }
    };
    let data = std::fs::read(&image).map_err(|e| {
        usage(format_args!(
            "cannot read the image {}: {e}; hint: build it with kiln build -t virtio",
            image.display()
        ))
    })?;
    let info =
        host::check_image(&data).map_err(|e| usage(format_args!("{}: {e}", image.display())))?;
    let (device_flags, guest) = split_device_flags(&args.args);
    // --help touches no device: the devices need not be attached for it.
    let help = guest.iter().any(|a| *a == "--help" || *a == "-h");
    let (nets, blocks) = host::attach(&info.devices, &device_flags, help).map_err(usage)?;
    let vm = Vm {
        image: image.clone(),
        mem_mb: args.mem.unwrap_or(host::DEFAULT_MEM_MB),
        args: guest.iter().map(|s| s.to_string()).collect(),
        nets,
        blocks,
    };
    let machine = match args.machine {
        MachineArg::Microvm => Machine::Microvm,
        MachineArg::Q35 => Machine::Q35,
    };
    let console = match args.console {
        ConsoleArg::Serial => Console::Serial,
        ConsoleArg::Virtio => Console::Virtio,
    };
    let kvm = kvm_usable();
    let accel = match (args.accel, &kvm) {
        (Some(AccelArg::Tcg), _) | (None, Err(_)) => Accel::Tcg,
        (Some(AccelArg::Kvm), Err(why)) if !args.print_command => {
            return Err(usage(format_args!(
                "--accel kvm: /dev/kvm is not usable ({why}); hint: run where KVM is, or with --accel tcg"
            )));
        }
        (Some(AccelArg::Kvm), _) | (None, Ok(())) => Accel::Kvm,
    };
    if args.print_command {
        let mut out = std::io::stdout().lock();
        let written = match args.vmm {
            VmmArg::Qemu => {
                let words: Vec<String> = std::iter::once(QEMU.to_string())
                    .chain(vm.qemu_args_with(machine, accel, console).map_err(usage)?)
                    .map(|w| shell_word(&w))
                    .collect();
                writeln!(out, "{}", words.join(" "))
            }
            VmmArg::Firecracker => {
                eprintln!(
                    "kiln: Firecracker's configuration; run it with: firecracker --no-api --config-file FILE (the status is not given back: Firecracker exits 0)"
                );
                write!(out, "{}", vm.firecracker_config().map_err(usage)?)
            }
            VmmArg::CloudHypervisor => {
                let words: Vec<String> = std::iter::once("cloud-hypervisor".to_string())
                    .chain(vm.cloud_hypervisor_args().map_err(usage)?)
                    .map(|w| shell_word(&w))
                    .collect();
                writeln!(out, "{}", words.join(" "))
            }
        };
        written.map_err(|e| KilnError::io("write the command to", "stdout", e))?;
        return Ok(0);
    }
    host::check_host_resources(&vm.nets, &vm.blocks).map_err(usage)?;
    if let (Err(why), None) = (&kvm, args.accel) {
        eprintln!(
            "kiln: /dev/kvm is not usable ({why}): running under QEMU's TCG emulator, which is much slower"
        );
    }
    // On microvm a stop request (SIGTERM or SIGINT to kiln) reaches the
    // guest as ACPI's power button, as under `kiln daemon`: QEMU gets a QMP
    // socket, and the button is pressed only when the guest routed its line
    // (its `shutdown` device); otherwise, and at a second signal, QEMU gets
    // SIGTERM and quits at once. q35 has no such button here, and an image
    // from before the button is not given the word that names it.
    let qmp_dir = match machine {
        Machine::Microvm if info.power_button => Some(
            tempfile::Builder::new()
                .prefix("kiln-run-")
                .tempdir()
                .map_err(|e| KilnError::io("create", "a directory for QEMU's QMP socket", e))?,
        ),
        Machine::Microvm | Machine::Q35 => None,
    };
    let qmp = qmp_dir
        .as_ref()
        .map(|d| d.path().join("qmp.sock"))
        .filter(|p| {
            p.to_str()
                .is_some_and(|t| t.len() <= 107 && !t.contains(','))
        });
    let mut qemu_args = match &qmp {
        Some(_) => vm.qemu_args_with_power_button(accel, console),
        None => vm.qemu_args_with(machine, accel, console),
    }
    .map_err(usage)?;
    if let Some(q) = &qmp {
        qemu_args.push("-qmp".into());
        qemu_args.push(format!("unix:{},server=on,wait=off", q.display()));
    }
    let stop = StopSignals::block();
    let mut command = host::vmm_command(QEMU);
    command
        .args(&qemu_args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    stop.leave_to(&mut command);
    let mut child = command.spawn().map_err(|e| {
        KilnError::Build(format!(
            "cannot start {QEMU}: {e}; hint: install QEMU (apt-get install qemu-system-x86)"
        ))
    })?;
    let forced = stop.forward(child.id(), move |name| {
        match qmp.as_deref().map(kiln_supervisor::power_button) {
            Some(Ok(true)) => {
                eprintln!(
                    "kiln: {name}: the guest was asked to stop (ACPI power button); a second signal ends QEMU at once"
                );
                true
            }
            Some(Err(e)) => {
                eprintln!("kiln: {name}: no power button ({e})");
                false
            }
            Some(Ok(false)) | None => false,
        }
    });
    // QEMU's own messages start with its name; the guest's console is on
    // stdout.
    let mut qemu_said = false;
    if let Some(stderr) = child.stderr.take() {
        let mut err = std::io::stderr().lock();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            qemu_said |= line.starts_with(QEMU);
            let _ = writeln!(err, "{line}");
        }
    }
    let status = child
        .wait()
        .map_err(|e| KilnError::io("wait for", QEMU, e))?;
    forced.reaped();
    drop(qmp_dir);
    let code = status.code().unwrap_or(-1);
    if qemu_said && code == 1 {
        return Err(KilnError::Build(format!(
            "{QEMU} failed (its message is above)"
        )));
    }
    match host::qemu_exit(code) {
        QemuExit::Status(status) => Ok(status),
        QemuExit::NoStatus if forced.signalled() => {
            // As kiln-hvt ends a guest that does not handle stops.
            eprintln!("kiln: the VM was stopped by a signal before the guest ended");
            Ok(1)
        }
        QemuExit::NoStatus => {
            eprintln!(
                "kiln: the VM ended without an exit status (QEMU exit code {code}: a reset, triple fault or power-off)"
            );
            Ok(255)
        }
    }
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
