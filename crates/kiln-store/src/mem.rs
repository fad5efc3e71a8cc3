//! An in-memory block device that can crash after a chosen number of sector
//! writes, for the stores' crash and corruption tests.

use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use kiln_devices::{Block, BlockError, BlockInfo};

/// What reaches the medium of its unflushed writes when a [`MemBlock`]
/// crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Nothing since the last flush.
    DropUnflushed,
    /// Every earlier sector write, in order; not the one that crashed.
    KeepOrdered,
    /// Every earlier sector write, and the first half of the one that
    /// crashed over the old contents of its sector.
    TearLast,
    /// Every other unflushed sector write (the device reordered them), and
    /// the crashing one torn.
    Reorder,
}

#[derive(Debug)]
struct State {
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
    writes_left: Option<usize>,
    crashed: bool,
    writes: usize,
}

/// A block device in memory. Writes sit in a cache until `flush`; after
/// the configured number of sector writes the device "crashes": that write
/// and every later request fail, and [`image`](MemBlock::image) shows what
/// a restart would find.
#[derive(Debug)]
pub struct MemBlock {
    info: BlockInfo,
    mode: Cell<Crash>,
    state: RefCell<State>,
}

impl MemBlock {
    /// A zero-filled device.
    pub fn new(sector_size: u32, sectors: u64) -> MemBlock {
        MemBlock::from_image(
            sector_size,
            vec![0; sector_size as usize * sectors as usize],
        )
    }

    /// A device holding `image` (a whole number of sectors).
    pub fn from_image(sector_size: u32, image: Vec<u8>) -> MemBlock {
        MemBlock {
            info: BlockInfo {
                sector_size,
                sectors: image.len() as u64 / u64::from(sector_size),
                read_only: false,
            },
            mode: Cell::new(Crash::DropUnflushed),
            state: RefCell::new(State {
                durable: image,
                pending: Vec::new(),
                writes_left: None,
                crashed: false,
                writes: 0,
            }),
        }
    }

    /// Crash, as `mode` says, when the `n`th sector write from now (0: the
    /// next one) is attempted.
    pub fn crash_after(&self, n: usize, mode: Crash) {
        self.state.borrow_mut().writes_left = Some(n);
        self.mode.set(mode);
    }

    /// Whether the device has crashed.
    pub fn crashed(&self) -> bool {
        self.state.borrow().crashed
    }

    /// Sector writes so far.
    pub fn writes(&self) -> usize {
        self.state.borrow().writes
    }

    /// The medium as a restart would find it: the durable contents, plus,
    /// before any crash, the cache (a clean shutdown).
    pub fn image(&self) -> Vec<u8> {
        let s = self.state.borrow();
        let mut image = s.durable.clone();
        if !s.crashed {
            for (sector, data) in &s.pending {
                let at = *sector as usize * self.info.sector_size as usize;
                image[at..at + data.len()].copy_from_slice(data);
            }
        }
        image
    }

    /// XORs `mask` into byte `offset` of the medium.
    pub fn flip(&self, offset: usize, mask: u8) {
        let mut s = self.state.borrow_mut();
        s.durable[offset] ^= mask;
    }

    fn crash(&self, s: &mut State, sector: u64, data: &[u8]) {
        let size = self.info.sector_size as usize;
        let mode = self.mode.get();
        let pending = core::mem::take(&mut s.pending);
        let apply = |s: &mut State, sector: u64, data: &[u8]| {
            let at = sector as usize * size;
            s.durable[at..at + data.len()].copy_from_slice(data);
        };
        match mode {
            Crash::DropUnflushed => {}
            Crash::KeepOrdered => pending.iter().for_each(|(n, d)| apply(s, *n, d)),
            Crash::TearLast => {
                pending.iter().for_each(|(n, d)| apply(s, *n, d));
                apply(s, sector, &data[..size / 2]);
            }
            Crash::Reorder => {
                pending
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % 2 == 1)
                    .for_each(|(_, (n, d))| apply(s, *n, d));
                apply(s, sector, &data[..size / 2]);
            }
        }
        s.crashed = true;
    }
}

impl Block for MemBlock {
    fn info(&self) -> BlockInfo {
        self.info
    }

    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let at = self.info.check(sector, buf.len())? as usize;
        let s = self.state.borrow();
        if s.crashed {
            return Err(BlockError::Io(5));
        }
        buf.copy_from_slice(&s.durable[at..at + buf.len()]);
        let size = self.info.sector_size as usize;
        for (n, data) in &s.pending {
            let n = *n as usize * size;
            if n >= at && n < at + buf.len() {
                buf[n - at..n - at + size].copy_from_slice(data);
            }
        }
        Ok(())
    }

    async fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.info.check(sector, buf.len())?;
        let size = self.info.sector_size as usize;
        let mut s = self.state.borrow_mut();
        if s.crashed {
            return Err(BlockError::Io(5));
        }
        for (i, data) in buf.chunks(size).enumerate() {
            let n = sector + i as u64;
            if let Some(left) = s.writes_left.as_mut() {
                if *left == 0 {
                    self.crash(&mut s, n, data);
                    return Err(BlockError::Io(5));
                }
                *left -= 1;
            }
            s.writes += 1;
            s.pending.push((n, data.to_vec()));
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), BlockError> {
        let mut s = self.state.borrow_mut();
        if s.crashed {
            return Err(BlockError::Io(5));
        }
        let size = self.info.sector_size as usize;
        for (n, data) in core::mem::take(&mut s.pending) {
            let at = n as usize * size;
            s.durable[at..at + size].copy_from_slice(&data);
        }
        Ok(())
    }
}

/// A platform for store operations over a [`MemBlock`], which never wait:
/// a wait with a deadline other than "now" fails the test.
struct Idle;

impl kiln_rt::Platform for Idle {
    fn now(&self) -> kiln_devices::Instant {
        kiln_devices::Instant::ZERO
    }

    fn wait(&self, deadline: Option<kiln_devices::Instant>) {
        // The executor polls devices now and then with a zero deadline;
        // anything else means every task waits on something that cannot
        // come.
        assert_eq!(
            deadline,
            Some(kiln_devices::Instant::ZERO),
            "a store operation over an in-memory device blocked"
        );
    }
}

/// Runs `f` to completion on [`Idle`].
pub fn run<F: core::future::Future>(f: F) -> F::Output {
    let platform: &'static Idle = alloc::boxed::Box::leak(alloc::boxed::Box::new(Idle));
    kiln_rt::block_on(platform, f)
}
