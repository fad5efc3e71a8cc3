//! The KVM machine: one vCPU in 64-bit long mode over the guest memory, and
//! the exits the tender handles.
//!
//! Register state follows Solo5's `hvt_kvm_x86_64.c` / `hvt_cpu_x86_64.h`:
//! paging and protection on, PAE, SSE enabled, EFER.LME|LMA, flat 64-bit
//! code and data segments from the GDT at [`layout::GDT_BASE`], `%rip` at
//! the entry point, `%rsp` at the top of memory minus 8, `%rdi` at the boot
//! info.

use std::fmt::Write as _;
use std::os::fd::{AsRawFd, RawFd};

use kiln_abi::hvt::layout;
use kiln_abi::hvt_ext::{KILN_CPUID_LEAF, KILN_CPUID_SIGNATURE};
use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2, kvm_regs, kvm_segment};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use thiserror::Error;

use crate::guest::GuestMemory;

/// `CR0`: protection enable, numeric error, paging.
const CR0_INIT: u64 = (1 << 0) | (1 << 5) | (1 << 31);
/// `CR4`: PAE, OSFXSR, OSXMMEXCPT.
const CR4_INIT: u64 = (1 << 5) | (1 << 9) | (1 << 10);
/// `EFER`: long mode enable and active, no-execute enable (the tender's
/// page tables mark data NX; Solo5's set LME and LMA only).
const EFER_INIT: u64 = (1 << 8) | (1 << 10) | (1 << 11);
/// `RFLAGS`: bit 1 is reserved and set.
const RFLAGS_INIT: u64 = 0x2;
/// GDT selectors (indexes).
const GDT_CODE: u16 = 1;
const GDT_DATA: u16 = 2;
const GDT_ENTRIES: u16 = 3;

/// The GDT: null, 64-bit code (execute-only, accessed, L), data
/// (read-write, accessed, D/B), all flat with 4 KiB granularity.
pub const GDT: [u64; GDT_ENTRIES as usize] = [0, 0x00af_9900_0000_ffff, 0x00cf_9300_0000_ffff];

/// Why the machine could not be set up or stopped.
#[derive(Debug, Error)]
pub enum VmError {
    /// `/dev/kvm` cannot be opened.
    #[error(
        "cannot open /dev/kvm; hint: is KVM available here, and may this user open /dev/kvm (group kvm)?"
    )]
    Open(#[source] kvm_ioctls::Error),
    /// A KVM call failed.
    #[error("KVM {what} failed")]
    Ioctl {
        /// The call.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM's CPUID table had no room for kiln's leaf.
    #[error(
        "cannot add kiln's CPUID leaf: KVM's table is full; hint: set KILN_HVT_NO_EXTENSIONS=1 to run without kiln's hvt extensions"
    )]
    Cpuid,
    /// The TSC frequency is unknown.
    #[error(
        "KVM cannot tell the TSC frequency (KVM_GET_TSC_KHZ); hint: the host TSC may be unstable"
    )]
    Tsc(#[source] kvm_ioctls::Error),
    /// KVM could not emulate an instruction (common under nested KVM).
    #[error(
        "KVM internal error {suberror} at rip {rip:#x} (instruction bytes: {bytes}){detail}\n{regs}"
    )]
    Internal {
        /// `kvm_run.internal.suberror`.
        suberror: u32,
        /// Explanation for known suberrors.
        detail: &'static str,
        /// The guest's `%rip`.
        rip: u64,
        /// The bytes at `%rip`, hex.
        bytes: String,
        /// Register dump.
        regs: String,
    },
    /// The guest stopped in a way the ABI does not allow.
    #[error("guest {what}\n{regs}")]
    Guest {
        /// What happened.
        what: String,
        /// Register dump.
        regs: String,
    },
}

/// An exit the tender serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoExit {
    /// The port written.
    pub port: u16,
    /// The value (first `size` bytes valid).
    pub data: [u8; 8],
    /// Access size in bytes.
    pub size: usize,
}

/// Why [`Machine::run_debug`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A hypercall.
    Io(IoExit),
    /// A debug exit: the exception (1 for #DB, 3 for #BP), the guest's
    /// linear `%rip` and DR6.
    Debug {
        /// The exception vector.
        exception: u32,
        /// The instruction pointer KVM reports.
        pc: u64,
        /// DR6 (which debug condition fired).
        dr6: u64,
    },
    /// A signal ended `KVM_RUN` (the debugger's interrupt).
    Interrupted,
}

/// The VM, its vCPU and its memory. Fields drop in order: the vCPU and VM
/// before the memory they map.
pub struct Machine {
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    /// Guest memory.
    pub mem: GuestMemory,
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Ioctl { what, source }
}

/// kiln's CPUID leaf: the signature in ebx, ecx, edx and the feature mask
/// in eax (see `kiln_abi::hvt_ext`).
fn kiln_leaf(features: u32) -> kvm_cpuid_entry2 {
    let [ebx, ecx, edx] = KILN_CPUID_SIGNATURE;
    kvm_cpuid_entry2 {
        function: KILN_CPUID_LEAF,
        index: 0,
        flags: 0,
        eax: features,
        ebx,
        ecx,
        edx,
        padding: [0; 3],
    }
}

fn segment(selector: u16, type_: u8, l: u8, db: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: selector * 8,
        type_,
        present: 1,
        dpl: 0,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

impl Machine {
    /// Creates the VM over `mem` with one vCPU about to run `entry`. With a
    /// non-zero `extensions` (a mask of `kiln_abi::hvt_ext` feature bits)
    /// the vCPU's CPUID also answers kiln's leaf with the signature and
    /// that mask.
    pub fn new(mem: GuestMemory, entry: u64, extensions: u32) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::Open)?;
        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        mem.mapping()
            .register(&vm)
            .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        let vcpu = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        if extensions != 0 {
            cpuid
                .push(kiln_leaf(extensions))
                .map_err(|_| VmError::Cpuid)?;
        }
        vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;

        let mut sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        sregs.cr0 = CR0_INIT;
        sregs.cr3 = layout::PML4_BASE;
        sregs.cr4 = CR4_INIT;
        sregs.efer = EFER_INIT;
        sregs.cs = segment(GDT_CODE, 9, 1, 0);
        let data = segment(GDT_DATA, 3, 0, 1);
        sregs.ss = data;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.gdt.base = layout::GDT_BASE;
        sregs.gdt.limit = GDT_ENTRIES * 8 - 1;
        sregs.tr = kvm_segment {
            base: 0,
            limit: 0,
            selector: 0,
            type_: 11,
            present: 1,
            ..Default::default()
        };
        sregs.ldt = kvm_segment {
            unusable: 1,
            ..Default::default()
        };
        vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;

        let regs = kvm_regs {
            rip: entry,
            rflags: RFLAGS_INIT,
            rsp: mem.size() - 8,
            rdi: layout::BOOT_INFO_BASE,
            ..Default::default()
        };
        vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
        Ok(Self {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            mem,
        })
    }

    /// The vCPU's TSC frequency in Hz.
    pub fn tsc_hz(&self) -> Result<u64, VmError> {
        let khz = self.vcpu.get_tsc_khz().map_err(VmError::Tsc)?;
        Ok(u64::from(khz) * 1000)
    }

    /// The vCPU descriptor (for the seccomp filter).
    pub fn vcpu_fd(&self) -> RawFd {
        self.vcpu.as_raw_fd()
    }

    /// A register dump, for errors and aborts.
    pub fn register_dump(&self) -> String {
        let mut out = String::new();
        match self.vcpu.get_regs() {
            Ok(r) => {
                let _ = write!(
                    out,
                    "  rip={:#018x} rsp={:#018x} rbp={:#018x} rflags={:#010x}\n  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n  rsi={:#018x} rdi={:#018x} r8 ={:#018x} r9 ={:#018x}\n  r10={:#018x} r11={:#018x} r12={:#018x} r13={:#018x}\n  r14={:#018x} r15={:#018x}",
                    r.rip,
                    r.rsp,
                    r.rbp,
                    r.rflags,
                    r.rax,
                    r.rbx,
                    r.rcx,
                    r.rdx,
                    r.rsi,
                    r.rdi,
                    r.r8,
                    r.r9,
                    r.r10,
                    r.r11,
                    r.r12,
                    r.r13,
                    r.r14,
                    r.r15
                );
            }
            Err(e) => {
                let _ = write!(out, "  (registers unavailable: {e})");
            }
        }
        if let Ok(s) = self.vcpu.get_sregs() {
            let _ = write!(
                out,
                "\n  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                s.cr0, s.cr2, s.cr3, s.cr4, s.efer
            );
        }
        out
    }

    fn rip(&self) -> u64 {
        self.vcpu.get_regs().map(|r| r.rip).unwrap_or(0)
    }

    fn guest_error(&self, what: String) -> VmError {
        VmError::Guest {
            what,
            regs: self.register_dump(),
        }
    }

    /// Runs the vCPU until it writes to a port; every other exit is an error.
    pub fn run(&mut self) -> Result<IoExit, VmError> {
        match self.run_until(false)? {
            Stop::Io(io) => Ok(io),
            // Not reported without `debug`.
            Stop::Debug { .. } | Stop::Interrupted => Err(self.guest_error("stopped".into())),
        }
    }

    /// Runs the vCPU until it writes to a port, stops for the debugger
    /// (`KVM_SET_GUEST_DEBUG`) or a signal interrupts it.
    pub fn run_debug(&mut self) -> Result<Stop, VmError> {
        self.run_until(true)
    }

    /// The general-purpose registers.
    pub fn regs(&self) -> Result<kvm_regs, VmError> {
        self.vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))
    }

    /// Sets the general-purpose registers.
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<(), VmError> {
        self.vcpu.set_regs(regs).map_err(ioctl("KVM_SET_REGS"))
    }

    /// The special registers (segments, control registers).
    pub fn sregs(&self) -> Result<kvm_bindings::kvm_sregs, VmError> {
        self.vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))
    }

    /// Sets the special registers.
    pub fn set_sregs(&self, sregs: &kvm_bindings::kvm_sregs) -> Result<(), VmError> {
        self.vcpu.set_sregs(sregs).map_err(ioctl("KVM_SET_SREGS"))
    }

    /// The x87 and SSE registers.
    pub fn fpu(&self) -> Result<kvm_bindings::kvm_fpu, VmError> {
        self.vcpu.get_fpu().map_err(ioctl("KVM_GET_FPU"))
    }

    /// Sets what stops the vCPU for the debugger.
    pub fn set_guest_debug(&self, debug: &kvm_bindings::kvm_guest_debug) -> Result<(), VmError> {
        self.vcpu
            .set_guest_debug(debug)
            .map_err(ioctl("KVM_SET_GUEST_DEBUG"))
    }

    /// Makes a 32-bit `out` to `port` signal `fd` inside KVM, without an
    /// exit to the tender (Solo5's ring kick).
    pub fn register_kick(
        &self,
        fd: &vmm_sys_util::eventfd::EventFd,
        port: u16,
    ) -> Result<(), VmError> {
        self._vm
            .register_ioevent(
                fd,
                &kvm_ioctls::IoEventAddress::Pio(u64::from(port)),
                kvm_ioctls::NoDatamatch,
            )
            .map_err(ioctl("KVM_IOEVENTFD"))
    }

    /// The vCPU's `kvm_run.immediate_exit` byte, which lives as long as the
    /// machine: a signal handler sets it to end the next `KVM_RUN`.
    pub fn immediate_exit(&mut self) -> *mut u8 {
        &raw mut self.vcpu.get_kvm_run().immediate_exit
    }

    /// Clears `immediate_exit`, before resuming the guest.
    pub fn clear_immediate_exit(&mut self) {
        self.vcpu.set_kvm_immediate_exit(0);
    }

    fn run_until(&mut self, debug: bool) -> Result<Stop, VmError> {
        loop {
            enum Raw {
                Io(IoExit),
                Debug(Stop),
                Internal,
                Other(String),
            }
            let stop = match self.vcpu.run() {
                Ok(VcpuExit::IoOut(port, data)) => {
                    let mut copy = [0u8; 8];
                    let size = data.len().min(8);
                    copy[..size].copy_from_slice(&data[..size]);
                    Raw::Io(IoExit {
                        port,
                        data: copy,
                        size: data.len(),
                    })
                }
                Ok(VcpuExit::IoIn(port, _)) => Raw::Other(format!(
                    "read from port {port:#x}, which hvt does not provide"
                )),
                Ok(VcpuExit::MmioWrite(addr, _)) if addr < self.mem.size() => {
                    // KVM reports a write to a page the host mapping keeps
                    // read-only as MMIO.
                    Raw::Other(format!(
                        "wrote to read-only memory at {addr:#x} (its code or read-only data, or the boot data)"
                    ))
                }
                Ok(VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _)) => {
                    Raw::Other(format!("accessed address {addr:#x}, outside guest memory"))
                }
                Ok(VcpuExit::Hlt) => {
                    Raw::Other("executed hlt; hint: guests stop with the halt hypercall".into())
                }
                Ok(VcpuExit::Shutdown) => Raw::Other("triple-faulted (KVM shutdown exit)".into()),
                Ok(VcpuExit::FailEntry(reason, _)) => Raw::Other(format!(
                    "could not be entered (hardware entry failure reason {reason:#x})"
                )),
                Ok(VcpuExit::InternalError) => Raw::Internal,
                Ok(VcpuExit::Debug(arch)) if debug => Raw::Debug(Stop::Debug {
                    exception: arch.exception,
                    pc: arch.pc,
                    dr6: arch.dr6,
                }),
                Ok(other) => Raw::Other(format!("stopped with unexpected KVM exit {other:?}")),
                Err(e) if debug && e.errno() == libc::EINTR => Raw::Debug(Stop::Interrupted),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) if e.errno() == libc::EFAULT => {
                    Raw::Other("caused a host/guest translation fault (KVM_RUN: EFAULT)".into())
                }
                Err(source) => {
                    return Err(VmError::Ioctl {
                        what: "KVM_RUN",
                        source,
                    });
                }
            };
            return match stop {
                Raw::Io(io) => Ok(Stop::Io(io)),
                Raw::Debug(stop) => Ok(stop),
                Raw::Other(what) => Err(self.guest_error(what)),
                Raw::Internal => {
                    let suberror = crate::sys::internal_error_suberror(&mut self.vcpu);
                    let rip = self.rip();
                    let max = 15u64.min(self.mem.size().saturating_sub(rip));
                    let bytes = match self.mem.slice(rip, max) {
                        Ok(b) if !b.is_empty() => b
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                        _ => "unavailable: rip outside guest memory".into(),
                    };
                    let detail = if suberror == kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
                        "; KVM failed to emulate this instruction, which happens under nested virtualization for some instructions"
                    } else {
                        ""
                    };
                    Err(VmError::Internal {
                        suberror,
                        detail,
                        rip,
                        bytes,
                        regs: self.register_dump(),
                    })
                }
            };
        }
    }
}
