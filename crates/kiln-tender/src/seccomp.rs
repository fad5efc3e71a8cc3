//! Seccomp allow-lists as data, and their compilation to a classic BPF
//! filter with `seccompiler`, for both tenders: kiln-hvt filters itself
//! before its vCPU loop (a refused call kills the tender), kiln-spt filters
//! the guest process (a refused call traps, and the guest's handler reports
//! it).
//!
//! Rules are data ([`Rule`]) before they are BPF, so that the same list
//! builds the filter and is printed and checked against a golden list in
//! each tender's tests. A classic BPF filter compares one argument with one
//! constant at a time: no arithmetic between arguments, no dereferencing.

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
    /// The compact compiler ([`crate::bpf`]) met something it cannot lay
    /// out.
    #[error("cannot build the seccomp filter: {0}")]
    Layout(&'static str),
    /// The filter is longer than the kernel allows.
    #[error(
        "the seccomp filter has {0} instructions, more than the kernel's {max}",
        max = crate::bpf::MAX_INSNS
    )]
    TooLong(usize),
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
    /// `arg + other <= value` (unsigned, 64 bits, with `other` below
    /// 2^32): only [`crate::bpf`] compiles it.
    SumLe {
        /// The other argument's index.
        other: u8,
        /// Its name, for printing.
        other_name: &'static str,
    },
}

/// How much of the argument a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// All 64 bits.
    Qword,
    /// The low 32 bits (arguments that are C `int`s, whose upper half the
    /// kernel ignores).
    Dword,
}

/// One condition on a system call argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index, 0 to 5.
    pub arg: u8,
    /// Its name, for printing.
    pub name: &'static str,
    /// How much of it is compared.
    pub width: Width,
    /// The comparison.
    pub op: Op,
    /// The constant.
    pub value: u64,
}

impl Cond {
    /// `arg == value` (64-bit).
    pub const fn eq(arg: u8, name: &'static str, value: u64) -> Self {
        Self {
            arg,
            name,
            width: Width::Qword,
            op: Op::Eq,
            value,
        }
    }

    /// `arg <= value` (64-bit, unsigned).
    pub const fn le(arg: u8, name: &'static str, value: u64) -> Self {
        Self {
            arg,
            name,
            width: Width::Qword,
            op: Op::Le,
            value,
        }
    }

    /// `arg & mask == value` (64-bit).
    pub const fn masked(arg: u8, name: &'static str, mask: u64, value: u64) -> Self {
        Self {
            arg,
            name,
            width: Width::Qword,
            op: Op::MaskedEq(mask),
            value,
        }
    }

    /// `arg + other <= value` (64-bit, unsigned; `other` must be below
    /// 2^32 and `value` below 2^63).
    pub const fn sum_le(
        arg: u8,
        name: &'static str,
        other: u8,
        other_name: &'static str,
        value: u64,
    ) -> Self {
        Self {
            arg,
            name,
            width: Width::Qword,
            op: Op::SumLe { other, other_name },
            value,
        }
    }

    /// The same condition on the argument's low 32 bits only.
    pub const fn dword(self) -> Self {
        Self {
            width: Width::Dword,
            ..self
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Op::Eq => write!(f, "{} == {}", self.name, self.value),
            Op::Le => write!(f, "{} <= {}", self.name, self.value),
            Op::MaskedEq(mask) => write!(f, "{} & {:#x} == {}", self.name, mask, self.value),
            Op::SumLe { other_name, .. } => {
                write!(f, "{} + {} <= {}", self.name, other_name, self.value)
            }
        }
    }
}

/// A system call allowed when all its conditions hold (always, with none).
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

/// What the filter does with a system call no rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Kill the process (SIGSYS, not catchable).
    KillProcess,
    /// Send SIGSYS, for a handler installed before the filter to report.
    Trap,
}

fn condition(c: &Cond) -> Result<SeccompCondition, SeccompError> {
    let op = match c.op {
        Op::Eq => SeccompCmpOp::Eq,
        Op::Le => SeccompCmpOp::Le,
        Op::MaskedEq(mask) => SeccompCmpOp::MaskedEq(mask),
        Op::SumLe { .. } => {
            return Err(SeccompError::Layout(
                "seccompiler cannot compare a sum of arguments",
            ));
        }
    };
    let width = match c.width {
        Width::Qword => SeccompCmpArgLen::Qword,
        Width::Dword => SeccompCmpArgLen::Dword,
    };
    SeccompCondition::new(c.arg, width, op, c.value).map_err(SeccompError::Build)
}

/// Compiles `rules` into a filter for x86_64 that does `refused` with
/// anything else. An unconditional rule wins over conditional ones for the
/// same call.
pub fn compile(rules: &[Rule], refused: Refused) -> Result<BpfProgram, SeccompError> {
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
    // seccompiler's form for an unconditional rule is an empty list.
    for rule in rules.iter().filter(|r| r.conds.is_empty()) {
        map.insert(rule.nr, Vec::new());
    }
    let on_refused = match refused {
        Refused::KillProcess => SeccompAction::KillProcess,
        Refused::Trap => SeccompAction::Trap,
    };
    let filter = SeccompFilter::new(map, on_refused, SeccompAction::Allow, TargetArch::x86_64)
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
        let rule = Rule::new(
            libc::SYS_pwrite64,
            "pwrite64",
            vec![
                Cond::eq(0, "fd", 9),
                Cond::le(3, "offset", 3584),
                Cond::masked(3, "offset", 511, 0),
            ],
        );
        assert_eq!(
            rule.to_string(),
            "pwrite64(fd == 9, offset <= 3584, offset & 0x1ff == 0)"
        );
        assert_eq!(Rule::on_fd(1, "write", 1).to_string(), "write(fd == 1)");
        assert_eq!(
            Rule::new(231, "exit_group", Vec::new()).to_string(),
            "exit_group()"
        );
    }

    /// Runs `program` as a filter in a forked child that then makes system
    /// call `nr` with first argument `arg0`; the child's wait status.
    fn verdict(program: &BpfProgram, nr: i64, arg0: u64) -> i32 {
        let _ = std::io::Write::flush(&mut std::io::stdout());
        #[allow(unsafe_code)]
        // SAFETY: the child only installs the filter and makes raw system
        // calls before _exit; the test binary's other threads are not
        // touched (no locks are taken in the child).
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                let _ = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let prog = libc::sock_fprog {
                    len: program.len() as u16,
                    filter: program.as_ptr() as *mut libc::sock_filter,
                };
                if libc::syscall(libc::SYS_seccomp, 1, 0, &prog) != 0 {
                    libc::_exit(100);
                }
                libc::syscall(nr, arg0, 0, 0);
                libc::_exit(0);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            status
        }
    }

    #[test]
    fn the_filter_allows_its_rules_and_refuses_the_rest() {
        // getppid with fd-like argument 7 only; close and the child's
        // exit unconditionally.
        let rules = [
            Rule::on_fd(libc::SYS_getppid, "getppid", 7),
            Rule::new(libc::SYS_close, "close", Vec::new()),
            Rule::new(libc::SYS_exit_group, "exit_group", Vec::new()),
        ];
        for refused in [Refused::KillProcess, Refused::Trap] {
            let program = compile(&rules, refused).unwrap();
            assert!(program.len() < 4096);
            let allowed = verdict(&program, libc::SYS_getppid, 7);
            assert!(libc::WIFEXITED(allowed) && libc::WEXITSTATUS(allowed) == 0);
            let allowed = verdict(&program, libc::SYS_close, 12345);
            assert!(libc::WIFEXITED(allowed) && libc::WEXITSTATUS(allowed) == 0);
            for (nr, arg) in [(libc::SYS_getppid, 8), (libc::SYS_getpid, 0)] {
                let refused = verdict(&program, nr, arg);
                assert!(
                    libc::WIFSIGNALED(refused) && libc::WTERMSIG(refused) == libc::SIGSYS,
                    "system call {nr}({arg}) was not refused: status {refused:#x}"
                );
            }
        }
    }
}
