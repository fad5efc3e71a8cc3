//! The parent's side of a run: the tender forks, the child sets the guest
//! up and becomes it, and the parent waits for it and explains its end.
//!
//! The guest is a plain process under a kill-by-default seccomp filter, so
//! it cannot report its own death. The child asks to be traced
//! (`PTRACE_TRACEME`) before it sets anything up; the parent then sees:
//! the fault signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE) at their delivery
//! stop, with the faulting address and the instruction pointer, before
//! letting them kill the guest; and the exit stop (`PTRACE_O_TRACEEXIT`),
//! where the registers of a guest the filter killed still hold the
//! forbidden system call's number (the kernel rolls `rax` back to it).
//! The filter's kill is not a delivery stop on current kernels (the signal
//! is immutable), which is why the exit stop is used. `PTRACE_O_EXITKILL`
//! kills the guest if the tender dies. Where tracing is not permitted the
//! guest runs untraced and the report has the signal only.

use std::io;

use crate::sys::{self, WaitStatus};

/// How the guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    /// It exited with a code.
    Exited(i32),
    /// The seccomp filter killed it (SIGSYS).
    Seccomp {
        /// The forbidden system call, if the tracer saw it.
        nr: Option<i64>,
        /// Where it was made.
        rip: Option<u64>,
    },
    /// A fault signal killed it.
    Fault {
        /// The signal.
        signal: i32,
        /// The faulting address, if known.
        addr: Option<u64>,
        /// The instruction pointer, if known.
        rip: Option<u64>,
    },
    /// Another signal killed it.
    Signal(i32),
}

fn is_fault(signal: i32) -> bool {
    matches!(
        signal,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
    )
}

/// `SYS_SECCOMP`: the `si_code` of a SIGSYS sent by a seccomp filter.
const SYS_SECCOMP: i32 = 1;

/// Waits for the guest `pid` to end, tracing it if it asked to be.
pub fn supervise(pid: libc::pid_t) -> io::Result<Death> {
    let mut configured = false;
    let mut fault: Option<(i32, Option<u64>, Option<u64>)> = None;
    let mut seccomp_nr: Option<i64> = None;
    let mut exit_regs: Option<libc::user_regs_struct> = None;
    loop {
        match sys::wait(pid)? {
            WaitStatus::Exited(code) => return Ok(Death::Exited(code)),
            WaitStatus::Signaled(signal) => {
                let rip = exit_regs.map(|r| r.rip);
                return Ok(if signal == libc::SIGSYS {
                    Death::Seccomp {
                        nr: seccomp_nr.or(exit_regs.map(|r| r.orig_rax as i64)),
                        rip,
                    }
                } else if is_fault(signal) {
                    let (addr, frip) = match fault {
                        Some((s, addr, frip)) if s == signal => (addr, frip),
                        _ => (None, None),
                    };
                    Death::Fault {
                        signal,
                        addr,
                        rip: frip.or(rip),
                    }
                } else {
                    Death::Signal(signal)
                });
            }
            WaitStatus::Stopped(libc::SIGSTOP) if !configured => {
                configured = true;
                sys::trace_options(pid)?;
                sys::trace_cont(pid, 0)?;
            }
            WaitStatus::Stopped(signal) => {
                if is_fault(signal) {
                    let info = sys::trace_siginfo(pid).ok();
                    let rip = sys::trace_regs(pid).ok().map(|r| r.rip);
                    fault = Some((signal, info.map(|(_, addr, _)| addr), rip));
                } else if signal == libc::SIGSYS
                    && let Ok((code, _, nr)) = sys::trace_siginfo(pid)
                    && code == SYS_SECCOMP
                {
                    seccomp_nr = Some(i64::from(nr));
                }
                sys::trace_cont(pid, signal)?;
            }
            WaitStatus::ExitEvent => {
                exit_regs = sys::trace_regs(pid).ok();
                sys::trace_cont(pid, 0)?;
            }
            WaitStatus::Other => sys::trace_cont(pid, 0)?,
        }
    }
}

/// The name of a signal, for reports.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGSYS => "SIGSYS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTRAP => "SIGTRAP",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// The x86_64 name of system call `nr`, for the common ones.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    macro_rules! names {
        ($($sys:ident => $name:literal,)*) => {
            match nr {
                $(n if n == libc::$sys => Some($name),)*
                _ => None,
            }
        };
    }
    names!(
        SYS_accept => "accept", SYS_accept4 => "accept4", SYS_access => "access",
        SYS_arch_prctl => "arch_prctl", SYS_bind => "bind", SYS_brk => "brk",
        SYS_chdir => "chdir", SYS_chmod => "chmod", SYS_chown => "chown",
        SYS_clock_gettime => "clock_gettime", SYS_clock_nanosleep => "clock_nanosleep",
        SYS_clone => "clone", SYS_clone3 => "clone3", SYS_close => "close",
        SYS_connect => "connect", SYS_dup => "dup", SYS_dup2 => "dup2", SYS_dup3 => "dup3",
        SYS_epoll_create1 => "epoll_create1", SYS_epoll_ctl => "epoll_ctl",
        SYS_epoll_pwait => "epoll_pwait", SYS_epoll_wait => "epoll_wait",
        SYS_execve => "execve", SYS_execveat => "execveat", SYS_exit => "exit",
        SYS_exit_group => "exit_group", SYS_fchmod => "fchmod", SYS_fcntl => "fcntl",
        SYS_fdatasync => "fdatasync", SYS_fork => "fork", SYS_fstat => "fstat",
        SYS_fsync => "fsync", SYS_ftruncate => "ftruncate", SYS_futex => "futex",
        SYS_getcwd => "getcwd", SYS_getdents64 => "getdents64", SYS_getpid => "getpid",
        SYS_getppid => "getppid", SYS_getrandom => "getrandom", SYS_gettid => "gettid",
        SYS_gettimeofday => "gettimeofday", SYS_getuid => "getuid", SYS_ioctl => "ioctl",
        SYS_kill => "kill", SYS_listen => "listen", SYS_lseek => "lseek",
        SYS_madvise => "madvise", SYS_memfd_create => "memfd_create", SYS_mkdir => "mkdir",
        SYS_mmap => "mmap", SYS_mount => "mount", SYS_mprotect => "mprotect",
        SYS_mremap => "mremap", SYS_munmap => "munmap", SYS_nanosleep => "nanosleep",
        SYS_open => "open", SYS_openat => "openat", SYS_pipe => "pipe", SYS_pipe2 => "pipe2",
        SYS_poll => "poll", SYS_ppoll => "ppoll", SYS_prctl => "prctl",
        SYS_pread64 => "pread64", SYS_preadv => "preadv", SYS_ptrace => "ptrace",
        SYS_pwrite64 => "pwrite64", SYS_pwritev => "pwritev", SYS_read => "read",
        SYS_readlink => "readlink", SYS_readv => "readv", SYS_reboot => "reboot",
        SYS_recvfrom => "recvfrom", SYS_recvmsg => "recvmsg", SYS_rename => "rename",
        SYS_rmdir => "rmdir", SYS_rt_sigaction => "rt_sigaction",
        SYS_rt_sigprocmask => "rt_sigprocmask", SYS_rt_sigreturn => "rt_sigreturn",
        SYS_sched_yield => "sched_yield", SYS_seccomp => "seccomp", SYS_select => "select",
        SYS_sendmsg => "sendmsg", SYS_sendto => "sendto", SYS_setuid => "setuid",
        SYS_socket => "socket", SYS_stat => "stat", SYS_symlink => "symlink",
        SYS_sync => "sync", SYS_timerfd_create => "timerfd_create",
        SYS_timerfd_settime => "timerfd_settime", SYS_tkill => "tkill",
        SYS_truncate => "truncate", SYS_uname => "uname", SYS_unlink => "unlink",
        SYS_unlinkat => "unlinkat", SYS_vfork => "vfork", SYS_wait4 => "wait4",
        SYS_write => "write", SYS_writev => "writev",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_names_match_their_numbers() {
        assert_eq!(syscall_name(0), Some("read"));
        assert_eq!(syscall_name(1), Some("write"));
        assert_eq!(syscall_name(39), Some("getpid"));
        assert_eq!(syscall_name(18), Some("pwrite64"));
        assert_eq!(syscall_name(231), Some("exit_group"));
        assert_eq!(syscall_name(100_000), None);
    }
}
