//! hello on hvt (or spt, with the `spt` feature), written by hand the way
//! `kiln configure` will generate it: the Solo5 notes, argument parsing,
//! device construction and `block_on` of the entry function.
//!
//! Runtime arguments: `--times N` (hello lines, default 3), `--pause MS`
//! (sleep that long first), and, to test
//! the platform, `--exit N` (exit with N), `--fail` (return an error),
//! `--panic`, `--null-write`, `--ro-write`, `--exec-data`,
//! `--stack-overflow`, `--oom`, `--getpid` (a raw system call the spt
//! filter forbids), and `--devices` (prints the wall clock, the time a
//! 50 ms sleep took, and whether the random device works).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::time::Duration;

use kiln_devices::{Console, ConsoleError, ExitStatus, Sleep, Termination};

mod abi_note;

#[unsafe(link_section = ".note.solo5.manifest")]
#[used]
static MFT: kiln_abi::MftNote<0> = kiln_abi::MftNote::new([]);

/// The target this stand-in is built for.
const TARGET: &str = if cfg!(feature = "spt") { "spt" } else { "hvt" };

/// The unikernel's entry function, as `examples/hello` has it.
async fn start(console: impl Console, sleep: impl Sleep, times: u32) -> Result<(), ConsoleError> {
    for i in 1..=times {
        console.logf(format_args!("hello from kiln on {TARGET} ({i}/{times})"))?;
        sleep.sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Misbehaviours for the tests.
enum Mode {
    Normal,
    Exit(u8),
    Fail,
    Panic,
    NullWrite,
    ReadOnlyWrite,
    ExecuteData,
    StackOverflow,
    OutOfMemory,
    Getpid,
    Devices,
}

static READ_ONLY: u64 = 0x5eed;

fn run(env: &'static kiln_solo5::Env) -> ExitStatus {
    let mut times = 3u32;
    let mut pause = 0u64;
    let mut mode = Mode::Normal;
    let mut args = match env.args() {
        Ok(args) => args.iter(),
        Err(e) => return Err::<(), _>(e).exit_status(),
    };
    while let Some(arg) = args.next() {
        match *arg {
            "--pause" => match args.next().and_then(|v| v.parse().ok()) {
                Some(ms) => pause = ms,
                None => return Err::<(), _>("--pause needs milliseconds").exit_status(),
            },
            "--times" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => times = n,
                None => return Err::<(), _>("--times needs a number").exit_status(),
            },
            "--exit" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => mode = Mode::Exit(n),
                None => return Err::<(), _>("--exit needs a number 0-255").exit_status(),
            },
            "--fail" => mode = Mode::Fail,
            "--panic" => mode = Mode::Panic,
            "--null-write" => mode = Mode::NullWrite,
            "--ro-write" => mode = Mode::ReadOnlyWrite,
            "--exec-data" => mode = Mode::ExecuteData,
            "--stack-overflow" => mode = Mode::StackOverflow,
            "--oom" => mode = Mode::OutOfMemory,
            "--devices" => mode = Mode::Devices,
            "--getpid" => mode = Mode::Getpid,
            other => {
                return ExitStatus {
                    code: 2,
                    message: Some(alloc::format!("unknown argument '{other}'")),
                };
            }
        }
    }
    match mode {
        Mode::Normal => {}
        Mode::Exit(code) => return code.exit_status(),
        Mode::Fail => return Err::<(), _>("disk on fire").exit_status(),
        Mode::Panic => panic!("deliberate panic, times = {times}"),
        Mode::NullWrite => {
            // SAFETY: none; this write is meant to fault.
            unsafe { core::ptr::null_mut::<u64>().write_volatile(1) };
        }
        Mode::ReadOnlyWrite => {
            let p = &raw const READ_ONLY as *mut u64;
            // SAFETY: none; this write is meant to fault.
            unsafe { p.write_volatile(1) };
        }
        Mode::ExecuteData => {
            static mut CODE: [u8; 1] = [0xc3];
            // SAFETY: none; data pages are not executable, so this faults.
            let f: extern "C" fn() = unsafe { core::mem::transmute(&raw mut CODE) };
            f();
        }
        Mode::StackOverflow => {
            return u8::try_from(recurse(1) % 256).unwrap_or(0).exit_status();
        }
        Mode::Getpid => {
            // SAFETY: getpid touches no memory; on spt the filter kills
            // the guest here, which is the point.
            unsafe {
                core::arch::asm!("syscall", inlateout("rax") 39u64 => _, lateout("rcx") _,
                                 lateout("r11") _, options(nostack));
            }
        }
        Mode::Devices => {
            return kiln_rt::block_on(env.platform(), devices(env)).exit_status();
        }
        Mode::OutOfMemory => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(alloc::vec![1u8; 16 << 20]);
            }
        }
    }
    kiln_rt::block_on(env.platform(), async {
        kiln_rt::sleep(Duration::from_millis(pause)).await;
        start(env.console(), kiln_rt::Timer, times).await
    })
    .exit_status()
}

/// Uses a page of stack per call until the guard page stops it.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut page = [0u8; 4096];
    page[depth as usize % 4096] = depth as u8;
    let page = core::hint::black_box(page);
    depth + u64::from(page[0]) + recurse(depth + 1)
}

async fn devices(env: &'static kiln_solo5::Env) -> Result<(), kiln_devices::RandomError> {
    use kiln_devices::{MonotonicClock, Random, WallClock};
    let console = env.console();
    let (clock, wall, random) = (env.clock(), env.wall_clock(), env.random());
    let _ = console.logf(format_args!("wall clock: {}", wall.now()));
    let before = clock.now();
    kiln_rt::Timer.sleep(Duration::from_millis(50)).await;
    let slept = clock.now() - before;
    let _ = console.logf(format_args!("slept: {} ms", slept.as_millis()));
    let (a, b) = (random.next_u64()?, random.next_u64()?);
    let _ = console.logf(format_args!(
        "random: {}",
        if a != b { "ok" } else { "stuck" }
    ));
    Ok(())
}

kiln_solo5::main!(run);
