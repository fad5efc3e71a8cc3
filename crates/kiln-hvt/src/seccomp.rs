//! The seccomp allow-list installed right before the vCPU loop: the system
//! calls the loop, the console and the modules need, each pinned to its
//! descriptor where it takes one. Anything else kills the tender.

use std::os::fd::RawFd;

use kiln_tender::seccomp::{Cond, Refused};
use seccompiler::BpfProgram;

use crate::module::FdSyscall;

pub use kiln_tender::seccomp::SeccompError;

const KVMIO: u64 = 0xae;
const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}
/// `KVM_RUN`: `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = (KVMIO << 8) | 0x80;
/// `KVM_GET_REGS`: `_IOR(KVMIO, 0x81, struct kvm_regs)`.
pub const KVM_GET_REGS: u64 = ior(0x81, std::mem::size_of::<kvm_bindings::kvm_regs>());
/// `KVM_GET_SREGS`: `_IOR(KVMIO, 0x83, struct kvm_sregs)`.
pub const KVM_GET_SREGS: u64 = ior(0x83, std::mem::size_of::<kvm_bindings::kvm_sregs>());

/// What the filter allows.
#[derive(Debug, Clone)]
pub struct Allow {
    /// The vCPU descriptor (KVM_RUN and register reads).
    pub vcpu_fd: RawFd,
    /// The epoll set of the poll hypercall.
    pub epoll_fd: RawFd,
    /// The epoll set's fallback timer, on kernels without `epoll_pwait2`.
    pub timer_fd: Option<RawFd>,
    /// Per-module system calls.
    pub module_calls: Vec<FdSyscall>,
}

/// A condition on one argument of an allowed system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// The first argument is this descriptor.
    Fd(RawFd),
    /// The second argument (a 32-bit request or command) is this value.
    Second(u64),
    /// The third argument (`mmap`'s protection) lacks `PROT_EXEC`.
    NoExec,
}

/// An allowed system call: its number, its name (for the golden list) and
/// the conditions that must all hold; an empty list allows any call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The system call number.
    pub nr: i64,
    /// Its name.
    pub name: &'static str,
    /// Conditions, all of which must hold.
    pub args: Vec<Arg>,
}

fn rule(nr: i64, name: &'static str, args: Vec<Arg>) -> Rule {
    Rule { nr, name, args }
}

/// The allow-list, in the order it is compiled. Anything else kills the
/// process.
pub fn rules(allow: &Allow) -> Vec<Rule> {
    let mut rules = Vec::new();
    // Unconditional: exit, memory management for the allocator (mmap never
    // executable), signals, clocks.
    for (nr, name) in [
        (libc::SYS_exit_group, "exit_group"),
        (libc::SYS_exit, "exit"),
        (libc::SYS_rt_sigreturn, "rt_sigreturn"),
        (libc::SYS_rt_sigprocmask, "rt_sigprocmask"),
        (libc::SYS_sigaltstack, "sigaltstack"),
        (libc::SYS_clock_gettime, "clock_gettime"),
        (libc::SYS_brk, "brk"),
        (libc::SYS_munmap, "munmap"),
        (libc::SYS_mremap, "mremap"),
        (libc::SYS_madvise, "madvise"),
        (libc::SYS_futex, "futex"),
        (libc::SYS_close, "close"),
    ] {
        rules.push(rule(nr, name, Vec::new()));
    }
    rules.push(rule(libc::SYS_mmap, "mmap", vec![Arg::NoExec]));
    // Closing a descriptor: std checks it is open first (F_GETFD).
    rules.push(rule(
        libc::SYS_fcntl,
        "fcntl",
        vec![Arg::Second(libc::F_GETFD as u64)],
    ));
    // Console.
    rules.push(rule(libc::SYS_write, "write", vec![Arg::Fd(1)]));
    rules.push(rule(libc::SYS_write, "write", vec![Arg::Fd(2)]));
    // The vCPU: run and read registers, nothing else.
    for req in [KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS] {
        rules.push(rule(
            libc::SYS_ioctl,
            "ioctl",
            vec![Arg::Fd(allow.vcpu_fd), Arg::Second(req)],
        ));
    }
    // Poll: one epoll_pwait2, or the fallback timer and epoll_wait.
    match allow.timer_fd {
        None => rules.push(rule(
            libc::SYS_epoll_pwait2,
            "epoll_pwait2",
            vec![Arg::Fd(allow.epoll_fd)],
        )),
        Some(timer) => {
            rules.push(rule(
                libc::SYS_timerfd_settime,
                "timerfd_settime",
                vec![Arg::Fd(timer)],
            ));
            rules.push(rule(
                libc::SYS_epoll_wait,
                "epoll_wait",
                vec![Arg::Fd(allow.epoll_fd)],
            ));
        }
    }
    // Modules.
    for call in &allow.module_calls {
        rules.push(rule(call.nr, call.name, vec![Arg::Fd(call.fd)]));
    }
    rules
}

impl Arg {
    /// The condition in kiln-tender's vocabulary, which compiles it.
    fn cond(self) -> Cond {
        match self {
            Arg::Fd(fd) => Cond::eq(0, "fd", fd as u64),
            Arg::Second(value) => Cond::eq(1, "arg1", value).dword(),
            Arg::NoExec => Cond::masked(2, "prot", libc::PROT_EXEC as u64, 0).dword(),
        }
    }
}

/// The compiled filter.
pub fn filter(allow: &Allow) -> Result<BpfProgram, SeccompError> {
    let rules: Vec<kiln_tender::seccomp::Rule> = rules(allow)
        .into_iter()
        .map(|r| {
            kiln_tender::seccomp::Rule::new(
                r.nr,
                r.name,
                r.args.into_iter().map(Arg::cond).collect(),
            )
        })
        .collect();
    kiln_tender::seccomp::compile(&rules, Refused::KillProcess)
}

/// Installs the filter on the calling thread (the only one).
pub fn apply(allow: &Allow) -> Result<(), SeccompError> {
    kiln_tender::seccomp::install(&filter(allow)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
    }

    fn allow(timer_fd: Option<RawFd>) -> Allow {
        Allow {
            vcpu_fd: 10,
            epoll_fd: 11,
            timer_fd,
            module_calls: vec![
                FdSyscall {
                    nr: libc::SYS_read,
                    name: "read",
                    fd: 12,
                },
                FdSyscall {
                    nr: libc::SYS_write,
                    name: "write",
                    fd: 12,
                },
            ],
        }
    }

    fn render(rules: &[Rule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| {
                let args: Vec<String> = r
                    .args
                    .iter()
                    .map(|a| match a {
                        Arg::Fd(fd) => format!("fd={fd}"),
                        Arg::Second(v) => format!("arg1={v:#x}"),
                        Arg::NoExec => "no PROT_EXEC".into(),
                    })
                    .collect();
                format!("{}({})", r.name, args.join(", "))
            })
            .collect()
    }

    const COMMON: [&str; 19] = [
        "exit_group()",
        "exit()",
        "rt_sigreturn()",
        "rt_sigprocmask()",
        "sigaltstack()",
        "clock_gettime()",
        "brk()",
        "munmap()",
        "mremap()",
        "madvise()",
        "futex()",
        "close()",
        "mmap(no PROT_EXEC)",
        "fcntl(arg1=0x1)",
        "write(fd=1)",
        "write(fd=2)",
        "ioctl(fd=10, arg1=0xae80)",
        "ioctl(fd=10, arg1=0x8090ae81)",
        "ioctl(fd=10, arg1=0x8138ae83)",
    ];

    /// The golden allow-list: a change here is a change of the tender's
    /// attack surface and must be deliberate.
    #[test]
    fn allow_list_is_exactly_this() {
        let mut expected: Vec<String> = COMMON.iter().map(|s| s.to_string()).collect();
        expected.extend(["epoll_pwait2(fd=11)", "read(fd=12)", "write(fd=12)"].map(String::from));
        assert_eq!(render(&rules(&allow(None))), expected);

        let mut expected: Vec<String> = COMMON.iter().map(|s| s.to_string()).collect();
        expected.extend(
            [
                "timerfd_settime(fd=13)",
                "epoll_wait(fd=11)",
                "read(fd=12)",
                "write(fd=12)",
            ]
            .map(String::from),
        );
        assert_eq!(render(&rules(&allow(Some(13)))), expected);
    }

    #[test]
    fn filter_compiles_in_both_timeout_modes() {
        assert!(!filter(&allow(None)).unwrap().is_empty());
        assert!(!filter(&allow(Some(13))).unwrap().is_empty());
    }
}
