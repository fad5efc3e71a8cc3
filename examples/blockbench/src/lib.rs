//! blockbench: a kiln unikernel that exercises and times block devices.
//!
//! Three modes, chosen with `--mode`, all on every target:
//!
//! - `errors` issues requests a correct device must refuse (past the end,
//!   straddling the end, at the largest sector number, buffers that are
//!   empty, smaller than a sector or not a whole number of sectors) on
//!   `data` and prints one line per request, `NAME: RESULT`, with the typed
//!   [`BlockError`] in its `Debug` form; then a valid request, which must
//!   succeed.
//! - `devices` prints each device's geometry, fills sector 0 of `data`
//!   with `0xd1` and of `extra` with `0xe2`, flushes, reads both back and
//!   prints what each holds, showing that named devices stay apart.
//! - `bench` writes `--total` MiB to `data` sequentially in `--size`-byte
//!   requests, flushes, reads them back, and prints the throughput of each
//!   pass measured with the monotonic clock. `--depth` requests (at most
//!   1 MiB of them) are issued together and awaited together, as a program
//!   with several requests to make would, so a device that batches
//!   requests (kiln-hvt's BLOCK_EXCHANGE) can; `--depth 1` awaits each
//!   before the next.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::future::Future;

use kiln_devices::{Block, BlockError, Console, ConsoleError, MonotonicClock};

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockbenchError {
    /// A request that should have succeeded failed.
    #[error("cannot {action} device '{device}': {source}")]
    Block {
        /// What was being done.
        action: &'static str,
        /// The device's name.
        device: &'static str,
        /// The device's error.
        source: BlockError,
    },
    /// `--size` is not a whole, non-zero number of sectors.
    #[error(
        "request size {size} is not a whole number of {sector_size}-byte sectors\nhint: pass --size as a non-zero multiple of {sector_size}"
    )]
    Size {
        /// The requested size.
        size: u32,
        /// The device's sector size.
        sector_size: u32,
    },
    /// `--mode` names no mode.
    #[error("unknown mode '{0}'\nhint: pass --mode errors, devices or bench")]
    Mode(String),
    /// A device read back other bytes than were written.
    #[error("device '{0}' read back other bytes than were written")]
    Mismatch(&'static str),
    /// The console failed.
    #[error("cannot write to the console: {0}")]
    Console(#[from] ConsoleError),
}

fn fail(action: &'static str, device: &'static str) -> impl Fn(BlockError) -> BlockbenchError {
    move |source| BlockbenchError::Block {
        action,
        device,
        source,
    }
}

/// Runs the mode named by `mode`.
#[allow(clippy::too_many_arguments)] // one parameter per device and argument
pub async fn start(
    console: impl Console,
    clock: impl MonotonicClock,
    data: impl Block,
    extra: impl Block,
    mode: String,
    size: u32,
    total: u32,
    depth: u32,
) -> Result<(), BlockbenchError> {
    match mode.as_str() {
        "errors" => errors(&console, &data).await,
        "devices" => devices(&console, &data, &extra).await,
        "bench" => bench(&console, &clock, &data, size, total, depth).await,
        _ => Err(BlockbenchError::Mode(mode)),
    }
}

/// Issues bad requests and prints what each returns.
async fn errors(console: &impl Console, data: &impl Block) -> Result<(), BlockbenchError> {
    let info = data.info();
    let s = info.sector_size as usize;
    let n = info.sectors;
    let mut one = vec![0u8; s];
    let mut two = vec![0u8; 2 * s];
    let mut odd = vec![0u8; s + 1];
    let mut small = [0u8; 100];
    console.logf(format_args!("geometry: {s} x {n}"))?;
    let r = data.read(n, &mut one).await;
    console.logf(format_args!("read-past-end: {r:?}"))?;
    let r = data.write(n.saturating_sub(1), &two).await;
    console.logf(format_args!("write-straddling-end: {r:?}"))?;
    let r = data.read(n.saturating_sub(1), &mut two).await;
    console.logf(format_args!("read-straddling-end: {r:?}"))?;
    let r = data.read(u64::MAX, &mut one).await;
    console.logf(format_args!("read-at-max-sector: {r:?}"))?;
    let r = data.read(0, &mut small).await;
    console.logf(format_args!("read-partial-sector: {r:?}"))?;
    let r = data.write(0, &small).await;
    console.logf(format_args!("write-partial-sector: {r:?}"))?;
    let r = data.read(0, &mut odd).await;
    console.logf(format_args!("read-sector-and-a-byte: {r:?}"))?;
    let r = data.write(0, &odd).await;
    console.logf(format_args!("write-sector-and-a-byte: {r:?}"))?;
    let r = data.read(0, &mut []).await;
    console.logf(format_args!("read-empty: {r:?}"))?;
    let r = data.write(0, &[]).await;
    console.logf(format_args!("write-empty: {r:?}"))?;
    one.fill(0x5a);
    let r = data.write(n.saturating_sub(1), &one).await;
    console.logf(format_args!("write-last-sector: {r:?}"))?;
    let mut back = vec![0u8; s];
    let r = data.read(n.saturating_sub(1), &mut back).await;
    let same = back == one;
    console.logf(format_args!("read-last-sector: {r:?} same={same}"))?;
    Ok(())
}

/// Writes a different pattern to each device and reads both back.
async fn devices(
    console: &impl Console,
    data: &impl Block,
    extra: &impl Block,
) -> Result<(), BlockbenchError> {
    for (name, dev) in [("data", data as &dyn Geometry), ("extra", extra)] {
        let (s, n) = dev.geometry();
        console.logf(format_args!("{name}: {s} x {n}"))?;
    }
    let d = vec![0xd1u8; data.info().sector_size as usize];
    let e = vec![0xe2u8; extra.info().sector_size as usize];
    data.write(0, &d).await.map_err(fail("write", "data"))?;
    extra.write(0, &e).await.map_err(fail("write", "extra"))?;
    data.flush().await.map_err(fail("flush", "data"))?;
    extra.flush().await.map_err(fail("flush", "extra"))?;
    let mut back = vec![0u8; d.len()];
    data.read(0, &mut back)
        .await
        .map_err(fail("read", "data"))?;
    if back != d {
        return Err(BlockbenchError::Mismatch("data"));
    }
    let mut back = vec![0u8; e.len()];
    extra
        .read(0, &mut back)
        .await
        .map_err(fail("read", "extra"))?;
    if back != e {
        return Err(BlockbenchError::Mismatch("extra"));
    }
    console.log("data holds d1, extra holds e2")?;
    Ok(())
}

/// The geometry of a device, object-safe so that devices of different
/// types can share one loop.
trait Geometry {
    fn geometry(&self) -> (u32, u64);
}

impl<B: Block> Geometry for B {
    fn geometry(&self) -> (u32, u64) {
        let info = self.info();
        (info.sector_size, info.sectors)
    }
}

/// Sequential write then read throughput of `data` in `size`-byte requests.
async fn bench(
    console: &impl Console,
    clock: &impl MonotonicClock,
    data: &impl Block,
    size: u32,
    total: u32,
    depth: u32,
) -> Result<(), BlockbenchError> {
    let info = data.info();
    let sector_size = info.sector_size;
    if size == 0 || !size.is_multiple_of(sector_size) {
        return Err(BlockbenchError::Size { size, sector_size });
    }
    let per = u64::from(size / sector_size);
    let want = u64::from(total).saturating_mul(1 << 20) / u64::from(sector_size);
    let requests = want.min(info.sectors) / per;
    let bytes = requests * u64::from(size);
    let mut buf = vec![0u8; size as usize];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }

    // At most 1 MiB in flight: 2,048 requests of 512 B, 16 of 64 KiB.
    let depth = u64::from(depth.clamp(1, ((1 << 20) / size).max(1)));
    let mut bufs = vec![0u8; size as usize * depth as usize];

    let started = clock.now();
    let mut r = 0;
    while r < requests {
        let n = depth.min(requests - r);
        let batch = (r..r + n).map(|q| data.write(q * per, &buf)).collect();
        all(batch).await.map_err(fail("write", "data"))?;
        r += n;
    }
    data.flush().await.map_err(fail("flush", "data"))?;
    let nanos = clock.now().saturating_duration_since(started).as_nanos();
    report(console, "write", size, bytes, nanos)?;

    let started = clock.now();
    let mut r = 0;
    while r < requests {
        let n = depth.min(requests - r);
        let batch = (r..r + n)
            .zip(bufs.chunks_mut(size as usize))
            .map(|(q, b)| data.read(q * per, b))
            .collect();
        all(batch).await.map_err(fail("read", "data"))?;
        r += n;
    }
    let nanos = clock.now().saturating_duration_since(started).as_nanos();
    let filled = depth.min(requests) as usize;
    if bufs.chunks(size as usize).take(filled).any(|b| *b != *buf) {
        return Err(BlockbenchError::Mismatch("data"));
    }
    report(console, "read", size, bytes, nanos)?;
    Ok(())
}

/// Awaits `futures` together ([`kiln_rt::join_all`]); the first error.
async fn all<F: Future<Output = Result<(), BlockError>>>(
    futures: Vec<F>,
) -> Result<(), BlockError> {
    kiln_rt::join_all(futures).await.into_iter().collect()
}

/// Prints `bytes` moved in `nanos` as MiB/s with two decimals (integer
/// arithmetic: the freestanding targets have no floating point).
fn report(
    console: &impl Console,
    what: &str,
    size: u32,
    bytes: u64,
    nanos: u128,
) -> Result<(), BlockbenchError> {
    let hundredths = u128::from(bytes) * 100 * 1_000_000_000 / (nanos.max(1) * (1 << 20));
    console.logf(format_args!(
        "{what} {size} B requests: {}.{:02} MiB/s ({bytes} bytes in {} us)",
        hundredths / 100,
        hundredths % 100,
        nanos / 1000
    ))?;
    Ok(())
}
