//! A stand-in with a network interface `service` and a block device
//! `disk`, for kiln-solo5's device tests:
//!
//! - prints the block geometry and the first 8 bytes of sector 0, writes
//!   sector 1 and reads it back, writes sectors 2 to the end in one request
//!   and reads them back in one, tries a read past the end, then reads
//!   sectors 0 to 7 with eight requests issued together and prints how
//!   many exits to the host they took (one with kiln's BLOCK_EXCHANGE);
//! - prints the interface's MAC and MTU, then echoes `--frames N` frames
//!   (default 1) back with source and destination swapped, giving up
//!   after 10 s without one;
//! - with `--burst N`, first of all receives N frames of 60 bytes the host
//!   queued before the guest started (byte 14 of frame `i` is `i`) and
//!   prints how many exits to the host that took (one when kiln's
//!   NET_EXCHANGE_AREA packs them all into one exchange);
//! - with `--pwrite-past-end` (spt only), first makes a raw `pwrite64` of
//!   one sector just past the end of `disk`, which the tender's filter must
//!   kill.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use core::time::Duration;

use kiln_devices::{Block, Console, ExitStatus, NetworkInterface, Termination};

#[path = "../abi_note.rs"]
mod abi_note;

#[unsafe(link_section = ".note.solo5.manifest")]
#[used]
static MFT: kiln_abi::MftNote<2> = kiln_abi::MftNote::new([
    kiln_abi::MftEntry::net("service"),
    kiln_abi::MftEntry::block("disk"),
]);

#[derive(Debug)]
enum Error {
    Device(kiln_solo5::DeviceError),
    Block(kiln_devices::BlockError),
    Net(kiln_devices::NetError),
    Mismatch,
    Timeout,
    Burst(u32),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Device(e) => write!(f, "{e}"),
            Error::Block(e) => write!(f, "block: {e}"),
            Error::Net(e) => write!(f, "net: {e}"),
            Error::Mismatch => {
                f.write_str("block: sector 1 read back differs from what was written")
            }
            Error::Timeout => f.write_str("net: no frame within 10 s"),
            Error::Burst(i) => write!(f, "net: frame {i} of the burst is not the one sent"),
        }
    }
}

async fn start(
    console: impl Console,
    net: impl NetworkInterface,
    disk: impl Block,
    frames: u32,
    burst: u32,
    path: &str,
) -> Result<(), Error> {
    let exits = || {
        (0..kiln_x86::exits::SLOTS)
            .map(kiln_x86::exits::get)
            .sum::<u64>()
    };
    if burst > 0 {
        let before = exits();
        let mut buf = vec![0u8; net.mtu() + kiln_devices::net::ETHERNET_HEADER_LEN];
        for i in 0..burst {
            let n = kiln_rt::timeout(Duration::from_secs(10), net.receive(&mut buf))
                .await
                .map_err(|_| Error::Timeout)?
                .map_err(Error::Net)?;
            if n != 60 || buf[14] != i as u8 {
                return Err(Error::Burst(i));
            }
        }
        let took = exits() - before;
        let _ = console.logf(format_args!(
            "net: a burst of {burst} frames took {took} exits"
        ));
    }
    let info = disk.info();
    let size = info.sector_size as usize;
    let _ = console.logf(format_args!(
        "block: {} sectors of {} bytes",
        info.sectors, size
    ));
    let mut sector = vec![0u8; size];
    disk.read(0, &mut sector).await.map_err(Error::Block)?;
    let _ = console.logf(format_args!("sector 0: {:02x?}", &sector[..8]));
    let pattern: alloc::vec::Vec<u8> = (0..size).map(|i| (i as u8) ^ 0x5a).collect();
    disk.write(1, &pattern).await.map_err(Error::Block)?;
    disk.flush().await.map_err(Error::Block)?;
    disk.read(1, &mut sector).await.map_err(Error::Block)?;
    if sector != pattern {
        return Err(Error::Mismatch);
    }
    let _ = console.log("block: write and read back ok");
    // Sectors 2 to the end in one request (cut into pieces on spt), then
    // read back in one.
    let rest = (info.sectors - 2) as usize;
    let many: alloc::vec::Vec<u8> = (0..rest * size).map(|i| (i as u8) ^ 0xa5).collect();
    disk.write(2, &many).await.map_err(Error::Block)?;
    let mut back = vec![0u8; rest * size];
    disk.read(2, &mut back).await.map_err(Error::Block)?;
    if back != many {
        return Err(Error::Mismatch);
    }
    let _ = console.logf(format_args!("block: {rest}-sector write and read back ok"));
    if let Err(e) = disk.read(info.sectors, &mut sector).await {
        let _ = console.logf(format_args!("past the end: {e}"));
    }
    // Eight one-sector reads issued together and awaited together.
    let before = exits();
    let mut eight = vec![0u8; 8 * size];
    let reads: alloc::vec::Vec<_> = eight
        .chunks_mut(size)
        .enumerate()
        .map(|(i, b)| disk.read(i as u64, b))
        .collect();
    kiln_rt::join_all(reads)
        .await
        .into_iter()
        .collect::<Result<(), _>>()
        .map_err(Error::Block)?;
    let took = exits() - before;
    if eight[size..2 * size] != pattern[..] || eight[2 * size..] != many[..6 * size] {
        return Err(Error::Mismatch);
    }
    let _ = console.logf(format_args!(
        "block: 8 reads issued together took {took} exits"
    ));

    let _ = console.logf(format_args!("net: mac {} mtu {}", net.mac(), net.mtu()));
    let _ = console.logf(format_args!(
        "net: frames by {path}"
    ));
    let mut buf = vec![0u8; net.mtu() + kiln_devices::net::ETHERNET_HEADER_LEN];
    for i in 1..=frames {
        let n = kiln_rt::timeout(Duration::from_secs(10), net.receive(&mut buf))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(Error::Net)?;
        let frame = &mut buf[..n];
        if n >= 12 {
            let (dst, src) = frame.split_at_mut(6);
            dst.swap_with_slice(&mut src[..6]);
        }
        net.send(frame).await.map_err(Error::Net)?;
        let _ = console.logf(format_args!("net: echoed frame {i} of {n} bytes"));
    }
    Ok(())
}

/// A raw `pwrite64` of one sector at the end of `disk`, bypassing the
/// block device's checks; returns the system call's result.
fn pwrite_past_end(env: &kiln_solo5::Env) -> i64 {
    let Ok(disk) = env.device("disk", kiln_abi::MftType::BlockBasic) else {
        return -1;
    };
    let sector = [0xeeu8; 512];
    let ret: i64;
    // SAFETY: pwrite64 reads `sector` only; this call is meant to be
    // refused by the tender's seccomp filter.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") 18i64 => ret,
            in("rdi") i64::from(disk.host_fd()),
            in("rsi") sector.as_ptr(),
            in("rdx") sector.len(),
            in("r10") disk.info.block_capacity(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

fn run(env: &'static kiln_solo5::Env) -> ExitStatus {
    let mut frames = 1u32;
    let mut burst = 0u32;
    let mut args = match env.args() {
        Ok(args) => args.iter(),
        Err(e) => return Err::<(), _>(e).exit_status(),
    };
    while let Some(arg) = args.next() {
        if *arg == "--pwrite-past-end" {
            let ret = pwrite_past_end(env);
            return Err::<(), _>(alloc::format!("pwrite64 past the end returned {ret}"))
                .exit_status();
        }
        match (*arg, args.next().and_then(|v| v.parse().ok())) {
            ("--frames", Some(n)) => frames = n,
            ("--burst", Some(n)) => burst = n,
            _ => return Err::<(), _>("usage: devices [--frames N] [--burst N]").exit_status(),
        }
    }
    let net = match env.net("service") {
        Ok(n) => n,
        Err(e) => return Err::<(), _>(Error::Device(e)).exit_status(),
    };
    let disk = match env.block("disk") {
        Ok(b) => b,
        Err(e) => return Err::<(), _>(Error::Device(e)).exit_status(),
    };
    let path = if net.uses_exchange() {
        "kiln exchange"
    } else {
        "hypercalls"
    };
    kiln_rt::block_on(
        env.platform(),
        start(env.console(), net, disk, frames, burst, path),
    )
    .exit_status()
}

kiln_solo5::main!(run);
