//! `--dumpcore=DIR`: an ELF core file of the guest when it aborts or
//! faults, which `gdb IMAGE CORE` opens (the layout Solo5's
//! `hvt_dumpcore.c` also writes: one `NT_PRSTATUS` note with the
//! registers, then the guest's memory as `PT_LOAD` segments). The writer
//! and the file are kiln-tender's ([`kiln_tender::dumpcore`], shared with
//! kiln-spt); this module finds the registers and the segments.
//!
//! The memory segments are the guest's own virtual mappings
//! ([`crate::paging::mappings`]), so that gdb reads addresses as the
//! guest saw them; they hold at most guest memory's size of bytes. The file
//! is created unnamed in DIR before the guest starts ([`CoreFile::prepare`])
//! and named `core.kiln-hvt.PID` only once written: the seccomp filter
//! allows writing to that one descriptor and linking it into that one
//! directory, and a name that exists already (a symbolic link included) is
//! refused, not followed or replaced.
//!
//! kiln guests handle their exceptions: the handler (kiln-solo5's
//! `sys::cpu`) saves the interrupted registers as a `TrapFrame` at the top of
//! its IST1 stack and aborts. [`fault_frame`] finds that frame through the
//! TSS, so that the core shows the faulting function, not the handler.

use std::io::{self, Write};
use std::path::Path;

use kvm_bindings::{kvm_regs, kvm_sregs};

use crate::guest::GuestMemory;
use crate::paging::{self, Mapping};

pub use kiln_tender::dumpcore::{CoreRegs, DumpError, SIGABRT};

/// A core file waiting for the guest to fail: kiln-tender's, named
/// `core.kiln-hvt.PID`.
#[derive(Debug)]
pub struct CoreFile(kiln_tender::dumpcore::CoreFile);

impl CoreFile {
    /// Opens `dir` and an unnamed file in it.
    pub fn prepare(dir: &Path) -> Result<Self, DumpError> {
        kiln_tender::dumpcore::CoreFile::prepare(dir, "kiln-hvt").map(Self)
    }

    /// The descriptors the seccomp filter must allow: the file (written,
    /// linked) and the directory (linked into).
    pub fn fds(&self) -> (std::os::fd::RawFd, std::os::fd::RawFd) {
        self.0.fds()
    }

    /// Writes the core and names it; returns its path.
    pub fn write(
        self,
        mem: &GuestMemory,
        cr3: u64,
        regs: &CoreRegs,
        signal: u32,
    ) -> Result<std::path::PathBuf, DumpError> {
        let state = core_state(regs, signal);
        self.0
            .write(&state, &segments(mem, cr3), mem.size(), &Guest(mem), false)
    }
}

/// The vCPU's registers, as a core records them.
pub fn regs_from_vcpu(r: &kvm_regs, s: &kvm_sregs) -> CoreRegs {
    CoreRegs {
        gpr: [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ],
        rip: r.rip,
        rflags: r.rflags,
        segments: [s.cs, s.ss, s.ds, s.es, s.fs, s.gs].map(|seg| u64::from(seg.selector)),
        fs_base: s.fs.base,
        gs_base: s.gs.base,
    }
}

/// Size of kiln-solo5's `TrapFrame` (22 quadwords: r15 down to rax,
/// vector, error code, rip, cs, rflags, rsp, ss).
pub const TRAP_FRAME_SIZE: u64 = 22 * 8;
/// Bytes below the IST1 top the handler's stack pointer may be.
const TRAP_STACK_MAX: u64 = 64 * 1024;

/// The registers at the fault and its vector, when the vCPU stopped inside
/// kiln-solo5's exception handler (at CPL 0, its stack pointer in the IST1
/// stack the TSS names); `None` otherwise or when anything read is not
/// in guest memory.
pub fn fault_frame(mem: &GuestMemory, r: &kvm_regs, s: &kvm_sregs) -> Option<(CoreRegs, u64)> {
    let top = trap_stack_top(mem, r, s)?;
    let read = |va: u64, out: &mut [u8]| read_virtual(mem, s.cr3, va, out);
    let mut frame = [0u8; TRAP_FRAME_SIZE as usize];
    read(top - TRAP_FRAME_SIZE, &mut frame)?;
    let q = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&frame[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    let vector = q(15);
    if vector >= 32 {
        return None;
    }
    // r15 r14 r13 r12 r11 r10 r9 r8 rbp rdi rsi rdx rcx rbx rax vector
    // error rip cs rflags rsp ss
    Some((
        CoreRegs {
            gpr: [
                q(14),
                q(13),
                q(12),
                q(11),
                q(10),
                q(9),
                q(8),
                q(20),
                q(7),
                q(6),
                q(5),
                q(4),
                q(3),
                q(2),
                q(1),
                q(0),
            ],
            rip: q(17),
            rflags: q(19),
            segments: [
                q(18),
                q(21),
                u64::from(s.ds.selector),
                u64::from(s.es.selector),
                u64::from(s.fs.selector),
                u64::from(s.gs.selector),
            ],
            fs_base: s.fs.base,
            gs_base: s.gs.base,
        },
        vector,
    ))
}

/// Reads guest-virtual `va..va + out.len()` through the tables at `cr3`.
pub fn read_virtual(mem: &GuestMemory, cr3: u64, va: u64, out: &mut [u8]) -> Option<()> {
    let mut done = 0usize;
    paging::for_each_run(mem, cr3, va, out.len() as u64, |gpa, n| {
        let bytes = mem
            .slice(gpa, n)
            .map_err(|_| paging::WalkError::OutsideMemory { va, gpa })?;
        out[done..done + bytes.len()].copy_from_slice(bytes);
        done += bytes.len();
        Ok(())
    })
    .ok()
}

/// The top of the IST1 stack the TSS names, when the vCPU runs on it at
/// CPL 0 (inside kiln-solo5's exception handler).
pub fn trap_stack_top(mem: &GuestMemory, r: &kvm_regs, s: &kvm_sregs) -> Option<u64> {
    if s.cs.selector & 3 != 0 {
        return None;
    }
    // The TSS's IST1 field, at byte 36.
    let mut ist1 = [0u8; 8];
    read_virtual(mem, s.cr3, s.tr.base.checked_add(36)?, &mut ist1)?;
    let top = u64::from_le_bytes(ist1);
    (top.checked_sub(TRAP_STACK_MAX)? <= r.rsp && r.rsp < top).then_some(top)
}

/// The signal a core names for exception `vector`, as Linux maps them.
pub fn signal_of(vector: u64) -> u32 {
    match vector {
        0 | 16 | 19 => 8, // SIGFPE
        1 | 3 => 5,       // SIGTRAP
        6 => 4,           // SIGILL
        17 => 7,          // SIGBUS
        _ => 11,          // SIGSEGV
    }
}

/// Guest-physical memory, for kiln-tender's writer.
struct Guest<'a>(&'a GuestMemory);

impl kiln_tender::dumpcore::Memory for Guest<'_> {
    fn copy(&self, offset: u64, len: u64, out: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        out(self.0.slice(offset, len).map_err(io::Error::other)?);
        Ok(())
    }
}

fn core_state(regs: &CoreRegs, signal: u32) -> kiln_tender::dumpcore::CoreState<'_> {
    kiln_tender::dumpcore::CoreState {
        regs,
        signal,
        pid: 1,
        fpregs: None,
    }
}

/// The core's segments: the guest's mappings under CR3 `cr3`, or all of
/// memory at address 0 when the tables give none.
fn segments(mem: &GuestMemory, cr3: u64) -> Vec<kiln_tender::dumpcore::Segment> {
    let mut mappings = paging::mappings(mem, cr3);
    if mappings.is_empty() {
        mappings.push(Mapping {
            va: 0,
            gpa: 0,
            len: mem.size(),
            writable: true,
            executable: true,
        });
    }
    mappings
        .iter()
        .map(|m| kiln_tender::dumpcore::Segment {
            va: m.va,
            offset: m.gpa,
            len: m.len,
            writable: m.writable,
            executable: m.executable,
        })
        .collect()
}

/// Writes the core of `mem` (its mappings under CR3 `cr3`, or all of it
/// at address 0 when the tables give none) with `regs` to `out`.
pub fn write_core_with(
    out: impl Write,
    mem: &GuestMemory,
    cr3: u64,
    regs: &CoreRegs,
    signal: u32,
) -> io::Result<()> {
    kiln_tender::dumpcore::write_core(
        out,
        &core_state(regs, signal),
        &segments(mem, cr3),
        mem.size(),
        &Guest(mem),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB2: u64 = 0x20_0000;
    const TSS: u64 = 0x5000;
    const TOP: u64 = 0x30_0000;

    fn set(mem: &mut GuestMemory, at: u64, value: u64) {
        mem.write(at, &value.to_le_bytes()).unwrap();
    }

    /// 4 MiB identity-mapped with two large pages (tables at 0x1000,
    /// 0x2000, 0x3000), a TSS at 0x5000 whose IST1 is `TOP`, and a trap
    /// frame for a #PF at CPL 3 under it.
    fn faulted() -> (GuestMemory, kvm_regs, kvm_sregs) {
        let mut mem = GuestMemory::new(2 * MB2).unwrap();
        set(&mut mem, 0x1000, 0x2000 | 3);
        set(&mut mem, 0x2000, 0x3000 | 3);
        set(&mut mem, 0x3000, 0x83);
        set(&mut mem, 0x3008, MB2 | 0x83);
        set(&mut mem, TSS + 36, TOP);
        let frame = TOP - TRAP_FRAME_SIZE;
        for i in 0..22 {
            set(&mut mem, frame + i * 8, 0x100 + i);
        }
        set(&mut mem, frame + 15 * 8, 14); // vector
        set(&mut mem, frame + 17 * 8, 0x10_4d60); // rip
        set(&mut mem, frame + 18 * 8, 0x33); // cs
        set(&mut mem, frame + 20 * 8, 0x7f_fc68); // rsp
        let regs = kvm_regs {
            rsp: TOP - 0x400,
            rip: 0x10_cbe6,
            ..Default::default()
        };
        let mut sregs = kvm_sregs {
            cr3: 0x1000,
            ..Default::default()
        };
        sregs.cs.selector = 0x08;
        sregs.tr.base = TSS;
        (mem, regs, sregs)
    }

    #[test]
    fn the_trap_frame_gives_the_registers_at_the_fault() {
        let (mem, r, s) = faulted();
        let (regs, vector) = fault_frame(&mem, &r, &s).unwrap();
        assert_eq!(vector, 14);
        assert_eq!(signal_of(vector), 11);
        assert_eq!(regs.rip, 0x10_4d60);
        assert_eq!(regs.gpr[7], 0x7f_fc68); // rsp
        assert_eq!(regs.gpr[0], 0x100 + 14); // rax, pushed first
        assert_eq!(regs.gpr[15], 0x100); // r15, pushed last
        assert_eq!(regs.segments[0], 0x33);
    }

    #[test]
    fn hostile_trap_state_gives_no_frame() {
        let (mut mem, r, s) = faulted();
        // Not in the handler: CPL 3, or a stack pointer off the IST1 stack.
        let mut user = s;
        user.cs.selector = 0x33;
        assert!(fault_frame(&mem, &r, &user).is_none());
        let mut far = r;
        far.rsp = 0x1000;
        assert!(fault_frame(&mem, &far, &s).is_none());
        // A TSS address that overflows, or is not mapped.
        let mut tss = s;
        tss.tr.base = u64::MAX - 10;
        assert!(fault_frame(&mem, &r, &tss).is_none());
        tss.tr.base = 0x4000_0000;
        assert!(fault_frame(&mem, &r, &tss).is_none());
        // CR3 outside memory.
        let mut cr3 = s;
        cr3.cr3 = u64::MAX;
        assert!(fault_frame(&mem, &r, &cr3).is_none());
        // IST1 below 64 KiB (underflow), at the top of the address space,
        // or past guest memory with the stack pointer under it.
        for (top, rsp) in [
            (0x10, 0x8),
            (u64::MAX, u64::MAX - 8),
            (0x4000_0000, 0x3fff_ff00),
        ] {
            set(&mut mem, TSS + 36, top);
            let mut r = r;
            r.rsp = rsp;
            assert!(fault_frame(&mem, &r, &s).is_none(), "{top:#x}");
        }
        // A vector that is no exception.
        set(&mut mem, TSS + 36, TOP);
        set(&mut mem, TOP - TRAP_FRAME_SIZE + 15 * 8, 99);
        assert!(fault_frame(&mem, &r, &s).is_none());
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(x)
    }

    #[test]
    fn the_core_is_an_elf_core_of_the_mappings() {
        let (mem, r, s) = faulted();
        let (regs, vector) = fault_frame(&mem, &r, &s).unwrap();
        let mut out = Vec::new();
        write_core_with(&mut out, &mem, s.cr3, &regs, signal_of(vector)).unwrap();
        assert_eq!(&out[..4], b"\x7fELF");
        assert_eq!(u16_at(&out, 16), 4); // ET_CORE
        assert_eq!(u16_at(&out, 18), 62); // EM_X86_64
        // The note and one segment: the two large pages, merged.
        assert_eq!(u16_at(&out, 56), 2);
        let phoff = u64_at(&out, 32) as usize;
        let note = u64_at(&out, phoff + 8) as usize;
        assert_eq!(&out[note + 12..note + 16], b"CORE");
        let pr_reg = note + 20 + 112;
        assert_eq!(u64_at(&out, pr_reg + 16 * 8), 0x10_4d60); // rip
        assert_eq!(u64_at(&out, pr_reg + 19 * 8), 0x7f_fc68); // rsp
        let load = phoff + 56;
        assert_eq!(u64_at(&out, load + 16), 0); // p_vaddr
        assert_eq!(u64_at(&out, load + 32), 2 * MB2); // p_filesz
        // Guest memory and headers, no more.
        assert!(out.len() as u64 <= mem.size() + 2 * paging::PAGE);
        let data = u64_at(&out, load + 8) as usize;
        assert_eq!(u64_at(&out, data + TSS as usize + 36), TOP);
    }

    #[test]
    fn tables_that_map_nothing_dump_all_memory_at_zero() {
        let mem = GuestMemory::new(MB2).unwrap();
        let mut out = Vec::new();
        write_core_with(&mut out, &mem, 0, &CoreRegs::default(), SIGABRT).unwrap();
        assert_eq!(u16_at(&out, 56), 2);
        assert!(out.len() as u64 <= mem.size() + 2 * paging::PAGE);
    }

    #[test]
    fn a_core_is_named_only_in_its_directory_and_never_through_a_link() {
        let (mem, r, s) = faulted();
        let regs = regs_from_vcpu(&r, &s);
        let base = std::env::temp_dir().join(format!("kiln-hvt-dumpcore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("cores");
        let elsewhere = base.join("elsewhere");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        assert!(matches!(
            CoreFile::prepare(&base.join("missing")),
            Err(DumpError::Create { .. })
        ));
        // Nothing appears before the core is written.
        let core = CoreFile::prepare(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let path = core.write(&mem, s.cr3, &regs, SIGABRT).unwrap();
        assert_eq!(path.parent(), Some(dir.as_path()));
        assert!(std::fs::metadata(&path).unwrap().len() > mem.size());
        // A link planted at the name is neither followed nor replaced.
        std::fs::remove_file(&path).unwrap();
        let target = elsewhere.join("victim");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let core = CoreFile::prepare(&dir).unwrap();
        assert!(matches!(
            core.write(&mem, s.cr3, &regs, SIGABRT),
            Err(DumpError::Write { .. })
        ));
        assert!(!target.exists());
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
        let _ = std::fs::remove_dir_all(&base);
    }
}
