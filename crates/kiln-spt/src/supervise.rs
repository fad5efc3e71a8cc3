//! The parent's side of a run: the tender forks, the child sets the guest
//! up and becomes it, and the parent waits for it and explains its end.
//!
//! The guest is a plain process under a seccomp filter whose default action
//! is a trap (SIGSYS), so it cannot report its own death through a system
//! call. Before the filter, the child installs a handler for SIGSYS and the
//! fault signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE) on an alternate stack
//! ([`sys::install_fatal_handlers`]); when one is delivered, the handler
//! writes what the kernel says (the forbidden system call's number, the
//! faulting address, the instruction pointer, the registers for
//! `--dumpcore`) to a page shared with the
//! parent ([`sys::ReportPage`]) and ends the process with a system call the
//! filter refuses, which, the signal being blocked, kills it with SIGSYS.
//! The parent only waits: one `waitpid`, no tracing, no stop on the way.
//! That `waitpid` (without `WUNTRACED`) sees neither the stops of a
//! debugger's tracing (`kiln-spt --gdb`) nor its attach and detach, only
//! the guest's end, which Linux reports to the parent once the tracer has
//! seen it.
//! A record is believed only when the guest was killed by a signal; the
//! guest can write the page (it is in its address space), so a hostile
//! guest can at worst misreport how it died, never change the exit status
//! (255) or escape the filter. `PR_SET_PDEATHSIG` kills the guest if the
//! tender dies.

use std::io;

use crate::sys::{self, Record, ReportPage, SYS_SECCOMP, WaitStatus};

/// How the guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    /// It exited with a code.
    Exited(i32),
    /// The seccomp filter killed it (SIGSYS).
    Seccomp {
        /// The forbidden system call, if the handler saw it.
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

/// Waits for the guest `pid` to end and explains its end with what its
/// handler wrote to `page`; also says whether a signal killed it (its
/// handler's record is then the guest's last word).
pub fn supervise(pid: libc::pid_t, page: &ReportPage) -> io::Result<(Death, bool)> {
    Ok(match sys::wait(pid)? {
        WaitStatus::Exited(code) => (Death::Exited(code), false),
        WaitStatus::Signaled(signal) => (killed(signal, page.read()), true),
    })
}

/// How a guest killed by `signal` died, given its handler's `record`.
/// An `exit_group` the filter trapped (with `--dumpcore`, for a status
/// above 254, see [`crate::dumpcore`]) is the exit it asked for.
pub fn killed(signal: i32, record: Option<Record>) -> Death {
    match record {
        Some(r)
            if signal == libc::SIGSYS
                && r.signal == libc::SIGSYS
                && r.code == SYS_SECCOMP
                && i64::from(r.nr) == libc::SYS_exit_group =>
        {
            Death::Exited((r.arg0() & 0xff) as i32)
        }
        Some(r) if r.signal == libc::SIGSYS => Death::Seccomp {
            nr: (r.code == SYS_SECCOMP).then_some(i64::from(r.nr)),
            rip: Some(r.rip),
        },
        Some(r) if is_fault(r.signal) => Death::Fault {
            signal: r.signal,
            addr: Some(r.addr),
            rip: Some(r.rip),
        },
        _ if signal == libc::SIGSYS => Death::Seccomp {
            nr: None,
            rip: None,
        },
        _ if is_fault(signal) => Death::Fault {
            signal,
            addr: None,
            rip: None,
        },
        _ => Death::Signal(signal),
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

    fn record(signal: i32, code: i32) -> Record {
        Record {
            signal,
            code,
            addr: 0x10,
            nr: 39,
            rip: 0x10_0c59,
            gregs: [0; crate::sys::NGREG],
            fs_base: None,
            fpregs: None,
        }
    }

    #[test]
    fn a_trapped_exit_is_the_exit_it_asked_for() {
        let mut exit = record(libc::SIGSYS, SYS_SECCOMP);
        exit.nr = libc::SYS_exit_group as i32;
        exit.gregs[libc::REG_RDI as usize] = 255;
        assert_eq!(killed(libc::SIGSYS, Some(exit)), Death::Exited(255));
        exit.gregs[libc::REG_RDI as usize] = 0x1_0000_0101;
        assert_eq!(killed(libc::SIGSYS, Some(exit)), Death::Exited(1));
        // Only a seccomp trap of exit_group that killed by SIGSYS.
        assert!(!matches!(
            killed(libc::SIGSEGV, Some(exit)),
            Death::Exited(_)
        ));
        exit.code = 0;
        assert!(matches!(
            killed(libc::SIGSYS, Some(exit)),
            Death::Seccomp { nr: None, .. }
        ));
    }

    #[test]
    fn a_death_is_explained_by_the_handlers_record() {
        assert_eq!(
            killed(libc::SIGSYS, Some(record(libc::SIGSYS, SYS_SECCOMP))),
            Death::Seccomp {
                nr: Some(39),
                rip: Some(0x10_0c59)
            }
        );
        // The handler ends every death with SIGSYS; the record says why.
        assert_eq!(
            killed(libc::SIGSYS, Some(record(libc::SIGSEGV, 1))),
            Death::Fault {
                signal: libc::SIGSEGV,
                addr: Some(0x10),
                rip: Some(0x10_0c59)
            }
        );
        assert_eq!(
            killed(libc::SIGSYS, Some(record(libc::SIGSYS, 0))),
            Death::Seccomp {
                nr: None,
                rip: Some(0x10_0c59)
            }
        );
    }

    #[test]
    fn without_a_record_only_the_signal_is_known() {
        assert_eq!(
            killed(libc::SIGSYS, None),
            Death::Seccomp {
                nr: None,
                rip: None
            }
        );
        assert_eq!(
            killed(libc::SIGBUS, None),
            Death::Fault {
                signal: libc::SIGBUS,
                addr: None,
                rip: None
            }
        );
        assert_eq!(killed(libc::SIGKILL, None), Death::Signal(libc::SIGKILL));
        // A record of another signal is not believed.
        assert_eq!(
            killed(libc::SIGTERM, Some(record(libc::SIGTERM, 0))),
            Death::Signal(libc::SIGTERM)
        );
    }

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
