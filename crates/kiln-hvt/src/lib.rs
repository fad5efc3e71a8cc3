//! kiln's hvt tender: loads a Solo5 ABI v2 hvt image into a KVM guest and
//! services its hypercalls (spec: Solo5's `hvt_abi.h`, `mft_abi.h`,
//! `elf_abi.h`, via [`kiln_abi`]).
//!
//! What it shares with kiln-spt (command line, module flags, tap and
//! inherited descriptors, image validation, fitting flags to the manifest)
//! is [`kiln_tender`]'s, for the [`kiln_tender::Hvt`] target; this crate
//! holds what is KVM's. Layering, from the bottom:
//!
//! - [`sys`]: every `unsafe` operation (the guest mapping, the KVM memory
//!   slot, `kvm_run`, epoll system calls; POLL timeouts to the nanosecond
//!   with `epoll_pwait2`);
//! - [`guest`]: guest memory and the one checked accessor that turns a guest
//!   address and length into a slice;
//! - [`elf`]: the image validator ([`elf::Image::parse`], kiln-tender's,
//!   also the fuzz target) and the loader into guest memory;
//! - [`module`]: the shape of a tender module, with [`net`] and [`block`]
//!   as Cargo features (default on);
//! - [`boot`]: page tables, GDT, boot info, manifest copy, command line;
//! - [`vm`]: the KVM VM and its vCPU in long mode;
//! - `ring` (with `net`): Solo5's net ring I/O (`HVT_FEATURE_RING_IO`):
//!   the ring in the tender's low memory, the ioeventfd kick and the I/O
//!   thread serving it beside the vCPU through [`guest::SharedGuest`]
//!   (`sys::shared` holds its unsafe accesses);
//! - [`hypercall`]: hypercall dispatch, Solo5's calls and kiln's
//!   NET_EXCHANGE extension (`kiln_abi::hvt_ext`, discovered through a
//!   CPUID leaf the [`vm`] adds; [`NO_EXTENSIONS_ENV`] hides both);
//! - [`stop`]: kiln's STOP extension: STOP_ENABLE, and SIGTERM or SIGINT
//!   turned into a stop request the guest sees at its next wait
//!   ([`kiln_tender::stop`] catches the signals; solo5-hvt's exit 1 for a
//!   guest that did not enable it);
//! - [`seccomp`]: the allow-list applied right before the vCPU loop;
//! - [`paging`]: guest-virtual addresses through the guest's own page
//!   tables, for [`dumpcore`] (`--dumpcore=DIR`: an ELF core file when the
//!   guest aborts or faults) and `gdb` (the Cargo feature `gdb`:
//!   `--gdb[=ADDR:PORT]` and solo5-hvt's `--gdb-port=N`, a gdb remote stub
//!   built on the `gdbstub` crate,
//!   over a `gdb::Guest` so that `gdb_harness` runs it without a VM
//!   for its fuzz target);
//! - [`cli`]: the solo5-hvt-compatible command line;
//! - [`run`]: all of the above in order; `main` only prints its result.
//!
//! `examples/bare-kvm.rs` is the bare KVM baseline that `benches/hvt.rs`
//! reads boot times against (see `docs/benchmarks.md`, section hvt).
#![deny(unsafe_code)]

pub mod boot;
pub mod cli;
pub mod dumpcore;
pub mod elf;
pub mod guest;
pub mod hypercall;
pub mod module;
pub mod paging;
pub mod seccomp;
pub mod stop;
pub mod sys;
pub mod vm;

#[cfg(feature = "block")]
pub mod block;
#[cfg(feature = "gdb")]
pub mod gdb;
#[cfg(feature = "gdb")]
pub mod gdb_harness;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "net")]
pub mod ring;

use std::ffi::OsString;
use std::io::Write;

use kiln_abi::hvt::layout::GUEST_PAGE_SIZE;
use kiln_abi::hvt_ext::{KILN_FEATURE_STOP, KILN_STOP_ENABLE_PORT};
use kiln_abi::status::EXIT_ABORT;
use kiln_tender::devices::{DevicesError, attach_all, wants_help};
use kiln_tender::image::{self, ImageError};
use thiserror::Error;

use crate::cli::{CliError, Command};
use crate::dumpcore::CoreFile;
use crate::elf::Load;
use crate::hypercall::{HypercallError, Outcome};
use crate::module::Module;
use crate::vm::{IoExit, Machine, VmError};

pub use kiln_tender::image::MIN_FREE_MEM;
/// Largest guest memory in MiB (Solo5's solo5-hvt takes up to 4096).
pub const MAX_MEM_MB: u64 = <kiln_tender::Hvt as kiln_tender::Target>::MAX_MEM_MB;

/// Why the tender stopped without a guest exit status.
#[derive(Debug, Error)]
pub enum TenderError {
    /// The command line.
    #[error(transparent)]
    Cli(#[from] CliError),
    /// A debugging flag.
    #[error(transparent)]
    DebugFlag(#[from] cli::DebugFlagError),
    /// `--dumpcore`'s directory.
    #[error(transparent)]
    Dumpcore(#[from] dumpcore::DumpError),
    /// The gdb stub.
    #[cfg(feature = "gdb")]
    #[error(transparent)]
    Gdb(#[from] gdb::GdbError),
    /// `--mem`, or the image read and checked against it.
    #[error(transparent)]
    Image(#[from] ImageError<kiln_tender::Hvt>),
    /// The device flags and the image's manifest do not fit.
    #[error(transparent)]
    Devices(#[from] DevicesError<kiln_tender::Hvt>),
    /// Guest memory setup.
    #[error("cannot set up guest memory")]
    Memory(#[from] guest::GuestMemError),
    /// Low memory setup.
    #[error("cannot set up the guest's boot information")]
    Boot(#[from] boot::BootError),
    /// Setting up the epoll set.
    #[error("cannot set up polling of devices")]
    Epoll(#[source] std::io::Error),
    /// Catching the stop signals.
    #[error("cannot catch SIGTERM and SIGINT")]
    Signals(#[source] std::io::Error),
    /// KVM.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The seccomp filter.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// The net ring (a tender bug, not input: the tender places it).
    #[cfg(feature = "net")]
    #[error("cannot set up the net ring")]
    Ring(#[source] ring::RingError),
    /// Starting the net ring's I/O thread.
    #[cfg(feature = "net")]
    #[error("cannot start the net ring's I/O thread")]
    RingThread(#[source] std::io::Error),
    /// The guest made a bad hypercall.
    #[error("guest stopped: {source}\n{regs}")]
    Hypercall {
        /// The problem.
        source: HypercallError,
        /// Register dump.
        regs: String,
    },
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Print this to stdout and exit 0 (`--help`, `--version`).
    Text(String),
    /// The guest's exit status.
    Status(i32),
}

/// Runs the tender with `args` (without the program name).
pub fn run(args: impl IntoIterator<Item = OsString>) -> Result<Exit, TenderError> {
    let mut modules = module::compiled();
    let (args, solo5_protection) = cli::take_solo5_protection(args.into_iter().collect());
    let (args, debug) = cli::take_debug_flags(args)?;
    let (args, no_net_ring) = cli::take_no_net_ring(args);
    let (args, no_huge_pages) = cli::take_no_huge_pages(args);
    // Without the net module there is no ring to keep back.
    #[cfg(not(feature = "net"))]
    let _ = no_net_ring;
    let config = match cli::parse(args, &mut modules)? {
        Command::Help => return Ok(Exit::Text(cli::usage(&modules))),
        Command::Version => {
            return Ok(Exit::Text(
                kiln_tender::cli::version::<kiln_tender::Hvt, _>(
                    env!("CARGO_PKG_VERSION"),
                    &modules,
                ),
            ));
        }
        Command::Run(c) => c,
    };
    let path = config.kernel.clone();
    // solo5-hvt runs --mem=1 in the smallest guest memory, one 2 MiB page.
    if config.mem_mb == 1 {
        eprintln!("kiln-hvt: warning: --mem=1 rounded up to 2 MiB (the smallest guest memory)");
    }
    let mem_mb = if config.mem_mb == 1 { 2 } else { config.mem_mb };
    image::check_mem::<kiln_tender::Hvt>(mem_mb)?;
    let mut mem_size = mem_mb << 20;
    if mem_size % GUEST_PAGE_SIZE != 0 {
        mem_size -= mem_size % GUEST_PAGE_SIZE;
        eprintln!(
            "kiln-hvt: warning: --mem={} rounded down to {} MiB (a multiple of 2 MiB)",
            config.mem_mb,
            mem_size >> 20
        );
    }

    let data = image::read(&path)?;
    let image = image::parse(&path, &data, config.mem_mb, mem_size)?;

    if !extensions_hidden() {
        for m in modules.iter_mut() {
            m.guest_features(image.kiln_features);
        }
    }
    let attached = attach_all(
        &path,
        &image.manifest,
        &mut modules,
        wants_help(&config.args),
        |m, entry| {
            m.attach(entry.index as u64, entry.name)
                .map(|info| (entry.index, info))
        },
    )?;

    let extensions = if extensions_hidden() {
        0
    } else {
        modules.iter_mut().fold(KILN_FEATURE_STOP, |features, m| {
            features | m.enable_extensions()
        })
    };

    // Solo5's net ring, in the tender's low memory below the image.
    #[cfg(feature = "net")]
    let ring_devices = if no_net_ring || ring::hidden() {
        None
    } else {
        modules.iter().find_map(|m| m.ring_devices())
    };

    let mut mem = guest::GuestMemory::new(mem_size)?;
    if !no_huge_pages {
        mem.advise_huge_pages();
    }
    image.load(&mut mem)?;
    let mut machine = Machine::new(mem, image.entry, extensions)?;
    let tsc_hz = machine.tsc_hz()?;
    #[cfg(feature = "net")]
    let mut ring_kick = match ring_devices {
        Some(devices) => match ring_kick(&machine) {
            Ok(kick) => Some((kick, devices)),
            Err(e) => {
                eprintln!(
                    "kiln-hvt: warning: net ring not offered, the guest uses hypercalls: {}",
                    kiln_tender::chain(&e)
                );
                None
            }
        },
        None => None,
    };
    #[cfg(feature = "net")]
    let ring_gpa = ring_kick.as_ref().map(|_| ring::RING_GPA);
    #[cfg(not(feature = "net"))]
    let ring_gpa = None;
    #[cfg_attr(not(feature = "net"), allow(unused_mut))]
    let mut params = boot::BootParams {
        manifest: image.manifest.bytes(),
        attached: &attached,
        args: &config.args,
        kernel_end: image.kernel_end,
        segments: &image
            .segments
            .iter()
            .map(|s| (s.vaddr..s.vaddr + s.memsz, s.prot))
            .collect::<Vec<_>>(),
        tsc_hz,
        solo5_protection,
        ring: ring_gpa,
    };
    match boot::setup(&mut machine.mem, &params) {
        // The page tables of a very large image leave no room for the
        // ring: the guest does without it.
        #[cfg(feature = "net")]
        Err(boot::BootError::NoRoomForRing) => {
            eprintln!(
                "kiln-hvt: warning: net ring not offered, the guest uses hypercalls: the image's page tables leave no room for it below {:#x}",
                kiln_abi::hvt::HVT_GUEST_MIN_BASE
            );
            ring_kick = None;
            params.ring = None;
            boot::setup(&mut machine.mem, &params)?;
        }
        other => other?,
    }

    let epoll = sys::Epoll::new().map_err(TenderError::Epoll)?;
    sys::minimal_timer_slack().map_err(TenderError::Epoll)?;
    for m in &modules {
        for (fd, handle) in m.poll_fds() {
            epoll.add(fd, handle).map_err(TenderError::Epoll)?;
        }
    }

    // From here SIGTERM and SIGINT end the tender as they end solo5-hvt, or
    // become a stop request once the guest asks for one.
    let stop = if extensions & KILN_FEATURE_STOP != 0 {
        Some(stop::Stop::install(&epoll).map_err(TenderError::Signals)?)
    } else {
        kiln_tender::stop::StopSignals::new()
            .and_then(|s| s.catch(kiln_tender::stop::Fallback::ExitOne))
            .map_err(TenderError::Signals)?;
        None
    };
    let mut module_calls: Vec<_> = modules.iter().flat_map(|m| m.syscalls()).collect();
    if let Some(stop) = &stop {
        module_calls.push(module::FdSyscall {
            nr: libc::SYS_write,
            name: "write",
            fd: stop.event_fd(),
        });
    }

    let core = debug
        .dumpcore
        .as_deref()
        .map(CoreFile::prepare)
        .transpose()?;
    let mut debug_rules = Vec::new();
    if let Some(core) = &core {
        debug_rules.extend(seccomp::dumpcore_rules(core.fds().0));
    }
    // Waits for gdb before the guest runs its first instruction.
    #[cfg(feature = "gdb")]
    let gdb = match debug.gdb {
        Some(addr) => {
            let conn = gdb::Connection::accept(addr, &mut machine)?;
            debug_rules.extend(seccomp::gdb_rules(machine.vcpu_fd(), conn.fd()));
            Some(conn)
        }
        None => None,
    };

    // The ring's I/O thread starts before the filter, which then covers it
    // too: it reads the kick's eventfd (and the halt writes it) besides the
    // taps' reads and writes the net module already allows.
    #[cfg(feature = "net")]
    let ring_thread = match ring_kick {
        Some((kick, devices)) => {
            use std::os::fd::AsRawFd;
            let fd = kick.as_raw_fd();
            for (nr, name) in [(libc::SYS_read, "read"), (libc::SYS_write, "write")] {
                module_calls.push(module::FdSyscall { nr, name, fd });
            }
            let server = ring::Server::new(machine.mem.shared(), ring::RING_GPA, devices)
                .map_err(TenderError::Ring)?;
            Some(ring::spawn(server, std::sync::Arc::new(kick)).map_err(TenderError::RingThread)?)
        }
        None => None,
    };
    let allow = seccomp::Allow {
        vcpu_fd: machine.vcpu_fd(),
        epoll_fd: epoll.raw_fd(),
        timer_fd: epoll.timer_fd(),
        module_calls,
        offloaded_taps: kiln_tender::net::offloaded(),
        tap_guards: kiln_tender::net::guard_fds(),
        debug: debug_rules,
    };
    #[cfg(feature = "net")]
    if ring_thread.is_some() {
        seccomp::apply_all_threads(&allow)?;
    } else {
        seccomp::apply(&allow)?;
    }
    #[cfg(not(feature = "net"))]
    seccomp::apply(&allow)?;

    let mut running = Running {
        machine,
        epoll,
        modules,
        core,
        #[cfg(feature = "net")]
        ring: ring_thread,
        stop,
    };
    #[cfg(feature = "gdb")]
    if let Some(conn) = gdb {
        return gdb::serve(&mut running, conn);
    }
    running.run()
}

/// The guest once it runs: its machine and what serves its hypercalls.
pub struct Running {
    /// The VM.
    pub machine: Machine,
    /// The POLL hypercall's set.
    pub epoll: sys::Epoll,
    /// The device modules.
    pub modules: Vec<Box<dyn Module>>,
    /// The core file to write if the guest fails (`--dumpcore`).
    pub core: Option<CoreFile>,
    /// The net ring's I/O thread, when the ring is offered.
    #[cfg(feature = "net")]
    pub ring: Option<ring::RingThread>,
    /// kiln's STOP extension, when offered.
    pub stop: Option<stop::Stop>,
}

/// What a hypercall left the guest to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Go on.
    Continue,
    /// The guest halted with this status.
    Exit(i32),
}

impl Running {
    /// Runs the guest until it halts.
    pub fn run(&mut self) -> Result<Exit, TenderError> {
        loop {
            let io = self.machine.run().map_err(|e| self.fail(e))?;
            if let Served::Exit(status) = self.serve(io)? {
                return Ok(Exit::Status(status));
            }
        }
    }

    /// Serves the hypercall `io`; an abort prints its message and registers
    /// (and writes the core file).
    pub fn serve(&mut self, io: IoExit) -> Result<Served, TenderError> {
        let data = io.data.get(..io.size).unwrap_or(&io.data);
        if io.port == KILN_STOP_ENABLE_PORT
            && let Some(stop) = self.stop.as_mut()
            && let Ok(value) = <[u8; 4]>::try_from(data)
        {
            let gpa = u64::from(u32::from_le_bytes(value));
            return match stop.enable(gpa, &mut self.machine.mem) {
                Ok(()) => Ok(Served::Continue),
                Err(source) => {
                    let regs = self.machine.register_dump();
                    Err(TenderError::Hypercall { source, regs })
                }
            };
        }
        let outcome = hypercall::dispatch(
            io.port,
            data,
            &mut self.machine.mem,
            &self.epoll,
            &mut self.modules,
        );
        match outcome {
            Ok(Outcome::Continue) => {
                if let Some(stop) = self.stop.as_mut() {
                    stop.deliver(&mut self.machine.mem);
                }
                Ok(Served::Continue)
            }
            Ok(Outcome::Halt { status, cookie }) => {
                // Frames the guest queued on the ring before it halted
                // still leave.
                #[cfg(feature = "net")]
                if let Some(ring) = self.ring.take() {
                    ring.stop();
                }
                let _ = std::io::stdout().flush();
                if status == EXIT_ABORT {
                    let message = if cookie == 0 {
                        "(no message)".to_string()
                    } else {
                        hypercall::abort_message(&self.machine.mem, cookie)
                            .unwrap_or_else(|e| format!("(message unreadable: {e})"))
                    };
                    eprintln!(
                        "kiln-hvt: guest aborted: {message}\n{}",
                        self.machine.register_dump()
                    );
                    self.dump_core();
                }
                Ok(Served::Exit(status))
            }
            Err(source) => {
                let regs = self.machine.register_dump();
                self.dump_core();
                Err(TenderError::Hypercall { source, regs })
            }
        }
    }

    /// The error for a machine that stopped: a guest's fault also writes
    /// the core file.
    pub fn fail(&mut self, e: VmError) -> TenderError {
        if matches!(e, VmError::Guest { .. } | VmError::Internal { .. }) {
            self.dump_core();
        }
        TenderError::Vm(e)
    }

    /// Writes the core file, if asked for, with the registers at the fault
    /// when the guest's exception handler is what stopped.
    fn dump_core(&mut self) {
        let Some(core) = self.core.take() else {
            return;
        };
        let (Ok(r), Ok(s)) = (self.machine.regs(), self.machine.sregs()) else {
            eprintln!("kiln-hvt: no core file: the registers cannot be read");
            return;
        };
        let (regs, signal) = match dumpcore::fault_frame(&self.machine.mem, &r, &s) {
            Some((regs, vector)) => (regs, dumpcore::signal_of(vector)),
            None => (dumpcore::regs_from_vcpu(&r, &s), dumpcore::SIGABRT),
        };
        match core.write(&self.machine.mem, s.cr3, &regs, signal) {
            Ok(path) => eprintln!("kiln-hvt: core file written to {}", path.display()),
            Err(e) => eprintln!("kiln-hvt: {}", kiln_tender::chain(&e)),
        }
    }
}

/// The kick of the net ring: an eventfd KVM signals on a guest's `out` to
/// the kick port.
#[cfg(feature = "net")]
fn ring_kick(machine: &Machine) -> Result<vmm_sys_util::eventfd::EventFd, TenderError> {
    let kick = ring::kick_eventfd().map_err(TenderError::RingThread)?;
    machine.register_kick(&kick, kiln_abi::hvt_ring::HVT_RING_KICK_PIO_BASE)?;
    Ok(kick)
}

/// The environment variable that hides kiln's hvt extensions
/// (`kiln_abi::hvt_ext`) from the guest when set to `1`: no CPUID leaf, no
/// NET_EXCHANGE, exactly the Solo5 hvt ABI. For tests and comparisons.
pub const NO_EXTENSIONS_ENV: &str = "KILN_HVT_NO_EXTENSIONS";

fn extensions_hidden() -> bool {
    std::env::var_os(NO_EXTENSIONS_ENV).is_some_and(|v| v == "1")
}

/// Maps a guest exit status to the tender's process exit code: 0 to 255 as
/// they are, anything else 255.
pub fn exit_code(status: i32) -> u8 {
    kiln_tender::exit_code(status)
}

/// Prints an error and its sources on one line each, as `main` does.
pub fn report(err: &(dyn std::error::Error + 'static)) -> String {
    kiln_tender::report::<kiln_tender::Hvt>(err)
}
