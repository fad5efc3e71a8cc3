//! The gdb remote stub (`--gdb[=ADDR:PORT]`, Cargo feature `gdb`): the
//! guest stops at its entry point until gdb connects; then gdb reads and
//! writes registers and memory, sets software and hardware breakpoints,
//! single-steps, continues, interrupts (Ctrl-C) and detaches. The protocol
//! is the `gdbstub` crate's; this module is the target it drives.
//!
//! Addresses from gdb are the guest's virtual ones: they are translated
//! through the guest's current page tables ([`crate::paging`]), which the
//! unikernel replaces early, at CPL 3. Breakpoints are `int3` bytes that
//! KVM intercepts (`KVM_GUESTDBG_USE_SW_BP`), written through the tender's
//! write protection of the image's code; hardware breakpoints use the
//! four debug registers (`KVM_GUESTDBG_USE_HW_BP`); a step is
//! `KVM_GUESTDBG_SINGLESTEP`. Ctrl-C reaches a running guest as SIGIO on
//! the connection, which ends `KVM_RUN` ([`crate::sys::debug`]).
//!
//! The target works on a [`Guest`]: the running VM ([`Running`]) or, for
//! the fuzz target, [`crate::gdb_harness`]'s guest without KVM, whose
//! registers and memory are arbitrary bytes.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use gdbstub::common::Signal;
use gdbstub::conn::{Connection as GdbConnection, ConnectionExt};
use gdbstub::stub::run_blocking::{self, BlockingEventLoop, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, SwBreakpoint, SwBreakpointOps,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::X86_64_SSE;
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use kvm_bindings::{
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
    kvm_fpu, kvm_guest_debug, kvm_regs, kvm_segment, kvm_sregs,
};
use thiserror::Error;

use crate::guest::GuestMemory;
use crate::vm::{IoExit, Machine, Stop, VmError};
use crate::{Exit, Running, Served, TenderError};
use crate::{dumpcore, paging};

/// Why the gdb session failed.
#[derive(Debug, Error)]
pub enum GdbError {
    /// The listening socket.
    #[error("--gdb: cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the host said.
        #[source]
        source: io::Error,
    },
    /// Accepting gdb, or preparing its connection.
    #[error("--gdb: cannot accept gdb's connection")]
    Accept(#[source] io::Error),
    /// The protocol session ended on an error.
    #[error("gdb session failed: {0}")]
    Session(String),
}

/// The connection to gdb.
#[derive(Debug)]
pub struct Connection {
    socket: OwnedFd,
}

impl Connection {
    /// Listens on `addr`, says where on stderr, and waits for gdb; makes
    /// its data interrupt `machine`'s vCPU.
    pub fn accept(addr: SocketAddr, machine: &mut Machine) -> Result<Self, GdbError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| GdbError::Listen { addr, source })?;
        let local = listener.local_addr().map_err(GdbError::Accept)?;
        eprintln!(
            "kiln-hvt: waiting for gdb on {local}; in gdb: target remote {local} (the guest is stopped at its entry point)"
        );
        let (stream, _) = listener.accept().map_err(GdbError::Accept)?;
        stream.set_nodelay(true).map_err(GdbError::Accept)?;
        let socket = OwnedFd::from(stream);
        crate::sys::debug::arm_interrupt(socket.as_fd(), machine.immediate_exit())
            .map_err(GdbError::Accept)?;
        Ok(Self { socket })
    }

    /// The socket (for the seccomp filter).
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl GdbConnection for Connection {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> Result<(), io::Error> {
        crate::sys::debug::send_all(self.socket.as_fd(), &[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), io::Error> {
        crate::sys::debug::send_all(self.socket.as_fd(), buf)
    }

    fn flush(&mut self) -> Result<(), io::Error> {
        Ok(())
    }
}

impl ConnectionExt for Connection {
    fn read(&mut self) -> Result<u8, io::Error> {
        crate::sys::debug::read_byte(self.socket.as_fd())
    }

    fn peek(&mut self) -> Result<Option<u8>, io::Error> {
        crate::sys::debug::peek_byte(self.socket.as_fd())
    }
}

/// `int3`.
const INT3: u8 = 0xcc;
/// DR6: which of DR0-DR3 fired, and a single step (BS).
const DR6_BREAKPOINTS: u64 = 0xf;
const DR6_STEP: u64 = 1 << 14;

/// RFLAGS.TF.
const TRAP_FLAG: u64 = 1 << 8;

/// A flat 64-bit code or data segment for `selector`, at the privilege
/// level its RPL names (kiln's GDT has only such segments).
fn flat_segment(selector: u64, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: selector as u16,
        type_: if code { 11 } else { 3 },
        present: 1,
        dpl: (selector & 3) as u8,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// What the stub needs of the debugged guest: its vCPU's registers and
/// debug controls, its memory, running it until something stops it, and
/// serving its hypercalls. [`Running`] is the real one;
/// [`crate::gdb_harness`] has one without KVM, whose state is arbitrary
/// bytes, for the fuzz target.
pub trait Guest {
    /// The general-purpose registers.
    fn regs(&self) -> Result<kvm_regs, VmError>;
    /// Sets them.
    fn set_regs(&self, regs: &kvm_regs) -> Result<(), VmError>;
    /// The special registers.
    fn sregs(&self) -> Result<kvm_sregs, VmError>;
    /// Sets them.
    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<(), VmError>;
    /// The x87/SSE state.
    fn fpu(&self) -> Result<kvm_fpu, VmError>;
    /// Sets the debug controls (breakpoints, single step).
    fn set_guest_debug(&self, debug: &kvm_guest_debug) -> Result<(), VmError>;
    /// Guest memory.
    fn mem(&self) -> &GuestMemory;
    /// Guest memory, to write.
    fn mem_mut(&mut self) -> &mut GuestMemory;
    /// Forgets an interrupt that has been seen.
    fn clear_immediate_exit(&mut self);
    /// Runs the guest until a hypercall, a debug exit or an interrupt.
    fn run_debug(&mut self) -> Result<Stop, VmError>;
    /// Serves the hypercall `io`.
    fn serve(&mut self, io: IoExit) -> Result<Served, TenderError>;
    /// The error for a machine that stopped (and its core file).
    fn fail(&mut self, e: VmError) -> TenderError;
    /// Runs the guest, undebugged, until it halts (after a detach).
    fn run_on(&mut self) -> Result<Exit, TenderError>;
}

impl Guest for Running {
    fn regs(&self) -> Result<kvm_regs, VmError> {
        self.machine.regs()
    }

    fn set_regs(&self, regs: &kvm_regs) -> Result<(), VmError> {
        self.machine.set_regs(regs)
    }

    fn sregs(&self) -> Result<kvm_sregs, VmError> {
        self.machine.sregs()
    }

    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<(), VmError> {
        self.machine.set_sregs(sregs)
    }

    fn fpu(&self) -> Result<kvm_fpu, VmError> {
        self.machine.fpu()
    }

    fn set_guest_debug(&self, debug: &kvm_guest_debug) -> Result<(), VmError> {
        self.machine.set_guest_debug(debug)
    }

    fn mem(&self) -> &GuestMemory {
        &self.machine.mem
    }

    fn mem_mut(&mut self) -> &mut GuestMemory {
        &mut self.machine.mem
    }

    fn clear_immediate_exit(&mut self) {
        self.machine.clear_immediate_exit();
    }

    fn run_debug(&mut self) -> Result<Stop, VmError> {
        self.machine.run_debug()
    }

    fn serve(&mut self, io: IoExit) -> Result<Served, TenderError> {
        Running::serve(self, io)
    }

    fn fail(&mut self, e: VmError) -> TenderError {
        Running::fail(self, e)
    }

    fn run_on(&mut self) -> Result<Exit, TenderError> {
        self.run()
    }
}

/// The debugged guest.
pub struct Debugged<'a, G: Guest> {
    guest: &'a mut G,
    /// Software breakpoints: guest-virtual address to the guest-physical
    /// one written and the byte it held.
    breakpoints: BTreeMap<u64, (u64, u8)>,
    /// Hardware breakpoints in DR0-DR3.
    hw: [Option<u64>; 4],
    /// The next resume is a single step.
    stepping: bool,
    /// How the guest ended, once it did.
    ended: Option<Result<Exit, TenderError>>,
    /// The contiguous memory read in progress: where it goes on, and how
    /// many bytes it has read ([`READ_RUN_SLACK`]).
    read_run: (u64, u64),
}

/// A contiguous read (gdbstub answers one `m` packet of any length in
/// pieces at consecutive addresses) may cover guest memory's size and this
/// much more; then it fails. Without a bound, a packet `m0,ffffffffffffffff`
/// against page tables whose entries point back at themselves (which map
/// all 256 TiB of the address space onto a few pages) would keep the
/// tender reading for days (found with the fuzz target's seeds; pinned by
/// `gdb_harness`'s `a_huge_read_through_self_mapping_tables_ends`).
const READ_RUN_SLACK: u64 = 1 << 20;

/// A target error from a KVM failure: fatal for the session.
fn fatal<T>(e: VmError) -> TargetError<T>
where
    T: From<VmError>,
{
    TargetError::Fatal(T::from(e))
}

impl<G: Guest> Debugged<'_, G> {
    fn cr3(&self) -> Result<u64, VmError> {
        Ok(self.guest.sregs()?.cr3)
    }

    fn guest_debug(&self) -> Result<(), VmError> {
        let mut dbg = kvm_guest_debug {
            control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP,
            ..Default::default()
        };
        if self.stepping {
            dbg.control |= KVM_GUESTDBG_SINGLESTEP;
        }
        let mut dr7 = 0u64;
        for (i, bp) in self.hw.iter().enumerate() {
            if let Some(addr) = bp {
                dbg.arch.debugreg[i] = *addr;
                // Local enable; condition 00 (execution), length 00.
                dr7 |= 1 << (2 * i);
            }
        }
        if dr7 != 0 {
            dbg.control |= KVM_GUESTDBG_USE_HW_BP;
            dbg.arch.debugreg[7] = dr7;
        }
        self.guest.set_guest_debug(&dbg)
    }

    /// Undoes the session's changes to the guest: breakpoints out, debug
    /// exits off.
    fn detach(&mut self) -> Result<(), VmError> {
        for (_, (gpa, byte)) in std::mem::take(&mut self.breakpoints) {
            let _ = self.guest.mem_mut().poke(gpa, &[byte]);
        }
        self.hw = [None; 4];
        crate::sys::debug::disarm_interrupt();
        self.guest.clear_immediate_exit();
        self.guest.set_guest_debug(&kvm_guest_debug::default())
    }

    fn end(&mut self, result: Result<Exit, TenderError>) -> SingleThreadStopReason<u64> {
        let reason = match &result {
            Ok(Exit::Status(status)) => SingleThreadStopReason::Exited(crate::exit_code(*status)),
            _ => SingleThreadStopReason::Terminated(Signal::SIGSEGV),
        };
        self.ended = Some(result);
        reason
    }

    /// Runs the guest until something stops it for gdb.
    fn run<C: ConnectionExt<Error = io::Error>>(
        &mut self,
        conn: &mut C,
    ) -> Result<run_blocking::Event<SingleThreadStopReason<u64>>, io::Error> {
        use run_blocking::Event;
        // Cleared before looking at the connection: data that comes after
        // the look sets it again.
        self.guest.clear_immediate_exit();
        loop {
            if self.ended.is_some() {
                // gdb resumed a guest that has ended: tell it again.
                return Ok(Event::TargetStopped(SingleThreadStopReason::Exited(255)));
            }
            if conn.peek()?.is_some() {
                return Ok(Event::IncomingData(conn.read()?));
            }
            let stop = match self.guest.run_debug() {
                Ok(stop) => stop,
                Err(e) => {
                    let err = self.guest.fail(e);
                    return Ok(Event::TargetStopped(self.end(Err(err))));
                }
            };
            match stop {
                Stop::Io(io) => match self.reflect_trap() {
                    Ok(Some(reason)) => return Ok(Event::TargetStopped(reason)),
                    Ok(None) => match self.guest.serve(io) {
                        Ok(Served::Continue) => {}
                        Ok(Served::Exit(status)) => {
                            return Ok(Event::TargetStopped(self.end(Ok(Exit::Status(status)))));
                        }
                        Err(e) => return Ok(Event::TargetStopped(self.end(Err(e)))),
                    },
                    Err(e) => {
                        let err = self.guest.fail(e);
                        return Ok(Event::TargetStopped(self.end(Err(err))));
                    }
                },
                Stop::Interrupted => self.guest.clear_immediate_exit(),
                Stop::Debug { exception, dr6, .. } => {
                    let reason = if self.stepping && self.reflect_step().unwrap_or(false) {
                        SingleThreadStopReason::DoneStep
                    } else if exception == 3 {
                        self.at_breakpoint();
                        SingleThreadStopReason::SwBreak(())
                    } else if dr6 & DR6_BREAKPOINTS != 0 {
                        SingleThreadStopReason::HwBreak(())
                    } else if dr6 & DR6_STEP != 0 || self.stepping {
                        SingleThreadStopReason::DoneStep
                    } else {
                        SingleThreadStopReason::Signal(Signal::SIGTRAP)
                    };
                    return Ok(Event::TargetStopped(reason));
                }
            }
        }
    }

    /// Takes back a breakpoint or a single step that the guest's own
    /// exception handler received.
    ///
    /// Under nested KVM on PVM, `int3` and the single-step trap at CPL 3
    /// are delivered to the guest instead of ending `KVM_RUN`: kiln-solo5's
    /// handler saves the interrupted registers at the top of its IST1 stack
    /// (the frame [`dumpcore::fault_frame`] reads) and makes a hypercall
    /// to report them. When that hypercall comes from a #BP at one of our
    /// breakpoints, or a #DB while stepping, the registers are put back as
    /// they were at the trap (as `iretq` would) and gdb is told of the
    /// breakpoint or step; the handler's report is never served. Any other
    /// exception is shown the same way, as a signal at the faulting
    /// instruction (continuing runs it again, as with a native program).
    fn reflect_trap(&mut self) -> Result<Option<SingleThreadStopReason<u64>>, VmError> {
        let m = &*self.guest;
        let (r, mut s) = (m.regs()?, m.sregs()?);
        let Some((frame, vector)) = dumpcore::fault_frame(m.mem(), &r, &s) else {
            return Ok(None);
        };
        let (rip, reason) = match vector {
            3 if self.breakpoints.contains_key(&frame.rip.wrapping_sub(1)) => {
                (frame.rip - 1, SingleThreadStopReason::SwBreak(()))
            }
            1 if self.stepping => (frame.rip, SingleThreadStopReason::DoneStep),
            // Any other exception stops the guest at the faulting
            // instruction with the signal Linux would send a process, as
            // gdb shows a native program's fault.
            v => (
                frame.rip,
                SingleThreadStopReason::Signal(match dumpcore::signal_of(v) {
                    4 => Signal::SIGILL,
                    5 => Signal::SIGTRAP,
                    7 => Signal::SIGBUS,
                    8 => Signal::SIGFPE,
                    _ => Signal::SIGSEGV,
                }),
            ),
        };
        let g = frame.gpr;
        let regs = kvm_regs {
            rax: g[0],
            rbx: g[1],
            rcx: g[2],
            rdx: g[3],
            rsi: g[4],
            rdi: g[5],
            rbp: g[6],
            rsp: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip,
            // Without the trap flag the step set.
            rflags: frame.rflags & !TRAP_FLAG,
        };
        let [cs, ss, ..] = frame.segments;
        s.cs = flat_segment(cs, true);
        s.ss = flat_segment(ss, false);
        m.set_sregs(&s)?;
        m.set_regs(&regs)?;
        Ok(Some(reason))
    }

    /// Takes back a single step of CPL 3 code whose trap the guest
    /// received (as [`Debugged::reflect_trap`] does for breakpoints): the
    /// step stops on the first instruction of its #DB handler, at CPL 0,
    /// which has pushed only a constant; the registers are the CPU's
    /// interrupt frame at the IST1 top and the live general-purpose ones.
    fn reflect_step(&mut self) -> Result<bool, VmError> {
        let m = &*self.guest;
        let (mut r, mut s) = (m.regs()?, m.sregs()?);
        let Some(top) = dumpcore::trap_stack_top(m.mem(), &r, &s) else {
            return Ok(false);
        };
        // The handler's stub pushed at most two quadwords.
        if r.rsp < top - 40 - 16 {
            return Ok(false);
        }
        // rip, cs, rflags, rsp, ss.
        let mut frame = [0u8; 40];
        if dumpcore::read_virtual(m.mem(), s.cr3, top - 40, &mut frame).is_none() {
            return Ok(false);
        }
        let q = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&frame[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        if q(1) & 3 != 3 {
            return Ok(false);
        }
        r.rip = q(0);
        r.rflags = q(2) & !TRAP_FLAG;
        r.rsp = q(3);
        s.cs = flat_segment(q(1), true);
        s.ss = flat_segment(q(4), false);
        m.set_sregs(&s)?;
        m.set_regs(&r)?;
        Ok(true)
    }

    /// After an `int3` exit: `%rip` at the breakpoint's address, whether
    /// KVM reports it there or just past the `int3`.
    fn at_breakpoint(&mut self) {
        let Ok(mut regs) = self.guest.regs() else {
            return;
        };
        if !self.breakpoints.contains_key(&regs.rip)
            && self.breakpoints.contains_key(&regs.rip.wrapping_sub(1))
        {
            regs.rip -= 1;
            let _ = self.guest.set_regs(&regs);
        }
    }
}

impl<G: Guest> Target for Debugged<'_, G> {
    type Arch = X86_64_SSE;
    type Error = TenderError;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    // Breakpoints are set by gdb's Z packets only.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl<G: Guest> SingleThreadBase for Debugged<'_, G> {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs) -> TargetResult<(), Self> {
        let m = &*self.guest;
        let r = m.regs().map_err(fatal)?;
        let s = m.sregs().map_err(fatal)?;
        regs.regs = [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ];
        regs.rip = r.rip;
        regs.eflags = r.rflags as u32;
        regs.segments.cs = u32::from(s.cs.selector);
        regs.segments.ss = u32::from(s.ss.selector);
        regs.segments.ds = u32::from(s.ds.selector);
        regs.segments.es = u32::from(s.es.selector);
        regs.segments.fs = u32::from(s.fs.selector);
        regs.segments.gs = u32::from(s.gs.selector);
        if let Ok(fpu) = m.fpu() {
            for (st, fpr) in regs.st.iter_mut().zip(fpu.fpr.iter()) {
                st.copy_from_slice(&fpr[..10]);
            }
            regs.fpu.fctrl = u32::from(fpu.fcw);
            regs.fpu.fstat = u32::from(fpu.fsw);
            regs.fpu.ftag = u32::from(fpu.ftwx);
            regs.fpu.fop = u32::from(fpu.last_opcode);
            regs.fpu.fioff = fpu.last_ip as u32;
            regs.fpu.fooff = fpu.last_dp as u32;
            for (x, b) in regs.xmm.iter_mut().zip(fpu.xmm.iter()) {
                *x = u128::from_le_bytes(*b);
            }
            regs.mxcsr = fpu.mxcsr;
        }
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs) -> TargetResult<(), Self> {
        let m = &*self.guest;
        let mut r = m.regs().map_err(fatal)?;
        let g = regs.regs;
        (
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ) = (
            g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13],
            g[14], g[15],
        );
        r.rip = regs.rip;
        // The reserved bit 1 stays set, whatever gdb sends.
        r.rflags = u64::from(regs.eflags) | 0x2;
        m.set_regs(&r).map_err(fatal)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let cr3 = self.cr3().map_err(fatal)?;
        let mem = self.guest.mem();
        let (next, run) = self.read_run;
        let run = if start == next { run } else { 0 };
        let run = run.saturating_add(data.len() as u64);
        self.read_run = (start.wrapping_add(data.len() as u64), run);
        if run > mem.size().saturating_add(READ_RUN_SLACK) {
            return Err(TargetError::NonFatal);
        }
        let mut done = 0usize;
        let _ = paging::for_each_run(mem, cr3, start, data.len() as u64, |gpa, n| {
            let bytes = mem
                .slice(gpa, n)
                .map_err(|_| paging::WalkError::OutsideMemory { va: start, gpa })?;
            data[done..done + bytes.len()].copy_from_slice(bytes);
            done += bytes.len();
            Ok(())
        });
        // Show the original bytes under software breakpoints, as gdb
        // expects of a stub that inserts them itself.
        for (&va, &(_, byte)) in self
            .breakpoints
            .range(start..start.saturating_add(done as u64))
        {
            data[(va - start) as usize] = byte;
        }
        if done == 0 && !data.is_empty() {
            return Err(TargetError::NonFatal);
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        let cr3 = self.cr3().map_err(fatal)?;
        let mut runs = Vec::new();
        paging::for_each_run(self.guest.mem(), cr3, start, data.len() as u64, |gpa, n| {
            runs.push((gpa, n));
            Ok(())
        })
        .map_err(|_| TargetError::NonFatal)?;
        let mut done = 0usize;
        for (gpa, n) in runs {
            let n = n as usize;
            self.guest
                .mem_mut()
                .poke(gpa, &data[done..done + n])
                .map_err(|_| TargetError::NonFatal)?;
            done += n;
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl<G: Guest> SingleThreadResume for Debugged<'_, G> {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.stepping = false;
        Ok(self.guest_debug()?)
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl<G: Guest> SingleThreadSingleStep for Debugged<'_, G> {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.stepping = true;
        Ok(self.guest_debug()?)
    }
}

impl<G: Guest> Breakpoints for Debugged<'_, G> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl<G: Guest> SwBreakpoint for Debugged<'_, G> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.breakpoints.contains_key(&addr) {
            return Ok(true);
        }
        let cr3 = self.cr3().map_err(fatal)?;
        let mem = self.guest.mem_mut();
        let Ok(t) = paging::translate(mem, cr3, addr) else {
            return Ok(false);
        };
        let Ok([byte]) = mem.read_array::<1>(t.gpa) else {
            return Ok(false);
        };
        if mem.poke(t.gpa, &[INT3]).is_err() {
            return Ok(false);
        }
        self.breakpoints.insert(addr, (t.gpa, byte));
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let Some((gpa, byte)) = self.breakpoints.remove(&addr) else {
            return Ok(false);
        };
        Ok(self.guest.mem_mut().poke(gpa, &[byte]).is_ok())
    }
}

impl<G: Guest> HwBreakpoint for Debugged<'_, G> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let Some(slot) = self.hw.iter_mut().find(|s| s.is_none()) else {
            return Ok(false);
        };
        *slot = Some(addr);
        Ok(true)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let Some(slot) = self.hw.iter_mut().find(|s| **s == Some(addr)) else {
            return Ok(false);
        };
        *slot = None;
        Ok(true)
    }
}

struct EventLoop<'a, G, C>(std::marker::PhantomData<(&'a (), G, C)>);

impl<'a, G: Guest + 'a, C: ConnectionExt<Error = io::Error>> BlockingEventLoop
    for EventLoop<'a, G, C>
{
    type Target = Debugged<'a, G>;
    type Connection = C;
    type StopReason = SingleThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut Debugged<'a, G>,
        conn: &mut C,
    ) -> Result<
        run_blocking::Event<SingleThreadStopReason<u64>>,
        WaitForStopReasonError<TenderError, io::Error>,
    > {
        target.run(conn).map_err(WaitForStopReasonError::Connection)
    }

    fn on_interrupt(
        _target: &mut Debugged<'a, G>,
    ) -> Result<Option<SingleThreadStopReason<u64>>, TenderError> {
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}

/// Serves gdb on `conn` until it detaches (the guest then runs on alone),
/// kills the guest or the guest ends.
pub fn serve(running: &mut Running, conn: Connection) -> Result<Exit, TenderError> {
    serve_with(running, conn)
}

/// [`serve`] for any [`Guest`] and connection (the fuzz target's).
pub fn serve_with<G: Guest, C: ConnectionExt<Error = io::Error>>(
    guest: &mut G,
    conn: C,
) -> Result<Exit, TenderError> {
    let mut target = Debugged {
        guest,
        breakpoints: BTreeMap::new(),
        hw: [None; 4],
        stepping: false,
        ended: None,
        read_run: (0, 0),
    };
    target.guest_debug()?;
    let reason = GdbStub::new(conn)
        .run_blocking::<EventLoop<'_, G, C>>(&mut target)
        .map_err(|e| GdbError::Session(e.to_string()))?;
    if let Some(ended) = target.ended.take() {
        return ended;
    }
    match reason {
        DisconnectReason::Kill => {
            eprintln!("kiln-hvt: guest killed by gdb");
            Ok(Exit::Status(kiln_abi::status::EXIT_ABORT))
        }
        _ => {
            // Detached (or gdb went away): the guest runs on undebugged.
            target.detach()?;
            target.guest.run_on()
        }
    }
}
