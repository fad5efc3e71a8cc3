//! virtio unikernels under the daemon: QEMU's command line, built by
//! kiln-virtio's host side exactly as `kiln run -t virtio` builds it (the
//! image checked, the manifest's devices attached to the daemon's taps and
//! the spec's files, a microvm with KVM when /dev/kvm opens, TCG otherwise),
//! and the guest's status read back from QEMU's exit code.
//!
//! QEMU runs a microvm with ACPI's power button and a QMP socket in the
//! unit's directory (`crate::qmp`): a stop presses the button when the
//! guest handles it (kiln-virtio's `shutdown` device; `kiln_virtio::power`)
//! and the guest ends with its own status; otherwise SIGTERM makes QEMU
//! quit at once (a power-off the guest does not see), and exit 0. The QMP
//! socket also gives the block devices' counters.

use std::path::{Path, PathBuf};

use kiln_virtio::host::{self, Accel, QemuExit, Vm};

use crate::policy::Exit;
use crate::proto::Spec;

/// The QMP socket of the unit whose directory is `dir`, if QEMU can take
/// its path (a unix socket path of at most 107 bytes, no comma).
pub(crate) fn qmp_socket(dir: &Path) -> Option<PathBuf> {
    let path = dir.join("qmp.sock");
    let text = path.to_str()?;
    (text.len() <= 107 && !text.contains(',')).then_some(path)
}

/// The image's net and block devices attached with `devices`, and whether
/// the image reads the power button's command-line word.
fn attach(
    spec: &Spec,
    devices: &[String],
) -> Result<(Vec<host::NetAttach>, Vec<host::BlockAttach>, bool), String> {
    let data = std::fs::read(&spec.image)
        .map_err(|e| format!("cannot read the image {}: {e}", spec.image.display()))?;
    let info = host::check_image(&data).map_err(|e| format!("{}: {e}", spec.image.display()))?;
    let flags: Vec<&str> = devices.iter().map(String::as_str).collect();
    let (nets, blocks) = host::attach(&info.devices, &flags, false).map_err(|e| e.to_string())?;
    Ok((nets, blocks, info.power_button))
}

/// The names of the image's block devices, in the order QEMU's drives
/// (`disk0`, `disk1`, ...) attach them.
pub(crate) fn block_names(spec: &Spec) -> Vec<String> {
    let devices: Vec<String> = spec
        .block
        .iter()
        .map(|b| format!("--block:{}={}", b.device, b.path.display()))
        .collect();
    attach(spec, &devices)
        .map(|(_, blocks, _)| blocks.into_iter().map(|b| b.name).collect())
        .unwrap_or_default()
}

/// QEMU's arguments for `spec`, its devices attached with `devices`
/// (`--net:NAME=TAP`, `--block:NAME=FILE`, as the tenders take them), with
/// a QMP server on `qmp`.
pub(crate) fn qemu_args(
    spec: &Spec,
    devices: &[String],
    qmp: Option<&Path>,
) -> Result<Vec<String>, String> {
    let (nets, blocks, power_button) = attach(spec, devices)?;
    let vm = Vm {
        image: spec.image.clone(),
        mem_mb: spec.mem.unwrap_or(host::DEFAULT_MEM_MB),
        args: spec.args.clone(),
        nets,
        blocks,
    };
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let accel = if kvm { Accel::Kvm } else { Accel::Tcg };
    // An image from before the power button is not given its word; it is
    // then stopped by SIGTERM (the button's line is never routed).
    let mut args = if power_button {
        vm.qemu_args_with_power_button(accel, host::Console::Serial)
    } else {
        vm.qemu_args(host::Machine::Microvm, accel)
    }
    .map_err(|e| e.to_string())?;
    if let Some(q) = qmp {
        args.push("-qmp".into());
        args.push(format!("unix:{},server=on,wait=off", q.display()));
    }
    Ok(args)
}

/// The guest's end from QEMU's: the status the guest wrote to
/// isa-debug-exit; a QEMU that quit on its own is a stop when the daemon
/// was stopping the unit (recorded as the SIGTERM it sent), else a guest
/// that reset, faulted or powered off without a status (255, as `kiln run`
/// reports it).
pub(crate) fn guest_exit(exit: Exit, stopping: bool) -> Exit {
    match exit {
        Exit::Code(code) => match host::qemu_exit(code) {
            QemuExit::Status(status) => Exit::Code(i32::from(status)),
            QemuExit::NoStatus if stopping => Exit::Signal(15),
            QemuExit::NoStatus => Exit::Code(255),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_codes_become_the_guests_status() {
        assert_eq!(guest_exit(Exit::Code(1), false), Exit::Code(0));
        assert_eq!(guest_exit(Exit::Code(3), false), Exit::Code(1));
        assert_eq!(guest_exit(Exit::Code(255), false), Exit::Code(255));
        // QEMU's own end: a stop if the daemon was stopping it.
        assert_eq!(guest_exit(Exit::Code(0), true), Exit::Signal(15));
        assert_eq!(guest_exit(Exit::Code(0), false), Exit::Code(255));
        assert_eq!(guest_exit(Exit::Signal(9), false), Exit::Signal(9));
    }
}
