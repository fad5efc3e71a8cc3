//! The seccomp allow-list installed right before the vCPU loop: the system
//! calls the loop, the console and the modules need, each pinned to its
//! descriptor where it takes one. Anything else kills the tender.

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use thiserror::Error;

use crate::module::FdSyscall;

/// Why the filter could not be installed.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// Building the filter failed.
    #[error("cannot build the seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    /// Compiling or installing it failed.
    #[error("cannot install the seccomp filter")]
    Install(#[source] seccompiler::Error),
}

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
    /// Per-module system calls.
    pub module_calls: Vec<FdSyscall>,
}

fn cond(arg: u8, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, value)
        .map_err(SeccompError::Build)
}

fn on_fd(fd: RawFd) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(vec![cond(0, fd as u64)?]).map_err(SeccompError::Build)
}

/// The compiled filter.
pub fn filter(allow: &Allow) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // Unconditional: exit, memory management for the allocator (never
    // executable), signals, clocks.
    for nr in [
        libc::SYS_exit_group,
        libc::SYS_exit,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_clock_gettime,
        libc::SYS_brk,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_futex,
        libc::SYS_close,
    ] {
        rules.insert(nr, Vec::new());
    }
    let no_exec = SeccompCondition::new(
        2,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
        0,
    )
    .map_err(SeccompError::Build)?;
    rules.insert(
        libc::SYS_mmap,
        vec![SeccompRule::new(vec![no_exec]).map_err(SeccompError::Build)?],
    );
    // Closing a descriptor: std checks it is open first (F_GETFD).
    rules.insert(
        libc::SYS_fcntl,
        vec![
            SeccompRule::new(vec![
                SeccompCondition::new(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    libc::F_GETFD as u64,
                )
                .map_err(SeccompError::Build)?,
            ])
            .map_err(SeccompError::Build)?,
        ],
    );
    // Console.
    rules.insert(libc::SYS_write, vec![on_fd(1)?, on_fd(2)?]);
    // The vCPU: run and read registers, nothing else.
    let mut kvm = Vec::new();
    for req in [KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS] {
        kvm.push(
            SeccompRule::new(vec![
                cond(0, allow.vcpu_fd as u64)?,
                SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, req)
                    .map_err(SeccompError::Build)?,
            ])
            .map_err(SeccompError::Build)?,
        );
    }
    rules.insert(libc::SYS_ioctl, kvm);
    // Poll.
    rules.insert(libc::SYS_epoll_wait, vec![on_fd(allow.epoll_fd)?]);
    rules.insert(libc::SYS_epoll_pwait, vec![on_fd(allow.epoll_fd)?]);
    // Modules.
    for call in &allow.module_calls {
        rules.entry(call.nr).or_default().push(on_fd(call.fd)?);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(SeccompError::Build)?;
    BpfProgram::try_from(filter).map_err(SeccompError::Build)
}

/// Installs the filter on the calling thread (the only one).
pub fn apply(allow: &Allow) -> Result<(), SeccompError> {
    let prog = filter(allow)?;
    seccompiler::apply_filter(&prog).map_err(SeccompError::Install)
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

    #[test]
    fn filter_compiles_with_module_calls() {
        let allow = Allow {
            vcpu_fd: 10,
            epoll_fd: 11,
            module_calls: vec![
                FdSyscall {
                    nr: libc::SYS_read,
                    fd: 12,
                },
                FdSyscall {
                    nr: libc::SYS_write,
                    fd: 12,
                },
            ],
        };
        assert!(!filter(&allow).unwrap().is_empty());
    }
}
