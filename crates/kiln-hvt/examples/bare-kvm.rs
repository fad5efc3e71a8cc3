//! The bare KVM baseline for boot benchmarks: opens `/dev/kvm`, creates a VM
//! with 64 KiB of memory and one vCPU, runs two real-mode instructions
//! (`out 0x10, al` then `hlt`) and exits 0. It does what any KVM tender must
//! do and nothing more, so `kiln-hvt` boot times are read against it.
//!
//! Run: `cargo run --release -p kiln-hvt --example bare-kvm`.

use std::process::ExitCode;

use kiln_hvt::sys::Mapping;
use kvm_ioctls::{Kvm, VcpuExit};

/// Guest memory size.
const MEM: usize = 0x1_0000;
/// Where the code is loaded and runs (real mode, `cs` base 0).
const CODE: u64 = 0x1000;
/// `out 0x10, al; hlt`.
const PROGRAM: [u8; 3] = [0xe6, 0x10, 0xf4];

fn run() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm
        .create_vm()
        .map_err(|e| format!("KVM_CREATE_VM failed: {e}"))?;
    let mut mem = Mapping::new(MEM).map_err(|e| format!("cannot map guest memory: {e}"))?;
    let code = usize::try_from(CODE).map_err(|e| e.to_string())?;
    mem.range_mut(code..code + PROGRAM.len())
        .copy_from_slice(&PROGRAM);
    mem.register(&vm)
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION failed: {e}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU failed: {e}"))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS failed: {e}"))?;
    let regs = kvm_bindings::kvm_regs {
        rip: CODE,
        rax: 0x4b,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS failed: {e}"))?;
    let mut outs = 0;
    for _ in 0..16 {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(0x10, [0x4b])) => outs += 1,
            Ok(VcpuExit::Hlt) if outs == 1 => return Ok(()),
            Ok(other) => return Err(format!("unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => return Err(format!("KVM_RUN failed: {e}")),
        }
    }
    Err("the guest did not halt after 16 exits".into())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare-kvm: error: {e}");
            ExitCode::FAILURE
        }
    }
}
