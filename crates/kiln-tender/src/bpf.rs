//! A compact compiler from allow-lists ([`Rule`]) to a classic BPF seccomp
//! program, for kiln-spt's guest filter (spec: the kernel's
//! `Documentation/userspace-api/seccomp_filter.rst` and
//! `include/uapi/linux/filter.h`, `seccomp.h`).
//!
//! seccompiler (which kiln-hvt's own filter uses) tests the rules of a call
//! one after the other with conditions that compare one argument with one
//! constant, so a block device costs a rule per allowed request length:
//! 367 instructions a disk, and a manifest of 63 disks (the ABI's maximum)
//! compiled to 23,132 instructions, over the kernel's limit of 4,096. This
//! compiler differs where that matters:
//!
//! - the system call number is found by a binary search tree of
//!   comparisons instead of a linear chain;
//! - calls whose rule lists are the same (`pread64` and `pwrite64`,
//!   `fsync` and `fdatasync`) share one block of code;
//! - [`Op::SumLe`] uses BPF's arithmetic to check `arg + other <= value` in
//!   64 bits, so one rule bounds a request of any length (the offset and
//!   the length of a block request);
//! - every jump is short (8-bit offsets) where its target is near and goes
//!   through `ja` (32-bit) where it is not, decided by relaxation.
//!
//! The program starts by checking the architecture (x86_64 only) and
//! refusing x32 system call numbers, as seccompiler's does.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, sock_filter};

use crate::seccomp::{Cond, Op, Refused, Rule, SeccompError, Width};

/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// System call numbers at or above this are the x32 ABI's.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

// Opcodes (`linux/filter.h`).
const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const LD_MEM: u16 = 0x60; // BPF_LD | BPF_MEM
const ST: u16 = 0x02; // BPF_ST
const ADD_K: u16 = 0x04; // BPF_ALU | BPF_ADD | BPF_K
const ADD_X: u16 = 0x0c; // BPF_ALU | BPF_ADD | BPF_X
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const TAX: u16 = 0x07; // BPF_MISC | BPF_TAX
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JGE_X: u16 = 0x3d;

// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;

/// Offset of the low 32 bits of argument `arg`.
fn lo(arg: u8) -> u32 {
    16 + 8 * u32::from(arg)
}

/// Offset of the high 32 bits of argument `arg`.
fn hi(arg: u8) -> u32 {
    lo(arg) + 4
}

type Label = usize;

/// One instruction before jump offsets are known.
#[derive(Debug, Clone, Copy)]
enum Item {
    /// A non-jump instruction.
    Op(u16, u32),
    /// A conditional jump to `t` when true, `f` when false.
    Jmp(u16, u32, Label, Label),
    /// An unconditional jump.
    Ja(Label),
    /// Where a label is.
    Bind(Label),
}

/// The program being assembled.
#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        self.labels - 1
    }

    fn op(&mut self, code: u16, k: u32) {
        self.items.push(Item::Op(code, k));
    }

    fn jmp(&mut self, code: u16, k: u32, t: Label, f: Label) {
        self.items.push(Item::Jmp(code, k, t, f));
    }

    fn ja(&mut self, to: Label) {
        self.items.push(Item::Ja(to));
    }

    fn bind(&mut self, l: Label) {
        self.items.push(Item::Bind(l));
    }

    /// Resolves the labels: a conditional jump whose target is more than
    /// 255 instructions ahead becomes `jcond 0, 1; ja t; ja f`. Lengthening
    /// a jump only moves targets further, so this ends.
    fn assemble(&self) -> Result<BpfProgram, SeccompError> {
        let mut long = vec![false; self.items.len()];
        loop {
            let mut at = vec![usize::MAX; self.labels];
            let mut pc = 0;
            for (i, item) in self.items.iter().enumerate() {
                match item {
                    Item::Bind(l) => at[*l] = pc,
                    Item::Jmp(..) if long[i] => pc += 3,
                    _ => pc += 1,
                }
            }
            let mut grew = false;
            let mut out = Vec::with_capacity(pc);
            for (i, item) in self.items.iter().enumerate() {
                let here = out.len();
                let offset = |l: Label, from: usize| -> Result<usize, SeccompError> {
                    at[l]
                        .checked_sub(from + 1)
                        .ok_or(SeccompError::Layout("a backward or unbound jump"))
                };
                match *item {
                    Item::Bind(_) => {}
                    Item::Op(code, k) => out.push(insn(code, 0, 0, k)),
                    Item::Ja(l) => {
                        let off = u32::try_from(offset(l, here)?)
                            .map_err(|_| SeccompError::Layout("a jump too far"))?;
                        out.push(insn(JA, 0, 0, off));
                    }
                    Item::Jmp(code, k, t, f) if long[i] => {
                        out.push(insn(code, 0, 1, k));
                        let t = u32::try_from(offset(t, here + 1)?)
                            .map_err(|_| SeccompError::Layout("a jump too far"))?;
                        out.push(insn(JA, 0, 0, t));
                        let f = u32::try_from(offset(f, here + 2)?)
                            .map_err(|_| SeccompError::Layout("a jump too far"))?;
                        out.push(insn(JA, 0, 0, f));
                    }
                    Item::Jmp(code, k, t, f) => {
                        match (
                            u8::try_from(offset(t, here)?),
                            u8::try_from(offset(f, here)?),
                        ) {
                            (Ok(jt), Ok(jf)) => out.push(insn(code, jt, jf, k)),
                            _ => {
                                long[i] = true;
                                grew = true;
                            }
                        }
                    }
                }
            }
            if !grew {
                if out.len() > MAX_INSNS {
                    return Err(SeccompError::TooLong(out.len()));
                }
                return Ok(out);
            }
        }
    }
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Emits `cond`, continuing after it when it holds and jumping to `fail`
/// when not.
fn emit_cond(a: &mut Asm, c: &Cond, fail: Label) {
    let (vlo, vhi) = (c.value as u32, (c.value >> 32) as u32);
    let qword = c.width == Width::Qword;
    let ok = a.label();
    match c.op {
        Op::Eq => {
            let next = a.label();
            a.op(LD_ABS, lo(c.arg));
            a.jmp(JEQ_K, vlo, next, fail);
            a.bind(next);
            if qword {
                a.op(LD_ABS, hi(c.arg));
                a.jmp(JEQ_K, vhi, ok, fail);
            }
        }
        Op::Le => le(a, c.arg, c.value, qword, fail),
        Op::MaskedEq(mask) => {
            let (mlo, mhi) = (mask as u32, (mask >> 32) as u32);
            let next = a.label();
            a.op(LD_ABS, lo(c.arg));
            a.op(AND_K, mlo);
            a.jmp(JEQ_K, vlo & mlo, next, fail);
            a.bind(next);
            if qword {
                a.op(LD_ABS, hi(c.arg));
                a.op(AND_K, mhi);
                a.jmp(JEQ_K, vhi & mhi, ok, fail);
            }
        }
        Op::SumLe { other, .. } => {
            // other < 2^32, arg <= value (so arg's high half + a carry
            // cannot wrap), then (arg + other) <= value in 64 bits, the
            // low half's sum kept in M[0].
            let (n1, n2, carry, sum_hi, cmp) =
                (a.label(), a.label(), a.label(), a.label(), a.label());
            a.op(LD_ABS, hi(other));
            a.jmp(JEQ_K, 0, n1, fail);
            a.bind(n1);
            le(a, c.arg, c.value, true, fail);
            a.op(LD_ABS, lo(other));
            a.op(TAX, 0);
            a.op(LD_ABS, lo(c.arg));
            a.op(ADD_X, 0);
            a.op(ST, 0);
            // No carry when the low sum is at least the addend.
            a.jmp(JGE_X, 0, sum_hi, carry);
            a.bind(carry);
            a.op(LD_ABS, hi(c.arg));
            a.op(ADD_K, 1);
            a.ja(cmp);
            a.bind(sum_hi);
            a.op(LD_ABS, hi(c.arg));
            a.bind(cmp);
            a.jmp(JGT_K, vhi, fail, n2);
            a.bind(n2);
            let low = a.label();
            a.jmp(JEQ_K, vhi, low, ok);
            a.bind(low);
            a.op(LD_MEM, 0);
            a.jmp(JGT_K, vlo, fail, ok);
        }
    }
    a.bind(ok);
}

/// Emits `arg <= value` (unsigned), failing to `fail`.
fn le(a: &mut Asm, arg: u8, value: u64, qword: bool, fail: Label) {
    let (vlo, vhi) = (value as u32, (value >> 32) as u32);
    let ok = a.label();
    if qword {
        let (n1, low) = (a.label(), a.label());
        a.op(LD_ABS, hi(arg));
        a.jmp(JGT_K, vhi, fail, n1);
        a.bind(n1);
        a.jmp(JEQ_K, vhi, low, ok);
        a.bind(low);
    }
    a.op(LD_ABS, lo(arg));
    a.jmp(JGT_K, vlo, fail, ok);
    a.bind(ok);
}

/// Emits a binary search over the sorted `nrs` (A holds the number):
/// jumps to `blocks[i]` for `nrs[i]`, to `refused` for any other.
fn emit_tree(a: &mut Asm, nrs: &[u32], blocks: &[Label], refused: Label) {
    if nrs.len() <= 3 {
        for (nr, block) in nrs.iter().zip(blocks) {
            let next = a.label();
            a.jmp(JEQ_K, *nr, *block, next);
            a.bind(next);
        }
        a.ja(refused);
        return;
    }
    let mid = nrs.len() / 2;
    let (left, right) = (a.label(), a.label());
    a.jmp(JGE_K, nrs[mid], right, left);
    a.bind(left);
    emit_tree(a, &nrs[..mid], &blocks[..mid], refused);
    a.bind(right);
    emit_tree(a, &nrs[mid..], &blocks[mid..], refused);
}

/// Compiles `rules` into a program that allows a system call when one of
/// its rules holds (an unconditional rule always does) and does `refused`
/// with anything else.
pub fn compile(rules: &[Rule], refused: Refused) -> Result<BpfProgram, SeccompError> {
    let verdict = match refused {
        Refused::KillProcess => RET_KILL_PROCESS,
        Refused::Trap => RET_TRAP,
    };
    // Each call's condition lists; `None` when a rule allows it always.
    let mut calls: BTreeMap<u32, Option<Vec<&[Cond]>>> = BTreeMap::new();
    for rule in rules {
        let nr = u32::try_from(rule.nr)
            .ok()
            .filter(|nr| *nr < X32_SYSCALL_BIT)
            .ok_or(SeccompError::Layout("a system call number out of range"))?;
        for c in &rule.conds {
            let bad = match c.op {
                Op::SumLe { other, .. } => c.value >= 1 << 63 || other > 5,
                _ => false,
            };
            if bad || c.arg > 5 {
                return Err(SeccompError::Layout("a condition out of range"));
            }
        }
        let entry = calls.entry(nr).or_insert_with(|| Some(Vec::new()));
        match (entry, rule.conds.is_empty()) {
            (e, true) => *e = None,
            (Some(list), false) => list.push(&rule.conds),
            (None, false) => {}
        }
    }
    // One block per distinct list of rules.
    let mut a = Asm::default();
    let mut distinct: Vec<(Option<Vec<&[Cond]>>, Label)> = Vec::new();
    let mut nrs = Vec::new();
    let mut blocks = Vec::new();
    for (nr, conds) in calls {
        let block = match distinct.iter().find(|(c, _)| *c == conds) {
            Some((_, l)) => *l,
            None => {
                let l = a.label();
                distinct.push((conds, l));
                l
            }
        };
        nrs.push(nr);
        blocks.push(block);
    }
    let deny = a.label();
    let (arch_ok, not_x32) = (a.label(), a.label());
    a.op(LD_ABS, ARCH);
    a.jmp(JEQ_K, AUDIT_ARCH_X86_64, arch_ok, deny);
    a.bind(arch_ok);
    a.op(LD_ABS, NR);
    a.jmp(JGE_K, X32_SYSCALL_BIT, deny, not_x32);
    a.bind(not_x32);
    emit_tree(&mut a, &nrs, &blocks, deny);
    for (conds, label) in &distinct {
        a.bind(*label);
        for rule in conds.iter().flatten() {
            let next = a.label();
            for c in *rule {
                emit_cond(&mut a, c, next);
            }
            a.op(RET_K, RET_ALLOW);
            a.bind(next);
        }
        if conds.is_some() {
            a.op(RET_K, verdict);
        } else {
            a.op(RET_K, RET_ALLOW);
        }
    }
    a.bind(deny);
    a.op(RET_K, verdict);
    a.assemble()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `program` as a filter in a forked child that then makes system
    /// call `nr` with `args`; the child's wait status.
    fn verdict(program: &BpfProgram, nr: i64, args: [u64; 4]) -> i32 {
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
                libc::syscall(nr, args[0], args[1], args[2], args[3]);
                libc::_exit(0);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            status
        }
    }

    fn allowed(program: &BpfProgram, nr: i64, args: [u64; 4]) -> bool {
        let status = verdict(program, nr, args);
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            return true;
        }
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "status {status:#x}"
        );
        false
    }

    #[test]
    fn comparisons_hold_in_64_bits() {
        // A descriptor of -1 (closed) makes every allowed call fail
        // harmlessly; the filter only looks at the numbers.
        let fd = u64::from(u32::MAX);
        let cap = (5u64 << 32) + 4096;
        let rules = [
            Rule::new(libc::SYS_exit_group, "exit_group", Vec::new()),
            Rule::new(
                libc::SYS_pread64,
                "pread64",
                vec![
                    Cond::eq(0, "fd", fd).dword(),
                    Cond::masked(2, "count", 511, 0),
                    Cond::le(2, "count", 65536),
                    Cond::masked(3, "offset", 511, 0),
                    Cond::sum_le(3, "offset", 2, "count", cap),
                ],
            ),
            Rule::new(
                libc::SYS_getppid,
                "getppid",
                vec![Cond::eq(0, "a", 0x1_0000_0007)],
            ),
        ];
        for refused in [Refused::KillProcess, Refused::Trap] {
            let p = compile(&rules, refused).unwrap();
            let pread =
                |count: u64, offset: u64| allowed(&p, libc::SYS_pread64, [fd, 0, count, offset]);
            assert!(pread(512, 0));
            assert!(pread(65536, cap - 65536));
            assert!(pread(4096, cap - 4096));
            assert!(pread(1024, (5 << 32) - 512), "a carry into the high half");
            assert!(!pread(1024, cap - 512), "past the end");
            assert!(!pread(512, cap), "at the end");
            assert!(!pread(512, u64::MAX - 511), "a wrapping offset");
            assert!(!pread(512 + (1 << 32), 0), "a count over 32 bits");
            assert!(!pread(131072, 0), "over the maximum");
            assert!(!pread(100, 0), "not whole sectors");
            assert!(!pread(512, 100), "an unaligned offset");
            assert!(
                !allowed(&p, libc::SYS_pread64, [3, 0, 512, 0]),
                "another descriptor"
            );
            assert!(allowed(&p, libc::SYS_getppid, [0x1_0000_0007, 0, 0, 0]));
            assert!(!allowed(&p, libc::SYS_getppid, [7, 0, 0, 0]));
            assert!(!allowed(&p, libc::SYS_getppid, [0x2_0000_0007, 0, 0, 0]));
            assert!(!allowed(&p, libc::SYS_getpid, [0; 4]));
        }
    }

    #[test]
    fn many_calls_and_far_jumps_resolve() {
        // 40 calls with 60 rules each: far jumps everywhere, and every
        // rule still reached.
        let nrs: Vec<i64> = (0..40)
            .map(|i| 1000 + i)
            .chain([libc::SYS_getppid, libc::SYS_exit_group])
            .collect();
        let mut rules = Vec::new();
        for nr in &nrs {
            for fd in 0..60u64 {
                rules.push(Rule::new(*nr, "call", vec![Cond::eq(0, "fd", fd)]));
            }
        }
        rules.push(Rule::new(libc::SYS_exit_group, "exit_group", Vec::new()));
        let p = compile(&rules, Refused::Trap).unwrap();
        assert!(p.len() > 256 && p.len() <= MAX_INSNS, "{}", p.len());
        assert!(allowed(&p, libc::SYS_getppid, [59, 0, 0, 0]));
        assert!(allowed(&p, libc::SYS_getppid, [0, 0, 0, 0]));
        assert!(!allowed(&p, libc::SYS_getppid, [60, 0, 0, 0]));
        assert!(!allowed(&p, libc::SYS_getpid, [0, 0, 0, 0]));
    }

    #[test]
    fn too_long_a_filter_is_an_error() {
        let rules: Vec<Rule> = (0..2000u64)
            .map(|fd| Rule::new(libc::SYS_getppid, "getppid", vec![Cond::eq(0, "fd", fd)]))
            .collect();
        assert!(matches!(
            compile(&rules, Refused::Trap),
            Err(SeccompError::TooLong(n)) if n > MAX_INSNS
        ));
    }
}
