//! kiln-solo5: the freestanding kiln platform for the Solo5 hvt and spt
//! targets. A kiln unikernel built for either is a static x86_64 ELF for
//! `x86_64-unknown-none` (no C, no libc, no SSE). On hvt it runs as a KVM
//! guest under a tender speaking the Solo5 hvt ABI version 2 (`kiln-hvt`);
//! with this crate's `spt` feature it runs as a seccomp-sandboxed process
//! under a tender speaking the spt ABI version 2 (`kiln-spt`).
//!
//! This crate boots the guest, provides the heap, implements the
//! `kiln_devices` traits over the target's host interface, and implements
//! [`kiln_rt::Platform`] with one blocking point: the POLL hypercall on
//! hvt, `epoll_pwait` on the boot info's epoll set on spt. On hvt it also
//! owns the CPU and page tables.
//!
//! Under kiln-hvt, which offers kiln's extension to the hvt ABI
//! (`kiln_abi::hvt_ext`, found at boot through a CPUID leaf), the first
//! network device queues the frames it sends and serves frames received
//! from a cache, and the blocking point is one NET_EXCHANGE hypercall that
//! sends the queue, refills the cache and waits like POLL: one VM exit per
//! exchange of packets instead of one per frame and one per wait. Under a
//! tender without it (Solo5's `solo5-hvt`) the standard hypercalls are
//! used, unchanged.
//!
//! # Layers, from the bottom
//!
//! - `sys` (only for `target_os = "none"`, the only module with `unsafe`):
//!   single instructions (`rdtsc`, `rdrand`, `cpuid`); `sys::host`, the
//!   one layer that differs per target, with the same functions on both:
//!   the hypercalls on hvt, raw system calls on spt (no libc); on hvt the
//!   GDT/TSS/IDT and exception stubs and kiln's page tables (null page and
//!   stack guard unmapped, W^X); the `talc` heap as the global allocator;
//!   the clocks' state; and `_start` with each target's boot sequence;
//! - [`layout`], [`time`], [`outcome`], [`reactor`], [`exchange`],
//!   [`block_queue`], [`trap`], [`split`], [`console`]: the logic those use,
//!   target-independent and unit-tested on the host: the memory map and
//!   page protections, TSC-to-nanosecond scaling, hypercall results,
//!   readiness between waits (no read unless the last wait reported the
//!   handle), the TX queue and RX cache of kiln's NET_EXCHANGE extension,
//!   the request queue of its BLOCK_EXCHANGE extension,
//!   exception reports, how spt block requests are cut to the lengths the
//!   tender's filter allows, buffered console output;
//! - the devices (built for `x86_64-unknown-none` only): `Console`,
//!   `MonotonicClock`, `WallClock`, `Random`, `Net`, `Block`, `Shutdown`
//!   (kiln's stop request: SIGTERM to kiln-hvt or kiln-spt, seen at the
//!   next wait), and the `Platform`;
//! - [`mod@env`]: the [`Env`] a unikernel starts with (arguments, devices by
//!   name), [`main!`] and `exit`, the panic handler.
//!
//! # Boot
//!
//! The tender enters `_start` in 64-bit mode with RDI = the boot info's
//! address and RSP at the top of guest memory. kiln then loads its own
//! GDT, TSS (exceptions run on their own IST stack) and IDT (every
//! exception prints its name, error code, CR2 and a register dump, then
//! aborts with status 255); replaces the tender's page tables with its own
//! (page 0 and a page below the 1 MiB stack unmapped; text R+X, rodata R,
//! everything else R+W and no-execute; CR0.WP and EFER.NXE on); gives the
//! memory between the image and the stack to the heap; starts the clocks
//! (TSC at boot, the WALLTIME hypercall once); copies the command line and
//! the tender's manifest; and calls the generated crate's `run` through
//! [`main!`]. Its [`ExitStatus`] becomes the
//! HALT status, after `error: MESSAGE` when it has one. A panic prints
//! `kiln: panicked at FILE:LINE:COL: MESSAGE` and aborts (status 255).
//!
//! On spt the tender maps the image itself, with each segment's page
//! protection and the null page unmapped, and enters `_start` with RDI =
//! the boot info and RSP just below the top of guest memory. kiln-solo5
//! then only gives the memory between the image and the 1 MiB stack to the
//! heap (there is no guard page: the filter allows no `mprotect`), starts
//! the monotonic clock (`clock_gettime`), records the epoll and timer
//! descriptors and each attached device's host descriptor (`b.hostfd`),
//! and calls `run` as on hvt. Exit is `exit_group`. A fault kills the
//! process with a signal, and kiln-spt reports it.
//!
//! # What a generated crate contains
//!
//! `Cargo.toml` (its own workspace):
//!
//! ```toml
//! [package]
//! name = "hello-hvt"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [workspace]
//!
//! [dependencies]
//! kiln-solo5 = { path = ".../crates/kiln-solo5" }
//! kiln-abi = { path = ".../crates/kiln-abi" }
//! kiln-rt = { path = ".../crates/kiln-rt" }
//! kiln-devices = { path = ".../crates/kiln-devices" }
//! unikernel = { package = "hello", path = "../.." }
//!
//! [profile.release]
//! opt-level = "s"
//! lto = true
//! codegen-units = 1
//! panic = "abort"
//!
//! [profile.dev]
//! panic = "abort"
//! ```
//!
//! `build.rs`, which links with kiln's linker script (published by this
//! crate's build script as `DEP_KILN_SOLO5_LDSCRIPT`) into a static,
//! non-PIE executable:
//!
//! ```no_run
//! # #![allow(clippy::needless_doctest_main)]
//! fn main() {
//!     if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
//!         let script = std::env::var("DEP_KILN_SOLO5_LDSCRIPT").expect("kiln-solo5 is a dependency");
//!         println!("cargo:rustc-link-arg-bins=-T{script}");
//!         println!("cargo:rustc-link-arg-bins=--no-pie");
//!         println!("cargo:rerun-if-env-changed=DEP_KILN_SOLO5_LDSCRIPT");
//!     }
//! }
//! ```
//!
//! `src/main.rs`, built with `cargo build --release --target
//! x86_64-unknown-none`. Device flags (`--net:NAME=...`, `--block:...`) go
//! to the tender, so the guest's argument spec lists no devices; the
//! devices are looked up by manifest name:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//!
//! extern crate alloc;
//!
//! use alloc::string::ToString;
//! use kiln_devices::{ExitStatus, Termination};
//! use kiln_rt::args;
//!
//! // The two Solo5 notes: the tender refuses an image without them. The
//! // manifest lists the net and block devices, in unikernel.toml order.
//! #[unsafe(link_section = ".note.solo5.abi")]
//! #[used]
//! static ABI: kiln_abi::AbiNote = kiln_abi::AbiNote::hvt();
//!
//! #[unsafe(link_section = ".note.solo5.manifest")]
//! #[used]
//! static MFT: kiln_abi::MftNote<1> = kiln_abi::MftNote::new([kiln_abi::MftEntry::net("service")]);
//!
//! static SPEC: args::Spec = args::Spec { /* the runtime arguments */ devices: &[], .. };
//!
//! /// Exits with `code` after printing `error: {message}`.
//! fn fail(code: u8, message: impl core::fmt::Display) -> ! {
//!     kiln_solo5::exit(ExitStatus { code, message: Some(message.to_string()) })
//! }
//!
//! fn run(env: &'static kiln_solo5::Env) -> ExitStatus {
//!     let argv = env.args().unwrap_or_else(|e| fail(64, e));
//!     let parsed = match args::parse(&SPEC, argv.iter().copied()) {
//!         Ok(args::Outcome::Run(parsed)) => parsed,
//!         Ok(args::Outcome::Help) => {
//!             use kiln_devices::Console as _;
//!             let _ = env.console().write(args::usage(&SPEC).as_bytes());
//!             return ExitStatus::SUCCESS;
//!         }
//!         Err(e) => fail(2, e),
//!     };
//!     let arg_times: u32 = parsed.take(0).unwrap_or_else(|e| fail(2, e));
//!     let dev_console = env.console();
//!     let dev_service = env.net("service").unwrap_or_else(|e| fail(1, e));
//!     kiln_rt::block_on(env.platform(), unikernel::start(dev_console, kiln_rt::Timer, dev_service, arg_times))
//!         .exit_status()
//! }
//!
//! kiln_solo5::main!(run);
//! ```
//!
//! The other devices: `env.clock()`, `env.wall_clock()`, `env.random()`,
//! `env.block("NAME")`, and `kiln_rt::Timer` for `sleep`.
//! A manifest with no devices is `kiln_abi::MftNote<0>` with `new([])`.
//! `tests/hello-hvt-handmade` is a complete hand-written example of such a
//! crate (a hello binary and a `devices` binary with a network interface
//! and a block device); `tests/hvt.rs` builds it and runs it under
//! `kiln-hvt`.
//!
//! # What a generated spt crate contains
//!
//! The same three files as for hvt, with two differences:
//!
//! - `Cargo.toml` turns on kiln-solo5's `spt` feature:
//!   `kiln-solo5 = { path = ".../crates/kiln-solo5", features = ["spt"] }`
//!   (the package name conventionally ends in `-spt`);
//! - `src/main.rs` emits the spt ABI note:
//!   `static ABI: kiln_abi::AbiNote = kiln_abi::AbiNote::spt();`.
//!
//! `build.rs`, the manifest note, argument parsing, the devices
//! (`env.console()`, `env.net("NAME")`, `env.block("NAME")`, ...) and
//! `kiln_solo5::main!(run)` are unchanged; the image is built the same way
//! (`cargo build --release --target x86_64-unknown-none`) and runs as
//! `kiln-spt [--mem=MB] [--net:NAME=IFACE|@FD] [--block:NAME=PATH] IMAGE
//! ARGS...`. `tests/hello-spt-handmade` builds the hvt stand-in's sources
//! this way; `tests/spt.rs` runs them under `kiln-spt`.
//!
//! The image this produces (check with `readelf -lnS`): `ET_EXEC`, entry
//! `_start` at 0x100000, three `PT_LOAD` segments (R+X text, R rodata with
//! the notes, R+W data and bss), one `PT_NOTE` per Solo5 note.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

// The boot code, CPU tables, hypercalls and system calls are x86_64's; the
// Solo5 ABI's aarch64 flavour is not implemented.
#[cfg(not(target_arch = "x86_64"))]
compile_error!("kiln-solo5 supports x86_64 only (hvt and spt on x86_64-unknown-none)");
// An spt image makes Linux system calls; built for the host it would be a
// program of its own kind, which nothing runs.
#[cfg(all(feature = "spt", not(any(target_os = "none", test))))]
compile_error!("the spt feature builds kiln-solo5 for x86_64-unknown-none (kiln build -t spt)");

pub mod block_queue;
pub mod console;
pub mod env;
pub mod exchange;
pub use kiln_x86::layout;
pub mod outcome;
pub mod reactor;
pub mod split;
pub mod time;
pub use kiln_x86::trap;

#[cfg(target_os = "none")]
mod block;
#[cfg(target_os = "none")]
mod net;
#[cfg(target_os = "none")]
mod platform;
#[cfg(target_os = "none")]
mod shutdown;
#[cfg(target_os = "none")]
mod sys;

#[cfg(target_os = "none")]
pub use block::Block;
#[cfg(target_os = "none")]
pub use console::Console;
pub use env::{DeviceError, Env};
pub use kiln_devices::ExitStatus;
#[cfg(target_os = "none")]
pub use kiln_x86::random::Random;
#[cfg(target_os = "none")]
pub use net::Net;
#[cfg(target_os = "none")]
pub use platform::{FOREVER_NANOS, Platform, platform};
#[cfg(target_os = "none")]
pub use shutdown::Shutdown;
#[cfg(target_os = "none")]
pub use time::{MonotonicClock, WallClock};

/// The panic handler: `kiln: panicked at FILE:LINE:COL: MESSAGE` on the
/// console, then the abort status (kiln-x86's report).
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    kiln_x86::panic::report(info, sys::host::puts, sys::host::abort)
}

/// The heap's size and the bytes allocated now and at most (boot
/// information, and the `kiln_heap_*` metrics registered at boot).
#[cfg(target_os = "none")]
pub fn heap_stats() -> kiln_x86::heap::HeapStats {
    sys::heap::stats()
}

/// Sends the frames still queued for NET_EXCHANGE, prints `error: MESSAGE`
/// if `status` has a message, then halts the guest with its code.
#[cfg(target_os = "none")]
pub fn exit(status: ExitStatus) -> ! {
    platform::flush();
    if let Some(message) = &status.message {
        use kiln_devices::Console as _;
        let _ = Console::new().logf(format_args!("error: {message}"));
    }
    sys::host::halt(i32::from(status.code), None)
}

/// Declares the unikernel's entry: `kiln_solo5::main!(run)` with
/// `fn run(env: &'static kiln_solo5::Env) -> kiln_solo5::ExitStatus`.
/// kiln-solo5's boot code calls it once the platform is up and halts with
/// the status it returns.
#[macro_export]
macro_rules! main {
    ($run:path) => {
        #[unsafe(export_name = "kiln_solo5_main")]
        fn __kiln_solo5_main(env: &'static $crate::Env) -> $crate::ExitStatus {
            $run(env)
        }
    };
}
