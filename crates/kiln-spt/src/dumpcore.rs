//! `--dumpcore=DIR`: an ELF core file of the guest when it aborts (exit
//! status 255), faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE) or makes a
//! forbidden system call (SIGSYS), which `gdb IMAGE CORE` opens; the
//! writer and the file are kiln-tender's ([`kiln_tender::dumpcore`], as
//! kiln-hvt's), named `core.kiln-spt.PID` in DIR.
//!
//! The guest process is gone when the tender learns of its end, so what
//! the core needs is kept outside it:
//!
//! - guest memory is a memory file ([`crate::sys::memory_file`]) that the
//!   guest process maps shared instead of anonymous memory and the tender
//!   keeps open: [`MemoryFile`] reads it after the death, never more than
//!   guest memory's size;
//! - the registers come from the signal context the guest process's
//!   fatal-signal handler copies to the shared report page
//!   ([`crate::sys::Record`]);
//! - an abort is a system call, not a signal: with `--dumpcore` the filter
//!   allows `exit_group` with a status of at most 254 only, so that 255 (or
//!   anything above) traps like a forbidden call; the handler records the
//!   registers at the call and the tender reports the exit status the
//!   call asked for ([`crate::supervise::killed`]).
//!
//! Everything read from the guest is hostile: the registers are written to
//! the note as they are, the segments come from the tender's own layout
//! (the image it loaded, guest memory's size), not from the guest.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kiln_abi::spt::SPT_HOST_MEM_BASE;
use kiln_tender::dumpcore::{CoreRegs, CoreState, DumpError, Memory, SIGABRT, Segment};

use crate::elf::{Image, PAGE_SIZE, Protection};
use crate::supervise::Death;
use crate::sys::Record;

/// The guest's memory file, read by the tender after the guest died.
#[derive(Debug)]
pub struct MemoryFile {
    file: File,
    len: u64,
}

impl MemoryFile {
    /// A memory file for guest memory of `mem_size` bytes (from
    /// `SPT_HOST_MEM_BASE`).
    pub fn new(mem_size: u64) -> io::Result<Self> {
        let len = mem_size
            .checked_sub(SPT_HOST_MEM_BASE)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd: OwnedFd = crate::sys::memory_file(len)?;
        Ok(Self {
            file: File::from(fd),
            len,
        })
    }

    /// Its descriptor, which the guest process maps and then closes.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Pieces in which the file is read.
const CHUNK: u64 = 1 << 20;

impl Memory for MemoryFile {
    fn copy(&self, offset: u64, len: u64, out: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| io::Error::other("outside guest memory"))?;
        let mut buf = vec![0u8; CHUNK.min(len) as usize];
        let mut at = offset;
        while at < end {
            let n = (end - at).min(CHUNK) as usize;
            // The tender alone holds the file and never shrinks it: a short
            // read is an error, not the end of the guest's memory.
            self.file.read_exact_at(&mut buf[..n], at)?;
            out(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    }
}

/// The core's segments: guest memory as the tender laid it out, low
/// memory (boot info, manifest, command line: read-only up to `low_end`),
/// the image's segments with their protections, everything else
/// read-write. The guest cannot change protections (`mprotect` is
/// refused), so this is what it ran with.
pub fn segments(image: &Image<'_>, low_end: u64, mem_size: u64) -> Vec<Segment> {
    let mut fixed: Vec<(u64, u64, Protection)> =
        vec![(SPT_HOST_MEM_BASE, low_end, Protection::Read)];
    for s in &image.segments {
        let (start, end) = s.pages();
        fixed.push((start, end, s.prot));
    }
    fixed.sort_by_key(|&(start, ..)| start);
    let mut out = Vec::new();
    let mut at = SPT_HOST_MEM_BASE;
    let mut push = |start: u64, end: u64, prot: Protection| {
        let (start, end) = (start.max(SPT_HOST_MEM_BASE), end.min(mem_size));
        if start < end {
            out.push(Segment {
                va: start,
                offset: start - SPT_HOST_MEM_BASE,
                len: end - start,
                writable: prot == Protection::ReadWrite,
                executable: prot == Protection::ReadExec,
            });
        }
    };
    for (start, end, prot) in fixed {
        let start = start.max(at);
        push(at, start, Protection::ReadWrite);
        push(start, end, prot);
        at = at.max(end);
    }
    push(at, mem_size, Protection::ReadWrite);
    out
}

/// The end of the low memory's read-only pages for `low` bytes at
/// `low_at`, as [`crate::guest::GuestMemory::load`] protects them.
pub fn low_end(low_at: u64, low: &[u8]) -> u64 {
    low_at.saturating_add(low.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// The registers of a signal context's `gregs` ([`Record::gregs`]).
pub fn regs_of(record: &Record) -> CoreRegs {
    let g = |r: libc::c_int| record.gregs[r as usize];
    let csgsfs = g(libc::REG_CSGSFS);
    CoreRegs {
        gpr: [
            g(libc::REG_RAX),
            g(libc::REG_RBX),
            g(libc::REG_RCX),
            g(libc::REG_RDX),
            g(libc::REG_RSI),
            g(libc::REG_RDI),
            g(libc::REG_RBP),
            g(libc::REG_RSP),
            g(libc::REG_R8),
            g(libc::REG_R9),
            g(libc::REG_R10),
            g(libc::REG_R11),
            g(libc::REG_R12),
            g(libc::REG_R13),
            g(libc::REG_R14),
            g(libc::REG_R15),
        ],
        rip: g(libc::REG_RIP),
        rflags: g(libc::REG_EFL),
        // cs, then ss (from the context's fourth 16-bit field, which
        // Linux fills since 4.6), ds, es, fs, gs.
        segments: [
            csgsfs & 0xffff,
            (csgsfs >> 48) & 0xffff,
            0,
            0,
            (csgsfs >> 32) & 0xffff,
            (csgsfs >> 16) & 0xffff,
        ],
        fs_base: record.fs_base.unwrap_or(0),
        gs_base: 0,
    }
}

/// Whether a guest that ended as `death` gets a core, and the signal the
/// core names: an abort (exit status 255), a fault, a forbidden call.
pub fn signal_for(death: &Death) -> Option<u32> {
    match *death {
        Death::Exited(255) => Some(SIGABRT),
        Death::Exited(_) | Death::Signal(_) => None,
        Death::Seccomp { .. } => Some(libc::SIGSYS as u32),
        Death::Fault { signal, .. } => u32::try_from(signal).ok(),
    }
}

/// A core file waiting for the guest to fail: kiln-tender's, named
/// `core.kiln-spt.PID`.
#[derive(Debug)]
pub struct CoreFile(kiln_tender::dumpcore::CoreFile);

impl CoreFile {
    /// Opens `dir` (never through a symbolic link) and an unnamed file in
    /// it: a DIR that cannot take a core is refused before the guest runs.
    pub fn prepare(dir: &Path) -> Result<Self, DumpError> {
        kiln_tender::dumpcore::CoreFile::prepare(dir, "kiln-spt").map(Self)
    }

    /// Writes the core of the guest `pid` that ended as `death`, with
    /// what its handler recorded (`record`, registers zero without one),
    /// and names it; returns its path. At most guest memory's size of
    /// bytes from `mem`.
    pub fn write(
        self,
        death: &Death,
        record: Option<&Record>,
        pid: u32,
        segments: &[Segment],
        mem: &MemoryFile,
    ) -> Result<PathBuf, DumpError> {
        let regs = record.map(regs_of).unwrap_or_default();
        let state = CoreState {
            regs: &regs,
            signal: signal_for(death).unwrap_or(SIGABRT),
            pid,
            fpregs: record.and_then(|r| r.fpregs.as_ref()),
        };
        // The tender is not filtered: never-touched guest memory stays a
        // hole in the file.
        self.0.write(&state, segments, mem.len, mem, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut gregs = [0u64; crate::sys::NGREG];
        for (i, g) in gregs.iter_mut().enumerate() {
            *g = 0x100 + i as u64;
        }
        gregs[libc::REG_CSGSFS as usize] = 0x002b_0000_0000_0033;
        Record {
            signal: libc::SIGSEGV,
            code: 1,
            addr: 0,
            nr: 0,
            rip: gregs[libc::REG_RIP as usize],
            gregs,
            fs_base: Some(0x7000),
            fpregs: None,
        }
    }

    #[test]
    fn the_context_registers_become_the_cores() {
        let r = regs_of(&record());
        assert_eq!(r.gpr[0], 0x100 + libc::REG_RAX as u64);
        assert_eq!(r.gpr[7], 0x100 + libc::REG_RSP as u64);
        assert_eq!(r.gpr[15], 0x100 + libc::REG_R15 as u64);
        assert_eq!(r.rip, 0x100 + libc::REG_RIP as u64);
        assert_eq!(r.segments[0], 0x33);
        assert_eq!(r.segments[1], 0x2b);
        assert_eq!(r.fs_base, 0x7000);
    }

    #[test]
    fn only_failures_get_a_core() {
        assert_eq!(signal_for(&Death::Exited(0)), None);
        assert_eq!(signal_for(&Death::Exited(254)), None);
        assert_eq!(signal_for(&Death::Signal(libc::SIGKILL)), None);
        assert_eq!(signal_for(&Death::Exited(255)), Some(SIGABRT));
        let fault = Death::Fault {
            signal: libc::SIGFPE,
            addr: None,
            rip: None,
        };
        assert_eq!(signal_for(&fault), Some(libc::SIGFPE as u32));
        let call = Death::Seccomp {
            nr: Some(39),
            rip: None,
        };
        assert_eq!(signal_for(&call), Some(libc::SIGSYS as u32));
    }

    #[test]
    fn segments_cover_guest_memory_once_with_the_loaded_protections() {
        let data = crate::elf::tests::image(
            kiln_abi::AbiNote::spt(),
            &[(0x10_0000, 0x1000, 5), (0x10_1000, 0x2345, 6)],
        );
        let mem = 8 << 20;
        let image = Image::parse(&data, mem).unwrap();
        let segs = segments(&image, 0x11000, mem);
        let total: u64 = segs.iter().map(|s| s.len).sum();
        assert_eq!(total, mem - SPT_HOST_MEM_BASE);
        let mut at = SPT_HOST_MEM_BASE;
        for s in &segs {
            assert_eq!(s.va, at, "{segs:#x?}");
            assert_eq!(s.offset, s.va - SPT_HOST_MEM_BASE);
            at += s.len;
        }
        let code = segs.iter().find(|s| s.va == 0x10_0000).unwrap();
        assert!(code.executable && !code.writable);
        assert_eq!(code.len, 0x1000);
        let low = &segs[0];
        assert!(!low.writable && !low.executable);
        assert_eq!(low.len, 0x1000);
    }
}
