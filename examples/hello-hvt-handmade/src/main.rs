//! hello on hvt, written by hand the way `kiln configure -t hvt` will
//! generate it: the Solo5 notes, argument parsing, device construction and
//! `block_on` of the entry function.
//!
//! Runtime arguments: `--times N` (hello lines, default 3), and, to test
//! the platform, `--exit N` (exit with N), `--fail` (return an error),
//! `--panic`, `--null-write`, `--ro-write`, `--oom`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::time::Duration;

use kiln_devices::{Console, ConsoleError, ExitStatus, Sleep, Termination};

#[unsafe(link_section = ".note.solo5.abi")]
#[used]
static ABI: kiln_abi::AbiNote = kiln_abi::AbiNote::hvt();

#[unsafe(link_section = ".note.solo5.manifest")]
#[used]
static MFT: kiln_abi::MftNote<0> = kiln_abi::MftNote::new([]);

/// The unikernel's entry function, as `examples/hello` has it.
async fn start(console: impl Console, sleep: impl Sleep, times: u32) -> Result<(), ConsoleError> {
    for i in 1..=times {
        console.logf(format_args!("hello from kiln on hvt ({i}/{times})"))?;
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
    OutOfMemory,
}

static READ_ONLY: u64 = 0x5eed;

fn run(env: &'static kiln_solo5::Env) -> ExitStatus {
    let mut times = 3u32;
    let mut mode = Mode::Normal;
    let mut args = env.args().iter();
    while let Some(arg) = args.next() {
        match *arg {
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
            "--oom" => mode = Mode::OutOfMemory,
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
        Mode::OutOfMemory => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(alloc::vec![1u8; 16 << 20]);
            }
        }
    }
    kiln_rt::block_on(env.platform(), start(env.console(), kiln_rt::Timer, times)).exit_status()
}

kiln_solo5::main!(run);
