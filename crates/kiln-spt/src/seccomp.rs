//! The guest's seccomp filter: trap (and so die) by default, and allow only
//! the system calls the spt ABI gives the guest, each pinned to its
//! descriptor and, where it matters, to its arguments.
//!
//! Rules are data ([`Rule`], kiln-tender's) before they are BPF, so that
//! the same list builds the filter and is printed and checked against a
//! golden list in the tests ([`crate::guest_rules`]).
//!
//! The rules are compiled by kiln-tender's compact compiler
//! ([`kiln_tender::bpf`]): a binary search over the call numbers, calls
//! with the same rules sharing code, and `offset + length <= capacity`
//! computed with BPF arithmetic, so that a manifest of 63 block devices
//! (the ABI's maximum) fits the kernel's 4,096 instructions. What a classic
//! BPF filter cannot do is dereference, so buffer pointers are not checked
//! (the process's whole address space is the guest's, so a pointer outside
//! guest memory only faults or reads the tender's leftover memory of that
//! same process).

use std::os::fd::RawFd;

use kiln_tender::seccomp::Refused;
use seccompiler::BpfProgram;

pub use kiln_tender::seccomp::{Cond, Op, Rule, SeccompError};

/// `ARCH_SET_FS` (`asm/prctl.h`).
pub const ARCH_SET_FS: u64 = 0x1002;

/// The rules every guest gets: console output on fd 1, exit, the wait on
/// the epoll set (without a signal mask: the guest has no use for one),
/// arming the internal timer, the two clocks, and setting
/// the TLS base (Solo5's `solo5_set_tls_base`).
pub fn core_rules(epoll_fd: RawFd, timer_fd: RawFd) -> Vec<Rule> {
    vec![
        Rule::on_fd(libc::SYS_write, "write", 1),
        Rule::new(libc::SYS_exit_group, "exit_group", Vec::new()),
        Rule::new(
            libc::SYS_epoll_pwait,
            "epoll_pwait",
            vec![
                Cond::eq(0, "fd", epoll_fd as u64),
                Cond::eq(4, "sigmask", 0),
            ],
        ),
        Rule::on_fd(libc::SYS_timerfd_settime, "timerfd_settime", timer_fd),
        Rule::new(
            libc::SYS_clock_gettime,
            "clock_gettime",
            vec![Cond::eq(0, "clock", libc::CLOCK_MONOTONIC as u64)],
        ),
        Rule::new(
            libc::SYS_clock_gettime,
            "clock_gettime",
            vec![Cond::eq(0, "clock", libc::CLOCK_REALTIME as u64)],
        ),
        Rule::new(
            libc::SYS_arch_prctl,
            "arch_prctl",
            vec![Cond::eq(0, "code", ARCH_SET_FS)],
        ),
    ]
}

/// With `--dumpcore`: `exit_group` is allowed with a status of at most
/// 254 only, so that an abort (255) traps like a forbidden call and the
/// handler records the registers for the core ([`crate::dumpcore`]). The
/// filter only narrows: no call is added.
pub fn trap_aborts(rules: &mut [Rule]) {
    for r in rules.iter_mut().filter(|r| r.nr == libc::SYS_exit_group) {
        r.conds = vec![Cond::le(0, "status", 254).dword()];
    }
}

/// Compiles `rules` into a filter that traps anything else: the kernel
/// sends SIGSYS, whose handler (installed by the tender before the filter,
/// see [`crate::supervise`]) records the call and ends the process; the
/// guest can neither catch, block nor return from it (`rt_sigaction`,
/// `rt_sigprocmask` and `rt_sigreturn` are refused too).
pub fn compile(rules: &[Rule]) -> Result<BpfProgram, SeccompError> {
    kiln_tender::bpf::compile(rules, Refused::Trap)
}

/// Installs `program` on the calling thread (and sets no_new_privs).
pub fn install(program: &BpfProgram) -> Result<(), SeccompError> {
    kiln_tender::seccomp::install(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_print_with_their_conditions() {
        let rules = core_rules(5, 6);
        let text: Vec<String> = rules.iter().map(ToString::to_string).collect();
        assert_eq!(text[0], "write(fd == 1)");
        assert_eq!(text[1], "exit_group()");
        assert_eq!(text[2], "epoll_pwait(fd == 5, sigmask == 0)");
        assert_eq!(text[4], "clock_gettime(clock == 1)");
        assert_eq!(
            Cond::masked(3, "offset", 511, 0).to_string(),
            "offset & 0x1ff == 0"
        );
    }

    #[test]
    fn dumpcore_narrows_exit_group_only() {
        let mut rules = core_rules(5, 6);
        trap_aborts(&mut rules);
        let text: Vec<String> = rules.iter().map(ToString::to_string).collect();
        assert_eq!(text[1], "exit_group(status <= 254)");
        let mut plain: Vec<String> = core_rules(5, 6).iter().map(ToString::to_string).collect();
        plain[1] = text[1].clone();
        assert_eq!(text, plain);
        assert!(compile(&rules).is_ok());
    }

    #[test]
    fn the_core_filter_compiles() {
        let prog = compile(&core_rules(5, 6)).unwrap();
        assert!(prog.len() > 10);
        // BPF_MAXINSNS.
        assert!(prog.len() < 4096);
    }
}
