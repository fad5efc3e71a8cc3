//! kiln's spt tender: runs a Solo5 ABI v2 spt image as a seccomp-sandboxed
//! process (spec: Solo5's `spt_abi.h`, `mft_abi.h`, `elf_abi.h`, via
//! [`kiln_abi`]).
//!
//! An spt guest is ordinary x86_64 code running in a process of its own:
//! the tender maps guest memory at the addresses the spt ABI fixes (from
//! `SPT_HOST_MEM_BASE`, so that guest addresses are host addresses), loads
//! the image's segments with their page protections, writes the boot info,
//! manifest and command line to low memory, installs a deny-by-default
//! seccomp filter (a refused call ends the guest) and jumps to the entry
//! point. From then on the guest reaches the host only through the system
//! calls the filter allows, on the descriptors the boot info and manifest
//! name; there are no hypercalls.
//!
//! The tender checks the image, attaches the devices and builds the boot
//! data and the filter, then forks: the child maps and loads guest memory,
//! installs its fatal-signal handler and the filter, and becomes the guest
//! (no exec); the parent only waits for it and reports how it ended (a
//! forbidden system call, a fault) from what the guest process's handler
//! wrote to a shared page, see [`supervise`]. The exit status is the
//! guest's; when the guest was killed (a forbidden system call, a fault, a
//! signal from outside) the tender prints the report and then ends by that
//! same signal, as solo5-spt's process (which is the guest) does: a shell
//! sees 159 for SIGSYS, 139 for SIGSEGV; 1 when the tender could not start
//! it.
//!
//! What it shares with kiln-hvt (command line, module flags, tap and
//! inherited descriptors, image validation, fitting flags to the manifest)
//! is [`kiln_tender`]'s, for the [`kiln_tender::Spt`] target. Layering,
//! from the bottom:
//!
//! - [`sys`]: every `unsafe` operation (the fixed mapping, mprotect,
//!   epoll, timerfd, fork, the fatal-signal handler and its report page,
//!   the jump into the guest);
//! - [`guest`]: guest memory and the one checked accessor;
//! - [`elf`]: the pure image validator ([`elf::Image::parse`], kiln-tender's,
//!   also the fuzz target);
//! - [`seccomp`]: the guest's filter rules, as kiln-tender's rule data;
//! - [`module`]: the shape of a tender module, with [`net`] and [`block`]
//!   as Cargo features (default on), each contributing its rules;
//! - [`boot`]: the boot info, manifest copy and command line;
//! - [`supervise`]: the parent's wait and the explanation of a death;
//!   the parent also turns SIGTERM and SIGINT into kiln's stop request
//!   (`kiln_abi::spt_ext`, [`kiln_tender::stop`]) for a guest that
//!   acknowledged it, and otherwise ends by them as solo5-spt does;
//! - [`dumpcore`]: `--dumpcore=DIR`, the core file of a guest that
//!   aborted, faulted or made a forbidden call, from guest memory kept in a
//!   memory file and the registers the handler recorded;
//! - [`cli`]: the solo5-spt-compatible command line;
//! - [`run`]: all of the above in order; `main` only prints its result.
#![deny(unsafe_code)]

pub mod boot;
pub mod cli;
pub mod dumpcore;
pub mod elf;
pub mod guest;
pub mod module;
pub mod seccomp;
pub mod supervise;
pub mod sys;

#[cfg(feature = "block")]
pub mod block;
#[cfg(feature = "net")]
pub mod net;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use kiln_abi::spt::{SPT_BOOT_INFO_BASE, SPT_INTERNAL_TIMERFD};
use kiln_abi::spt_ext::{KILN_SPT_STOP_EVENT, KILN_STOP_ACK};
use kiln_tender::devices::{DevicesError, attach_all, wants_help};
use kiln_tender::image::{self, ImageError};
use kiln_tender::stop::{Fallback, StopSignals, register_once};
use thiserror::Error;

use crate::cli::{CliError, Command};
use crate::dumpcore::{CoreFile, MemoryFile};
use crate::elf::Image;
use crate::module::{Attached, Module};
use crate::seccomp::Rule;
use crate::supervise::{Death, signal_name, syscall_name};

pub use kiln_tender::image::MIN_FREE_MEM;
/// The environment variable that hides kiln's spt extensions (STOP and
/// the virtio-net header) when set to `1`, as `KILN_HVT_NO_EXTENSIONS`
/// does for kiln-hvt: the guest then sees exactly Solo5's spt ABI.
pub const NO_EXTENSIONS_ENV: &str = "KILN_SPT_NO_EXTENSIONS";

/// Whether kiln's extensions are hidden ([`NO_EXTENSIONS_ENV`]).
fn extensions_hidden() -> bool {
    std::env::var_os(NO_EXTENSIONS_ENV).is_some_and(|v| v == "1")
}

/// Largest guest memory in MiB.
pub const MAX_MEM_MB: u64 = <kiln_tender::Spt as kiln_tender::Target>::MAX_MEM_MB;
/// The exit code used when the tender cannot end by the guest's signal
/// (it always can on Linux; this is the fallback after `kill` returns).
pub const KILLED_STATUS: i32 = 255;

/// Why the tender stopped without a guest exit status.
#[derive(Debug, Error)]
pub enum TenderError {
    /// The command line.
    #[error(transparent)]
    Cli(#[from] CliError),
    /// `--mem`, or the image read and checked against it.
    #[error(transparent)]
    Image(#[from] ImageError<kiln_tender::Spt>),
    /// The device flags and the image's manifest do not fit.
    #[error(transparent)]
    Devices(#[from] DevicesError<kiln_tender::Spt>),
    /// Low memory setup.
    #[error("cannot set up the guest's boot information")]
    Boot(#[from] boot::BootError),
    /// Setting up the epoll set or the timer.
    #[error("cannot set up the guest's epoll set and timer")]
    Epoll(#[source] std::io::Error),
    /// The seccomp filter.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// The stop request's event or signal handlers.
    #[error("cannot set up the stop request (SIGTERM, SIGINT)")]
    Signals(#[source] std::io::Error),
    /// Forking or waiting for the guest.
    #[error("cannot run the guest process")]
    Process(#[source] std::io::Error),
    /// Readable memory would be executable.
    #[error(
        "this process runs with the READ_IMPLIES_EXEC personality, which would make the guest's data executable; hint: do not start kiln-spt under `setarch -X`"
    )]
    ReadImpliesExec,
    /// `--dumpcore` without a directory.
    #[error(transparent)]
    DumpcoreFlag(#[from] cli::DumpcoreDirMissing),
    /// `--dumpcore`'s directory or memory file.
    #[error(transparent)]
    Dumpcore(#[from] kiln_tender::dumpcore::DumpError),
    /// The memory file `--dumpcore` keeps guest memory in.
    #[error("--dumpcore: cannot create the guest's memory file")]
    MemoryFile(#[source] std::io::Error),
    /// The child failed before entering the guest.
    #[error("cannot start the guest: {0}")]
    Setup(String),
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Print this to stdout and exit 0 (`--help`, `--version`).
    Text(String),
    /// The guest's exit status.
    Status(i32),
    /// The guest was killed by this signal: print nothing more and end by
    /// it ([`sys::die_by_signal`]), as solo5-spt does.
    Killed(i32),
}

/// The signal that ended the guest, which the tender ends by in turn.
pub fn death_signal(death: &Death) -> Option<i32> {
    match *death {
        Death::Exited(_) => None,
        Death::Seccomp { .. } => Some(libc::SIGSYS),
        Death::Fault { signal, .. } | Death::Signal(signal) => Some(signal),
    }
}

/// Every rule of the guest's filter: the core rules, then each module's.
pub fn guest_rules(epoll_fd: RawFd, timer_fd: RawFd, modules: &[Box<dyn Module>]) -> Vec<Rule> {
    let mut rules = seccomp::core_rules(epoll_fd, timer_fd);
    for m in modules {
        rules.extend(m.rules());
    }
    rules
}

/// Explains how the guest ended, or `None` for a plain exit.
pub fn explain(death: &Death) -> Option<String> {
    match *death {
        Death::Exited(_) => None,
        Death::Seccomp { nr, rip } => {
            let call = match nr {
                Some(nr) => format!(
                    "forbidden system call {nr} ({})",
                    syscall_name(nr).unwrap_or("unknown")
                ),
                None => "forbidden system call (number unknown)".into(),
            };
            let at = rip.map_or(String::new(), |r| format!(" at rip {r:#x}"));
            Some(format!("guest killed by seccomp: {call}{at}"))
        }
        Death::Fault { signal, addr, rip } => {
            let addr = addr.map_or("an unknown address".into(), |a| format!("{a:#x}"));
            let rip = rip.map_or(String::new(), |r| format!(" (rip {r:#x})"));
            Some(format!(
                "guest crashed: {} at {addr}{rip}",
                signal_name(signal)
            ))
        }
        Death::Signal(signal) => Some(format!("guest killed by {}", signal_name(signal))),
    }
}

/// Runs the tender with `args` (without the program name).
pub fn run(args: impl IntoIterator<Item = OsString>) -> Result<Exit, TenderError> {
    let mut modules = module::compiled();
    let (args, gdb) = cli::take_gdb(args.into_iter().collect());
    let (args, dumpcore) = cli::take_dumpcore(args)?;
    let (args, exec_heap) = cli::take_x_exec_heap(args);
    let config = match cli::parse(args, &mut modules)? {
        Command::Help => return Ok(Exit::Text(cli::usage(&modules))),
        Command::Version => {
            return Ok(Exit::Text(
                kiln_tender::cli::version::<kiln_tender::Spt, _>(
                    env!("CARGO_PKG_VERSION"),
                    &modules,
                ),
            ));
        }
        Command::Run(c) => c,
    };
    let path = config.kernel.clone();
    if exec_heap {
        eprintln!("kiln-spt: {}", cli::X_EXEC_HEAP_WARNING);
    }
    if sys::read_implies_exec() {
        return Err(TenderError::ReadImpliesExec);
    }
    image::check_mem::<kiln_tender::Spt>(config.mem_mb)?;
    let mem_size = config.mem_mb << 20;

    let data = image::read(&path)?;
    let image = image::parse(&path, &data, config.mem_mb, mem_size)?;

    let extensions = !extensions_hidden();
    if extensions {
        for m in modules.iter_mut() {
            m.guest_features(image.kiln_features);
        }
    }
    let mut attached: Vec<Attached> = attach_all(
        &path,
        &image.manifest,
        &mut modules,
        wants_help(&config.args),
        |m, entry| m.attach(entry.index as u64, entry.name),
    )?;

    let mut features = 0;
    if extensions {
        for m in modules.iter_mut() {
            features |= m.settle_features();
            // A device a module reopened has a new descriptor.
            for (fd, handle) in m.poll_fds() {
                if let Some(a) = attached.iter_mut().find(|a| a.handle == handle) {
                    a.fd = fd.as_raw_fd();
                }
            }
        }
    }
    let epoll = sys::epoll_create().map_err(TenderError::Epoll)?;
    let timer = sys::timerfd_create().map_err(TenderError::Epoll)?;
    sys::epoll_add(epoll.as_fd(), timer.as_fd(), SPT_INTERNAL_TIMERFD)
        .map_err(TenderError::Epoll)?;
    for m in &modules {
        for (fd, handle) in m.poll_fds() {
            sys::epoll_add(epoll.as_fd(), fd, handle).map_err(TenderError::Epoll)?;
        }
    }
    // kiln's stop request: an event in the guest's set that stays silent
    // unless the guest acknowledged it in the shared page and a stop signal
    // came (the child does not keep the eventfd: the tender writes it).
    let stop = StopSignals::new().map_err(TenderError::Signals)?;
    register_once(epoll.as_fd(), stop.event(), KILN_SPT_STOP_EVENT)
        .map_err(TenderError::Signals)?;
    let page = sys::ReportPage::new().map_err(TenderError::Process)?;
    let low = boot::low_memory(&boot::BootParams {
        manifest: image.manifest.bytes(),
        attached: &attached,
        args: &config.args,
        mem_size,
        kernel_end: image.kernel_end,
        epoll_fd: epoll.as_raw_fd(),
        timer_fd: timer.as_raw_fd(),
        stop_ack: if extensions {
            page.stop_ack() as u64
        } else {
            0
        },
        features,
    })?;
    let mut rules = guest_rules(epoll.as_raw_fd(), timer.as_raw_fd(), &modules);
    // The core file is created (and DIR checked) before the guest runs;
    // guest memory then lives in a memory file the tender keeps.
    let core = match &dumpcore {
        Some(dir) => {
            let file = CoreFile::prepare(dir)?;
            let mem = MemoryFile::new(mem_size).map_err(TenderError::MemoryFile)?;
            seccomp::trap_aborts(&mut rules);
            Some((file, mem))
        }
        None => None,
    };
    let program = seccomp::compile(&rules)?;

    let (errors_in, errors_out) = sys::pipe().map_err(TenderError::Process)?;
    let parent = std::process::id() as libc::pid_t;
    // As solo5-spt (no handler: the signal ends it) until the guest
    // acknowledges; then the first signal is a stop request. Caught before
    // the fork, so that no signal finds the tender without its handler once
    // the guest runs; the child gets the default action back.
    page.watch_stop_ack(KILN_STOP_ACK);
    stop.catch(Fallback::Default)
        .map_err(TenderError::Signals)?;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // The child starts on this CPU, which the parent leaves for it when it
    // waits; each side then lets itself run anywhere again.
    let cpus = sys::pin_to_this_cpu();
    let forked = sys::fork();
    if let Some(cpus) = &cpus {
        sys::unpin(cpus);
    }
    match forked.map_err(TenderError::Process)? {
        sys::Fork::Child => {
            drop(errors_in);
            let mut keep = vec![epoll.as_raw_fd(), timer.as_raw_fd(), errors_out.as_raw_fd()];
            keep.extend(attached.iter().map(|a| a.fd));
            let mem_file = core.as_ref().map(|(_, mem)| mem.fd());
            keep.extend(mem_file);
            let why = enter_guest(
                &image,
                &low,
                mem_size,
                mem_file,
                &program,
                &keep,
                &page,
                parent,
                gdb.then_some(path.as_path()),
                exec_heap,
            );
            let mut out = std::fs::File::from(errors_out);
            let _ = out.write_all(why.as_bytes());
            sys::exit_now(1)
        }
        sys::Fork::Parent(pid) => {
            drop(errors_out);
            let (death, killed) = supervise::supervise(pid, &page).map_err(TenderError::Process)?;
            // Why the child could not enter the guest, if it could not.
            let mut why = Vec::new();
            std::fs::File::from(errors_in)
                .read_to_end(&mut why)
                .map_err(TenderError::Process)?;
            if !why.is_empty() {
                return Err(TenderError::Setup(
                    String::from_utf8_lossy(&why).into_owned(),
                ));
            }
            if let Some(message) = explain(&death) {
                eprintln!("kiln-spt: {message}");
            }
            if let Some((file, mem)) = core
                && dumpcore::signal_for(&death).is_some()
            {
                let segments = dumpcore::segments(
                    &image,
                    dumpcore::low_end(SPT_BOOT_INFO_BASE, &low),
                    mem_size,
                );
                // The handler's record, believed only when a signal killed
                // the guest (as `supervise` does).
                let record = if killed { page.read() } else { None };
                match file.write(&death, record.as_ref(), pid as u32, &segments, &mem) {
                    Ok(path) => eprintln!("kiln-spt: core file written to {}", path.display()),
                    Err(e) => eprintln!("kiln-spt: {}", kiln_tender::chain(&e)),
                }
            }
            Ok(match (death, death_signal(&death)) {
                (Death::Exited(code), _) => Exit::Status(code),
                (_, Some(signal)) => Exit::Killed(signal),
                (_, None) => Exit::Status(KILLED_STATUS),
            })
        }
    }
}

/// In the child: becomes the guest, or returns why it could not. With
/// `gdb` (the image's path), once guest memory is loaded and its handlers
/// are installed, just before the filter, it prints its pid and the
/// command that attaches gdb, and waits until a debugger traces it. With
/// `exec_heap` (`--x-exec-heap`) its heap and stack are executable.
#[allow(clippy::too_many_arguments)]
fn enter_guest(
    image: &Image<'_>,
    low: &[u8],
    mem_size: u64,
    mem_file: Option<RawFd>,
    program: &seccompiler::BpfProgram,
    keep: &[RawFd],
    page: &sys::ReportPage,
    parent: libc::pid_t,
    gdb: Option<&std::path::Path>,
    exec_heap: bool,
) -> String {
    if let Err(e) = sys::die_with_parent(parent) {
        return format!("cannot tie the guest to the tender: {e}");
    }
    if let Err(e) = kiln_tender::stop::restore_default() {
        return format!("cannot restore the guest's signal actions: {e}");
    }
    sys::close_other_fds(keep);
    let mut mem = match guest::GuestMemory::new(mem_size, mem_file) {
        Ok(mem) => mem,
        Err(e) => return kiln_tender::chain(&e),
    };
    // The mapping keeps the memory file; the guest gets no descriptor of it.
    if let Some(fd) = mem_file {
        sys::close(fd);
    }
    if let Err(e) = mem.load(image, low, SPT_BOOT_INFO_BASE, exec_heap) {
        return kiln_tender::chain(&e);
    }
    // `mem` is never unmapped (GuestMemory has no Drop, and `jump` does
    // not return): this process becomes the guest.
    if let Err(e) = sys::install_fatal_handlers(page) {
        return format!("cannot install the guest's signal handlers: {e}");
    }
    if let Some(image) = gdb {
        let pid = std::process::id();
        // gdb may run elsewhere: the image's absolute path.
        let image = std::fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
        eprintln!(
            "kiln-spt: guest process {pid} waits for gdb before its first instruction; attach with: gdb -p {pid} {} (then set breakpoints and `continue`)",
            image.display()
        );
        if let Err(e) = sys::wait_for_tracer() {
            return format!("cannot wait for gdb: {e}");
        }
    }
    if let Err(e) = seccomp::install(program) {
        return kiln_tender::chain(&e);
    }
    jump(image.entry, mem_size)
}

/// Enters the loaded guest at `entry` with the stack at the top of its
/// `mem_size` bytes and the boot info's address as its argument.
#[allow(unsafe_code)]
fn jump(entry: u64, mem_size: u64) -> ! {
    // SAFETY: only called by `enter_guest` after `load` succeeded: the
    // entry point lies in an executable segment (checked by `Image::parse`)
    // that `load` mapped R+X; the stack top is inside the read-write guest
    // memory; x86_64 expects RSP + 8 aligned to 16 at entry, as after a
    // call (Solo5 starts spt guests at mem_size - 8).
    unsafe { sys::launch(entry, mem_size - 8, SPT_BOOT_INFO_BASE) }
}

/// Maps a guest exit status to the tender's process exit code: 0 to 255 as
/// they are, anything else 255.
pub fn exit_code(status: i32) -> u8 {
    kiln_tender::exit_code(status)
}

/// Prints an error and its sources on one line each, as `main` does.
pub fn report(err: &(dyn std::error::Error + 'static)) -> String {
    kiln_tender::report::<kiln_tender::Spt>(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_explained() {
        assert_eq!(explain(&Death::Exited(3)), None);
        assert_eq!(
            explain(&Death::Seccomp {
                nr: Some(39),
                rip: Some(0x10_0c59)
            })
            .unwrap(),
            "guest killed by seccomp: forbidden system call 39 (getpid) at rip 0x100c59"
        );
        assert!(
            explain(&Death::Seccomp {
                nr: None,
                rip: None
            })
            .unwrap()
            .contains("number unknown")
        );
        assert_eq!(
            explain(&Death::Fault {
                signal: libc::SIGSEGV,
                addr: Some(0),
                rip: Some(0x10_11ca)
            })
            .unwrap(),
            "guest crashed: SIGSEGV at 0x0 (rip 0x1011ca)"
        );
        assert_eq!(
            explain(&Death::Signal(libc::SIGTERM)).unwrap(),
            "guest killed by SIGTERM"
        );
    }

    #[test]
    fn a_killed_guest_ends_the_tender_by_its_signal() {
        assert_eq!(death_signal(&Death::Exited(3)), None);
        let seccomp = Death::Seccomp {
            nr: None,
            rip: None,
        };
        assert_eq!(death_signal(&seccomp), Some(libc::SIGSYS));
        let fault = Death::Fault {
            signal: libc::SIGSEGV,
            addr: None,
            rip: None,
        };
        assert_eq!(death_signal(&fault), Some(libc::SIGSEGV));
        assert_eq!(
            death_signal(&Death::Signal(libc::SIGTERM)),
            Some(libc::SIGTERM)
        );
    }

    #[test]
    fn exit_codes_saturate() {
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(255), 255);
        assert_eq!(exit_code(256), 255);
        assert_eq!(exit_code(-1), 255);
    }
}
