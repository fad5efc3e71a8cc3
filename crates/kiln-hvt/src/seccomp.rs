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
const fn iow(nr: u64, size: usize) -> u64 {
    (1 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}
/// `KVM_SET_REGS`: `_IOW(KVMIO, 0x82, struct kvm_regs)` (the debugger).
pub const KVM_SET_REGS: u64 = iow(0x82, std::mem::size_of::<kvm_bindings::kvm_regs>());
/// `KVM_SET_SREGS`: `_IOW(KVMIO, 0x84, struct kvm_sregs)` (the debugger).
pub const KVM_SET_SREGS: u64 = iow(0x84, std::mem::size_of::<kvm_bindings::kvm_sregs>());
/// `KVM_GET_FPU`: `_IOR(KVMIO, 0x8c, struct kvm_fpu)` (the debugger).
pub const KVM_GET_FPU: u64 = ior(0x8c, std::mem::size_of::<kvm_bindings::kvm_fpu>());
/// `KVM_SET_GUEST_DEBUG`: `_IOW(KVMIO, 0x9b, struct kvm_guest_debug)`.
pub const KVM_SET_GUEST_DEBUG: u64 =
    iow(0x9b, std::mem::size_of::<kvm_bindings::kvm_guest_debug>());
/// `TUNSETOFFLOAD`: `_IOW('T', 208, unsigned int)` (libc's type for it
/// differs between C libraries).
pub const TUNSETOFFLOAD: u64 = (1 << 30) | (4 << 16) | ((b'T' as u64) << 8) | 208;

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
    /// The taps opened with offloads, which the tender clears as it ends
    /// (`TUNSETOFFLOAD` 0, `kiln_tender::net::release`).
    pub offloaded_taps: Vec<RawFd>,
    /// The pipes the tender reads to end of file as it stops those taps'
    /// guards (`kiln_tender::net::guard_fds`).
    pub tap_guards: Vec<RawFd>,
    /// The gdb stub's and the core file's (`--gdb`, `--dumpcore`); empty
    /// without them.
    pub debug: Vec<Rule>,
}

/// The rules the gdb stub adds: its connection `socket` (read, written,
/// raising SIGIO), the vCPU's registers and debug controls, and write
/// protection lifted page by page for breakpoints (never executable).
pub fn gdb_rules(vcpu_fd: RawFd, socket: RawFd) -> Vec<Rule> {
    let mut rules = vec![
        rule(libc::SYS_recvfrom, "recvfrom", vec![Arg::Fd(socket)]),
        rule(libc::SYS_sendto, "sendto", vec![Arg::Fd(socket)]),
        rule(libc::SYS_mprotect, "mprotect", vec![Arg::NoExec]),
    ];
    for req in [
        KVM_SET_REGS,
        KVM_SET_SREGS,
        KVM_GET_FPU,
        KVM_SET_GUEST_DEBUG,
    ] {
        rules.push(rule(
            libc::SYS_ioctl,
            "ioctl",
            vec![Arg::Fd(vcpu_fd), Arg::Second(req)],
        ));
    }
    rules
}

/// The rules a core file adds: writing the unnamed `file` and linking it
/// into its directory (by descriptor, or through /proc without
/// CAP_DAC_READ_SEARCH).
pub fn dumpcore_rules(file: RawFd) -> Vec<Rule> {
    vec![
        rule(libc::SYS_write, "write", vec![Arg::Fd(file)]),
        rule(libc::SYS_linkat, "linkat", vec![Arg::Fd(file)]),
        rule(libc::SYS_linkat, "linkat", vec![Arg::Fd(libc::AT_FDCWD)]),
    ]
}

/// A condition on one argument of an allowed system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// The first argument is this descriptor.
    Fd(RawFd),
    /// The second argument (a 32-bit request or command) is this value.
    Second(u64),
    /// The third argument is this value (all 64 bits).
    Third(u64),
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
    // Clearing a tap's offloads as the tender ends: that request, with 0,
    // on exactly those taps.
    for &fd in &allow.offloaded_taps {
        rules.push(rule(
            libc::SYS_ioctl,
            "ioctl",
            vec![Arg::Fd(fd), Arg::Second(TUNSETOFFLOAD), Arg::Third(0)],
        ));
    }
    // Stopping their guards: closing a pipe (any `close` is allowed) and
    // reading the other one until the guard has let go of the tap.
    for &fd in &allow.tap_guards {
        rules.push(rule(libc::SYS_read, "read", vec![Arg::Fd(fd)]));
    }
    rules.extend(allow.debug.iter().cloned());
    rules
}

impl Arg {
    /// The condition in kiln-tender's vocabulary, which compiles it.
    fn cond(self) -> Cond {
        match self {
            Arg::Fd(fd) => Cond::eq(0, "fd", fd as u64),
            Arg::Second(value) => Cond::eq(1, "arg1", value).dword(),
            Arg::Third(value) => Cond::eq(2, "arg2", value),
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

/// Installs the filter on every thread of the tender at once (the vCPU's
/// and the net ring's I/O thread, started before).
pub fn apply_all_threads(allow: &Allow) -> Result<(), SeccompError> {
    seccompiler::apply_filter_all_threads(&filter(allow)?).map_err(SeccompError::Install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
        #[allow(clippy::unnecessary_cast)]
        let tunsetoffload = libc::TUNSETOFFLOAD as u64;
        assert_eq!(TUNSETOFFLOAD, tunsetoffload);
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
            offloaded_taps: Vec::new(),
            tap_guards: Vec::new(),
            debug: Vec::new(),
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
                        Arg::Third(v) => format!("arg2={v:#x}"),
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
    fn debugging_adds_only_its_descriptors() {
        let mut a = allow(None);
        a.debug = gdb_rules(10, 20);
        a.debug.extend(dumpcore_rules(21));
        let rendered = render(&rules(&a));
        assert_eq!(
            rendered[rendered.len() - 10..],
            [
                "recvfrom(fd=20)",
                "sendto(fd=20)",
                "mprotect(no PROT_EXEC)",
                "ioctl(fd=10, arg1=0x4090ae82)",
                "ioctl(fd=10, arg1=0x4138ae84)",
                "ioctl(fd=10, arg1=0x81a0ae8c)",
                "ioctl(fd=10, arg1=0x4048ae9b)",
                "write(fd=21)",
                "linkat(fd=21)",
                "linkat(fd=-100)",
            ]
        );
        assert!(!filter(&a).unwrap().is_empty());
    }

    #[test]
    fn a_tap_with_offloads_may_only_have_them_cleared_and_its_guard_stopped() {
        let mut a = allow(None);
        a.offloaded_taps = vec![12];
        a.tap_guards = vec![14];
        let rendered = render(&rules(&a));
        assert_eq!(
            rendered[rendered.len() - 4..],
            [
                "read(fd=12)",
                "write(fd=12)",
                "ioctl(fd=12, arg1=0x400454d0, arg2=0x0)",
                "read(fd=14)",
            ]
        );
        assert!(!filter(&a).unwrap().is_empty());
    }

    #[test]
    fn filter_compiles_in_both_timeout_modes() {
        assert!(!filter(&allow(None)).unwrap().is_empty());
        assert!(!filter(&allow(Some(13))).unwrap().is_empty());
    }
}
