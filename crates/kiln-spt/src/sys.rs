//! Every `unsafe` operation of the tender: the fixed guest mapping and its
//! protections, the epoll set and timer (tap and inherited descriptors are
//! [`kiln_tender::sys`]'s),
//! `fork`, the ptrace calls the supervisor uses to explain a guest's death,
//! and the jump into the guest.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use kiln_tender::sys::check;

use crate::elf::Protection;

/// The guest's memory: an anonymous private mapping at the fixed address
/// `base`, never replacing an existing mapping. It is never unmapped: the
/// process that maps it becomes the guest.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of zeroed read-write memory at `base`.
    pub fn fixed(base: u64, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: MAP_FIXED_NOREPLACE fails instead of replacing anything
        // already mapped there, so no memory of the process is touched; the
        // result is checked below.
        let ptr = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_FIXED_NOREPLACE
                    | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if ptr as u64 != base {
            // Kernels before 4.17 treat the flag as a hint.
            // SAFETY: unmaps exactly the mapping just made.
            unsafe { libc::munmap(ptr, len) };
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }

    /// The whole mapping, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live mapping of `len` bytes, read-write until
        // `protect` is called, which takes `self` by value.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Applies `prot` to `[offset, offset + len)` of the mapping; both must
    /// be page-aligned and inside it (checked by the caller). Consumes
    /// nothing, but no slice may be held across it.
    pub fn protect(
        &mut self,
        offset: usize,
        len: usize,
        prot: Option<Protection>,
    ) -> io::Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let prot = match prot {
            None => libc::PROT_NONE,
            Some(Protection::Read) => libc::PROT_READ,
            Some(Protection::ReadWrite) => libc::PROT_READ | libc::PROT_WRITE,
            Some(Protection::ReadExec) => libc::PROT_READ | libc::PROT_EXEC,
        };
        // SAFETY: the range lies inside this mapping (checked above), and
        // `&mut self` means no slice of it is borrowed.
        check(unsafe { libc::mprotect(self.ptr.as_ptr().add(offset).cast(), len, prot) })?;
        Ok(())
    }
}

/// Whether the process runs with the `READ_IMPLIES_EXEC` personality,
/// under which every readable mapping would also be executable.
pub fn read_implies_exec() -> bool {
    // SAFETY: 0xffffffff only queries the personality.
    let persona = unsafe { libc::personality(0xffff_ffff) };
    persona >= 0 && persona & libc::READ_IMPLIES_EXEC != 0
}

/// A new epoll set.
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: creates a new descriptor; the result is checked.
    let fd = check(unsafe { libc::epoll_create1(0) })?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watches `fd` for input in `epoll`; its events carry `data`.
pub fn epoll_add(epoll: RawFd, fd: RawFd, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: data,
    };
    // SAFETY: `ev` lives across the call; bad descriptors are errors.
    check(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
    Ok(())
}

/// A non-blocking timerfd on the monotonic clock.
pub fn timerfd_create() -> io::Result<OwnedFd> {
    // SAFETY: creates a new descriptor; the result is checked.
    let fd = check(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK) })?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Which side of a `fork` this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// The child.
    Child,
    /// The parent, with the child's pid.
    Parent(libc::pid_t),
}

/// Forks the process. The caller must be single-threaded (the tender is).
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the tender has one thread, so the child's copy of every lock
    // and allocator state is consistent.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent(pid)
    })
}

/// In the child: asks to be traced by the parent and stops until it has
/// set its options. `false` if tracing is not permitted here.
pub fn trace_me() -> bool {
    // SAFETY: PTRACE_TRACEME takes no pointers.
    let ok = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } == 0;
    if ok {
        // SAFETY: stops this process until the tracer resumes it.
        unsafe { libc::raise(libc::SIGSTOP) };
    }
    ok
}

/// In the child: restores the default action of the signals the guest may
/// raise by faulting (std installs a SIGSEGV handler whose system calls the
/// filter would forbid), so that a fault ends the guest with that signal.
pub fn default_fault_signals() {
    for sig in [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGPIPE,
    ] {
        // SAFETY: SIG_DFL involves no handler code.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Closes every descriptor from 3 up except those in `keep`, with
/// `close_range(2)` over the gaps (one call each), falling back to single
/// closes below 1024 where the kernel lacks it.
pub fn close_other_fds(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    let mut first = 3u32;
    for last in keep.iter().copied().chain([u32::MAX]) {
        if last > first {
            let end = last.saturating_sub(if last == u32::MAX { 0 } else { 1 });
            // SAFETY: closes descriptors the child holds no owner for any
            // longer: it never returns to code that uses them.
            let ret = unsafe { libc::syscall(libc::SYS_close_range, first, end, 0) };
            if ret != 0 {
                for fd in first..end.min(1023) + 1 {
                    // SAFETY: as above.
                    unsafe { libc::close(fd as RawFd) };
                }
            }
        }
        first = first.max(last.saturating_add(1));
    }
}

/// In the child: ends the process at once with `code`.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without running anything else.
    unsafe { libc::_exit(code) }
}

/// Enters the guest: the FS base cleared (with `arch_prctl(ARCH_SET_FS,
/// 0)`, which the filter allows), RSP = `stack`, RDI = `arg`, every other
/// general register zeroed (nothing of the tender's address space leaks
/// through them), then jumps to `entry`.
///
/// # Safety
///
/// `entry` must be mapped executable and `stack` writable; the process is
/// the guest's from here on.
pub unsafe fn launch(entry: u64, stack: u64, arg: u64) -> ! {
    // SAFETY: the caller guarantees the guest's code and stack are mapped;
    // control never returns.
    unsafe {
        core::arch::asm!(
            "mov r12, rdi",
            "mov r13, rsi",
            "mov r14, rdx",
            "mov eax, 158",
            "mov edi, 0x1002",
            "xor esi, esi",
            "syscall",
            "mov rdi, r12",
            "mov rsp, r14",
            "mov rax, r13",
            "xor ebx, ebx",
            "xor ecx, ecx",
            "xor edx, edx",
            "xor esi, esi",
            "xor ebp, ebp",
            "xor r8d, r8d",
            "xor r9d, r9d",
            "xor r10d, r10d",
            "xor r11d, r11d",
            "xor r12d, r12d",
            "xor r13d, r13d",
            "xor r14d, r14d",
            "xor r15d, r15d",
            "jmp rax",
            in("rdi") arg,
            in("rsi") entry,
            in("rdx") stack,
            options(noreturn)
        )
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with a code.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
    /// Stopped with a signal (a signal-delivery stop).
    Stopped(i32),
    /// Stopped at the ptrace exit event.
    ExitEvent,
    /// Anything else (another ptrace stop).
    Other,
}

/// Waits for the child `pid`, retrying on EINTR.
pub fn wait(pid: libc::pid_t) -> io::Result<WaitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is valid for writes.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        return Ok(if libc::WIFEXITED(status) {
            WaitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            WaitStatus::Signaled(libc::WTERMSIG(status))
        } else if libc::WIFSTOPPED(status) {
            if status >> 8 == (libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8)) {
                WaitStatus::ExitEvent
            } else if status >> 16 == 0 {
                WaitStatus::Stopped(libc::WSTOPSIG(status))
            } else {
                WaitStatus::Other
            }
        } else {
            WaitStatus::Other
        });
    }
}

/// Sets the tracer options: kill the guest if the tender dies, stop at
/// its exit.
pub fn trace_options(pid: libc::pid_t) -> io::Result<()> {
    let options = libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACEEXIT;
    // SAFETY: PTRACE_SETOPTIONS takes its options by value.
    check(unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, options) } as libc::c_int)?;
    Ok(())
}

/// Resumes the stopped tracee, delivering `signal` (0 for none).
pub fn trace_cont(pid: libc::pid_t, signal: i32) -> io::Result<()> {
    // SAFETY: PTRACE_CONT takes the signal by value.
    check(unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, signal) } as libc::c_int)?;
    Ok(())
}

/// The stopped tracee's registers.
pub fn trace_regs(pid: libc::pid_t) -> io::Result<libc::user_regs_struct> {
    // SAFETY: a zeroed register set is a valid value (plain integers).
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: `regs` is valid for writes of a `user_regs_struct`.
    check(unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs) } as libc::c_int)?;
    Ok(regs)
}

/// The signal information of a tracee in a signal-delivery stop:
/// (si_code, si_addr for faults / si_call_addr for SIGSYS, si_syscall).
pub fn trace_siginfo(pid: libc::pid_t) -> io::Result<(i32, u64, i32)> {
    // SAFETY: a zeroed siginfo is a valid value (plain integers).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid for writes of a `siginfo_t`.
    check(unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, pid, 0, &mut info) } as libc::c_int)?;
    // SAFETY: for SIGSEGV/SIGBUS/SIGILL/SIGFPE and SIGSYS the union's first
    // member is the address (si_addr, si_call_addr).
    let addr = unsafe { info.si_addr() } as u64;
    // SIGSYS: `_sigsys { void *call_addr; int syscall; unsigned arch; }`
    // at offset 16, so the system call number is at 24 (x86_64).
    // SAFETY: siginfo_t is 128 plain bytes; reading an i32 at 24 is in
    // bounds and aligned.
    let syscall = unsafe { (&raw const info).cast::<u8>().add(24).cast::<i32>().read() };
    Ok((info.si_code, addr, syscall))
}
