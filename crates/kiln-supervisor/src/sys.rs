//! The one place the daemon needs `unsafe`: a `pre_exec` hook that pins
//! the unikernel to its CPU between fork and exec.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `command` pin its process to `cpu` before it executes.
pub fn pin(command: &mut Command, cpu: u32) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu as usize);
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe work is allowed: it makes one system call
    // (sched_setaffinity) on a set built before the fork, and allocates
    // nothing.
    unsafe {
        command.pre_exec(move || {
            rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
        });
    }
}
