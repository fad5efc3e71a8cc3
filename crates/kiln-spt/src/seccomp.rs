//! The guest's seccomp filter: trap (and so die) by default, and allow only the system
//! calls the spt ABI gives the guest, each pinned to its descriptor and,
//! where it matters, to its arguments.
//!
//! Rules are data ([`Rule`]) before they are BPF, so that the same list
//! builds the filter and is printed and checked against a golden list in
//! the tests ([`crate::guest_rules`]).
//!
//! What a classic BPF seccomp filter cannot express (seccompiler compares
//! each argument with a constant, one argument at a time): no arithmetic
//! between arguments, so `offset + length <= capacity` is enforced by
//! allowing a fixed set of lengths (the sector size times a power of two,
//! up to [`crate::block::MAX_REQUEST`]) each with its own bound on the
//! offset; no dereferencing, so buffer pointers are not checked (the
//! process's whole address space is the guest's, so a pointer outside guest
//! memory only faults or reads the tender's leftover memory of that same
//! process).

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use thiserror::Error;

/// Why the filter could not be built or installed.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// Building the filter failed.
    #[error("cannot build the seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    /// Compiling or installing it failed.
    #[error("cannot install the seccomp filter")]
    Install(#[source] seccompiler::Error),
}

/// How a condition compares an argument with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `arg == value`.
    Eq,
    /// `arg <= value` (unsigned).
    Le,
    /// `arg & mask == value`.
    MaskedEq(u64),
}

/// One condition on a system call argument (64-bit compare).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index, 0 to 5.
    pub arg: u8,
    /// Its name, for printing.
    pub name: &'static str,
    /// The comparison.
    pub op: Op,
    /// The constant.
    pub value: u64,
}

impl Cond {
    /// `arg == value`.
    pub const fn eq(arg: u8, name: &'static str, value: u64) -> Self {
        Self {
            arg,
            name,
            op: Op::Eq,
            value,
        }
    }

    /// `arg <= value`.
    pub const fn le(arg: u8, name: &'static str, value: u64) -> Self {
        Self {
            arg,
            name,
            op: Op::Le,
            value,
        }
    }

    /// `arg & mask == value`.
    pub const fn masked(arg: u8, name: &'static str, mask: u64, value: u64) -> Self {
        Self {
            arg,
            name,
            op: Op::MaskedEq(mask),
            value,
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Op::Eq => write!(f, "{} == {}", self.name, self.value),
            Op::Le => write!(f, "{} <= {}", self.name, self.value),
            Op::MaskedEq(mask) => write!(f, "{} & {:#x} == {}", self.name, mask, self.value),
        }
    }
}

/// A system call allowed when all its conditions hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The system call number.
    pub nr: i64,
    /// Its name.
    pub name: &'static str,
    /// The conditions, all of which must hold.
    pub conds: Vec<Cond>,
}

impl Rule {
    /// `name` when `conds` hold.
    pub fn new(nr: i64, name: &'static str, conds: Vec<Cond>) -> Self {
        Self { nr, name, conds }
    }

    /// `name` on descriptor `fd` (its first argument) only.
    pub fn on_fd(nr: i64, name: &'static str, fd: RawFd) -> Self {
        Self::new(nr, name, vec![Cond::eq(0, "fd", fd as u64)])
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.name)?;
        for (i, c) in self.conds.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str(")")
    }
}

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

fn condition(c: &Cond) -> Result<SeccompCondition, SeccompError> {
    let op = match c.op {
        Op::Eq => SeccompCmpOp::Eq,
        Op::Le => SeccompCmpOp::Le,
        Op::MaskedEq(mask) => SeccompCmpOp::MaskedEq(mask),
    };
    SeccompCondition::new(c.arg, SeccompCmpArgLen::Qword, op, c.value).map_err(SeccompError::Build)
}

/// Compiles `rules` into a filter that traps anything else: the kernel
/// sends SIGSYS, whose handler (installed by the tender before the filter,
/// see [`crate::supervise`]) records the call and ends the process; the
/// guest can neither catch, block nor return from it (`rt_sigaction`,
/// `rt_sigprocmask` and `rt_sigreturn` are refused too).
pub fn compile(rules: &[Rule]) -> Result<BpfProgram, SeccompError> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for rule in rules {
        let entry = map.entry(rule.nr).or_default();
        if rule.conds.is_empty() {
            continue;
        }
        let conds = rule
            .conds
            .iter()
            .map(condition)
            .collect::<Result<Vec<_>, _>>()?;
        entry.push(SeccompRule::new(conds).map_err(SeccompError::Build)?);
    }
    // An unconditional rule wins over conditional ones for its call;
    // seccompiler's form for it is an empty list.
    for rule in rules.iter().filter(|r| r.conds.is_empty()) {
        map.insert(rule.nr, Vec::new());
    }
    let filter = SeccompFilter::new(
        map,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(SeccompError::Build)?;
    BpfProgram::try_from(filter).map_err(SeccompError::Build)
}

/// Installs `program` on the calling thread (and sets no_new_privs).
pub fn install(program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program).map_err(SeccompError::Install)
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
    fn the_core_filter_compiles() {
        let prog = compile(&core_rules(5, 6)).unwrap();
        assert!(prog.len() > 10);
        // BPF_MAXINSNS.
        assert!(prog.len() < 4096);
    }
}
