//! The block module: attaches a file (`--block:NAME=PATH`, sector size from
//! `--block-sector-size:NAME=N`, default 512) to each `BLOCK_BASIC` manifest
//! entry, serves the block read and write hypercalls, and counts them per
//! device for a supervisor (`kiln_tender::block::Counters`, kept when
//! `KILN_BLOCK_STATS` names a file: `kiln daemon` sets it). With kiln's
//! extensions on it also serves BLOCK_EXCHANGE (`kiln_abi::hvt_ext`):
//! several reads and writes in one exit, each checked, performed and
//! counted as the BLOCK_READ or BLOCK_WRITE it stands for.

use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use kiln_abi::hvt::{HcBlockRead, HcBlockWrite, Hypercall};
use kiln_abi::hvt_ext::{
    BLOCK_EXCHANGE_MAX_REQUESTS, BLOCK_OP_READ, BLOCK_OP_WRITE, BlockRequest, HcBlockExchange,
    KILN_FEATURE_BLOCK_EXCHANGE,
};
use kiln_abi::mft::MftDeviceInfo;
use kiln_abi::status::Solo5Result;
use kiln_tender::block::{BlockFlags, Counters, Op};
use zerocopy::FromBytes;

use crate::guest::{GuestMemory, set_out};
use crate::hypercall::HypercallError;
use crate::module::{FdSyscall, Module, ModuleError};

pub use kiln_tender::block::DEFAULT_SECTOR_SIZE;

/// The block module.
#[derive(Debug, Default)]
pub struct Block {
    flags: BlockFlags,
    /// Attached devices in the order of their flags: (order, handle, file,
    /// capacity, sector size).
    attached: Vec<(usize, u64, File, u64, u64)>,
    /// The counters, and each handle's slot in them.
    counters: Counters,
    slots: Vec<(u64, Option<usize>)>,
    /// Whether BLOCK_EXCHANGE is served.
    exchange: bool,
    /// Where a run of an exchange's requests is gathered (writes) or
    /// read (reads) for one host call; at most [`MERGE_MAX`] bytes.
    bounce: Vec<u8>,
    /// An exchange's requests and read buffers, kept between exchanges
    /// so that serving one allocates nothing.
    requests: Vec<BlockRequest>,
    reads: Vec<(u64, u64, usize)>,
}

/// Most bytes one host call of an exchange moves for a run of requests
/// that continue each other.
const MERGE_MAX: u64 = 1 << 20;

/// Reads and checks a BLOCK_EXCHANGE's table: everything that would stop
/// the guest is found here, before any request is performed.
fn exchange_requests(
    arg: &HcBlockExchange,
    arg_gpa: u64,
    mem: &mut GuestMemory,
    requests: &mut Vec<BlockRequest>,
    reads: &mut Vec<(u64, u64, usize)>,
) -> Result<(), HypercallError> {
    const CALL: &str = "block exchange";
    let refuse = |what: String, why: String| HypercallError::BlockExchange { what, why };
    if arg.count > BLOCK_EXCHANGE_MAX_REQUESTS {
        return Err(refuse(
            "count".into(),
            format!(
                "{}, more than the {BLOCK_EXCHANGE_MAX_REQUESTS} an exchange may name",
                arg.count
            ),
        ));
    }
    let entry = size_of::<BlockRequest>() as u64;
    let table_len = arg.count * entry;
    // The tender writes each request's `ret`: the table must be writable.
    let table = mem
        .slice_mut(arg.requests, table_len)
        .map_err(|source| HypercallError::memory(CALL, "requests table", source))?;
    requests.clear();
    requests.extend(
        table
            .chunks_exact(entry as usize)
            .filter_map(|c| BlockRequest::read_from_bytes(c).ok()),
    );
    // What the tender writes besides the read buffers.
    let table_range = arg.requests..arg.requests + table_len;
    let arg_range = arg_gpa..arg_gpa + size_of::<HcBlockExchange>() as u64;
    reads.clear();
    for (i, r) in requests.iter().enumerate() {
        let what = |field: &str| format!("requests[{i}].{field}");
        let checked = match r.op {
            BLOCK_OP_READ => mem.slice_mut(r.data, r.len).map(|_| ()),
            BLOCK_OP_WRITE => mem.slice(r.data, r.len).map(|_| ()),
            op => {
                return Err(refuse(
                    what("op"),
                    format!("{op}, neither read ({BLOCK_OP_READ}) nor write ({BLOCK_OP_WRITE})"),
                ));
            }
        };
        checked.map_err(|source| refuse(what("data"), format!("bad buffer: {source}")))?;
        if r.op != BLOCK_OP_READ || r.len == 0 {
            continue;
        }
        // In guest memory, so no overflow.
        let range = r.data..r.data + r.len;
        let overlaps = |o: &std::ops::Range<u64>| range.start < o.end && o.start < range.end;
        if overlaps(&table_range) || overlaps(&arg_range) {
            return Err(refuse(
                what("data"),
                "read buffer overlaps the exchange's argument or table".into(),
            ));
        }
        reads.push((range.start, range.end, i));
    }
    // Sorted by start, a buffer overlaps an earlier one exactly when it
    // starts before the furthest end so far.
    reads.sort_unstable();
    let mut furthest: Option<(u64, usize)> = None;
    for &(start, end, i) in reads.iter() {
        if let Some((far, j)) = furthest
            && start < far
        {
            return Err(refuse(
                format!("requests[{}].data", i.max(j)),
                format!("read buffer overlaps the buffer of requests[{}]", i.min(j)),
            ));
        }
        if furthest.is_none_or(|(far, _)| end > far) {
            furthest = Some((end, i));
        }
    }
    Ok(())
}

impl Block {
    /// The device with `handle`: its file, capacity and sector size.
    fn device(&self, handle: u64) -> Option<(&File, u64, u64)> {
        self.attached
            .iter()
            .find(|(_, h, _, _, _)| *h == handle)
            .map(|(_, _, f, cap, sector)| (f, *cap, *sector))
    }

    /// Whether `offset`/`len` is a sector-aligned range inside the device.
    fn range_ok(offset: u64, len: u64, capacity: u64, sector: u64) -> bool {
        offset.is_multiple_of(sector)
            && len.is_multiple_of(sector)
            && offset.checked_add(len).is_some_and(|end| end <= capacity)
    }

    /// Counts a request on `handle` that ended with `ret`.
    fn count(&self, handle: u64, op: Op, len: u64, ret: Solo5Result) {
        if let Some((_, slot)) = self.slots.iter().find(|(h, _)| *h == handle) {
            self.counters
                .count(*slot, op, len, matches!(ret, Solo5Result::Ok));
        }
    }

    /// Performs one checked request of an exchange (its buffer is inside
    /// guest memory, writable for a read) and counts it.
    fn perform(
        &self,
        r: &BlockRequest,
        mem: &mut GuestMemory,
    ) -> Result<Solo5Result, HypercallError> {
        const CALL: &str = "block exchange";
        let (op, ret) = match self.device(r.handle) {
            None => (None, Solo5Result::Einval),
            Some((_, cap, sector))
                if r.len == 0 || !Self::range_ok(r.offset, r.len, cap, sector) =>
            {
                (None, Solo5Result::Einval)
            }
            Some((file, _, _)) if r.op == BLOCK_OP_WRITE => {
                let buf = mem
                    .slice(r.data, r.len)
                    .map_err(|source| HypercallError::memory(CALL, "data", source))?;
                let ok = file.write_all_at(buf, r.offset).is_ok();
                (
                    Some(Op::Write),
                    if ok {
                        Solo5Result::Ok
                    } else {
                        Solo5Result::Eunspec
                    },
                )
            }
            Some((file, _, _)) => {
                let buf = mem
                    .slice_mut(r.data, r.len)
                    .map_err(|source| HypercallError::memory(CALL, "buffer", source))?;
                let ok = file.read_exact_at(buf, r.offset).is_ok();
                (
                    Some(Op::Read),
                    if ok {
                        Solo5Result::Ok
                    } else {
                        Solo5Result::Eunspec
                    },
                )
            }
        };
        let op = op.unwrap_or(if r.op == BLOCK_OP_WRITE {
            Op::Write
        } else {
            Op::Read
        });
        self.count(r.handle, op, r.len, ret);
        Ok(ret)
    }

    /// Whether `r` is a request its device can serve.
    fn valid(&self, r: &BlockRequest) -> bool {
        self.device(r.handle).is_some_and(|(_, cap, sector)| {
            r.len != 0 && Self::range_ok(r.offset, r.len, cap, sector)
        })
    }

    /// The end of the run of requests from `start` that one host call can
    /// serve: valid requests of one device and one kind, each beginning
    /// where the one before it ends, [`MERGE_MAX`] bytes at most. A
    /// request that is alone ends its own run.
    fn run_end(&self, requests: &[BlockRequest], start: usize) -> usize {
        let Some(first) = requests.get(start).filter(|r| self.valid(r)) else {
            return start + 1;
        };
        let (mut next, mut total) = (first.offset + first.len, first.len);
        let mut end = start + 1;
        for r in requests.iter().skip(start + 1) {
            let continues = r.handle == first.handle
                && r.op == first.op
                && r.offset == next
                && total + r.len <= MERGE_MAX
                && self.valid(r);
            if !continues {
                break;
            }
            next += r.len;
            total += r.len;
            end += 1;
        }
        end
    }

    /// Performs a run of requests ([`Self::run_end`]) with one `pread` or
    /// `pwrite` through a bounce buffer, each request counted as its own;
    /// if the host call fails, each request is tried alone, so that each
    /// gets the result its own call would.
    fn perform_run(
        &mut self,
        run: &[BlockRequest],
        mem: &mut GuestMemory,
    ) -> Result<Vec<Solo5Result>, HypercallError> {
        const CALL: &str = "block exchange";
        let Some(first) = run.first() else {
            return Ok(Vec::new());
        };
        let mut bounce = std::mem::take(&mut self.bounce);
        bounce.clear();
        let ok = match self.device(first.handle) {
            None => false,
            Some((file, _, _)) if first.op == BLOCK_OP_WRITE => {
                for r in run {
                    let data = mem
                        .slice(r.data, r.len)
                        .map_err(|source| HypercallError::memory(CALL, "data", source))?;
                    bounce.extend_from_slice(data);
                }
                file.write_all_at(&bounce, first.offset).is_ok()
            }
            Some((file, _, _)) => {
                let total: u64 = run.iter().map(|r| r.len).sum();
                bounce.resize(usize::try_from(total).unwrap_or(0), 0);
                let ok = file.read_exact_at(&mut bounce, first.offset).is_ok();
                if ok {
                    let mut at = 0usize;
                    for r in run {
                        let buf = mem
                            .slice_mut(r.data, r.len)
                            .map_err(|source| HypercallError::memory(CALL, "buffer", source))?;
                        let n = buf.len();
                        buf.copy_from_slice(bounce.get(at..at + n).unwrap_or_default());
                        at += n;
                    }
                }
                ok
            }
        };
        self.bounce = bounce;
        if !ok {
            return run.iter().map(|r| self.perform(r, mem)).collect();
        }
        let op = if first.op == BLOCK_OP_WRITE {
            Op::Write
        } else {
            Op::Read
        };
        for r in run {
            self.count(r.handle, op, r.len, Solo5Result::Ok);
        }
        Ok(vec![Solo5Result::Ok; run.len()])
    }

    /// BLOCK_EXCHANGE: checks the whole table, then performs the requests
    /// in order, each as its BLOCK_READ or BLOCK_WRITE would be (a run of
    /// requests that continue each other on one device in one host call).
    fn exchange(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        const CALL: &str = "block exchange";
        let arg: HcBlockExchange = mem
            .read(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        let mut requests = std::mem::take(&mut self.requests);
        let mut reads = std::mem::take(&mut self.reads);
        let checked = exchange_requests(&arg, gpa, mem, &mut requests, &mut reads);
        self.reads = reads;
        let done = checked.and_then(|()| self.perform_all(&arg, &requests, mem));
        let count = requests.len() as u64;
        self.requests = requests;
        done?;
        let out = mem
            .slice_mut(gpa, size_of::<HcBlockExchange>() as u64)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        set_out(out, offset_of!(HcBlockExchange, done), count);
        Ok(())
    }

    /// Performs the checked `requests` of the exchange `arg` in order and
    /// sets each one's `ret`.
    fn perform_all(
        &mut self,
        arg: &HcBlockExchange,
        requests: &[BlockRequest],
        mem: &mut GuestMemory,
    ) -> Result<(), HypercallError> {
        const CALL: &str = "block exchange";
        let entry = size_of::<BlockRequest>() as u64;
        let mut i = 0;
        while i < requests.len() {
            let end = self.run_end(requests, i);
            let run = requests.get(i..end).unwrap_or_default();
            let rets = match run {
                [one] => vec![self.perform(one, mem)?],
                _ => self.perform_run(run, mem)?,
            };
            for (k, ret) in rets.into_iter().enumerate() {
                let at =
                    arg.requests + (i + k) as u64 * entry + offset_of!(BlockRequest, ret) as u64;
                mem.write(at, &(ret as i32).to_le_bytes())
                    .map_err(|source| HypercallError::memory(CALL, "requests table", source))?;
            }
            i = end.max(i + 1);
        }
        Ok(())
    }

    fn write(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        const CALL: &str = "block write";
        let size = size_of::<HcBlockWrite>() as u64;
        let HcBlockWrite {
            handle,
            offset,
            data,
            len,
            ..
        } = mem
            .read(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        let buf = mem
            .slice(data, len)
            .map_err(|source| HypercallError::memory(CALL, "data", source))?;
        let ret = match self.device(handle) {
            None => Solo5Result::Einval,
            Some((_, cap, sector)) if !Self::range_ok(offset, len, cap, sector) => {
                Solo5Result::Einval
            }
            Some((file, _, _)) => match file.write_all_at(buf, offset) {
                Ok(()) => Solo5Result::Ok,
                Err(_) => Solo5Result::Eunspec,
            },
        };
        self.count(handle, Op::Write, len, ret);
        let out = mem
            .slice_mut(gpa, size)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        set_out(out, offset_of!(HcBlockWrite, ret), ret as i32);
        Ok(())
    }

    fn read(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        const CALL: &str = "block read";
        let size = size_of::<HcBlockRead>() as u64;
        let HcBlockRead {
            handle,
            offset,
            data,
            len,
            ..
        } = mem
            .read(gpa)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        mem.checked(data, len)
            .map_err(|source| HypercallError::memory(CALL, "buffer", source))?;
        let ret = match self.device(handle) {
            None => Solo5Result::Einval,
            Some((_, cap, sector)) if !Self::range_ok(offset, len, cap, sector) => {
                Solo5Result::Einval
            }
            Some((file, _, _)) => {
                let buf = mem
                    .slice_mut(data, len)
                    .map_err(|source| HypercallError::memory(CALL, "buffer", source))?;
                match file.read_exact_at(buf, offset) {
                    Ok(()) => Solo5Result::Ok,
                    Err(_) => Solo5Result::Eunspec,
                }
            }
        };
        self.count(handle, Op::Read, len, ret);
        let out = mem
            .slice_mut(gpa, size)
            .map_err(|source| HypercallError::memory(CALL, "argument", source))?;
        set_out(out, offset_of!(HcBlockRead, ret), ret as i32);
        Ok(())
    }
}

kiln_tender::with_flags!(Block, BlockFlags);

impl Module for Block {
    fn attach(&mut self, handle: u64, name: &str) -> Result<MftDeviceInfo, ModuleError> {
        let opened = self.flags.open(name, false)?;
        self.attached.push((
            opened.order,
            handle,
            opened.file,
            opened.capacity,
            u64::from(opened.sector),
        ));
        self.attached.sort_by_key(|a| a.0);
        let slot = self.counters.add("kiln-hvt: ", name);
        self.slots.push((handle, slot));
        Ok(MftDeviceInfo::block(opened.capacity, opened.sector))
    }

    fn serves(&self, hc: Hypercall) -> bool {
        matches!(hc, Hypercall::BlockRead | Hypercall::BlockWrite)
    }

    fn hypercall(
        &mut self,
        hc: Hypercall,
        gpa: u64,
        mem: &mut GuestMemory,
    ) -> Result<(), HypercallError> {
        match hc {
            Hypercall::BlockWrite => self.write(gpa, mem),
            Hypercall::BlockRead => self.read(gpa, mem),
            other => Err(HypercallError::Unserved { call: other.name() }),
        }
    }

    fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, u64)> {
        Vec::new()
    }

    fn enable_extensions(&mut self) -> u32 {
        self.exchange = true;
        KILN_FEATURE_BLOCK_EXCHANGE
    }

    fn serves_block_exchange(&self) -> bool {
        self.exchange
    }

    fn block_exchange(&mut self, gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
        self.exchange(gpa, mem)
    }

    fn syscalls(&self) -> Vec<FdSyscall> {
        self.attached
            .iter()
            .flat_map(|(_, _, f, _, _)| {
                let fd = f.as_raw_fd();
                [
                    FdSyscall {
                        nr: libc::SYS_pread64,
                        name: "pread64",
                        fd,
                    },
                    FdSyscall {
                        nr: libc::SYS_pwrite64,
                        name: "pwrite64",
                        fd,
                    },
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with one 4 MiB device, handle 1, served by a scratch file.
    fn one_device(name: &str) -> Block {
        let path = std::env::temp_dir().join(format!("kiln-hvt-{name}-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(4 << 20).unwrap();
        std::fs::remove_file(&path).unwrap();
        Block {
            attached: vec![(0, 1, file, 4 << 20, 512)],
            exchange: true,
            ..Block::default()
        }
    }

    fn req(handle: u64, offset: u64, len: u64, op: u32) -> BlockRequest {
        BlockRequest {
            handle,
            offset,
            data: 0,
            len,
            op,
            ret: 0,
        }
    }

    #[test]
    fn runs_are_valid_requests_that_continue_each_other() {
        let b = one_device("runs");
        let (r, w) = (BLOCK_OP_READ, BLOCK_OP_WRITE);
        let reqs = [
            req(1, 0, 512, w),
            req(1, 512, 512, w),
            req(1, 1024, 1024, w),
            // Same place again: not a continuation.
            req(1, 1024, 512, w),
            // Another kind.
            req(1, 1536, 512, r),
            req(1, 2048, 512, r),
            // Misaligned: alone, and it ends the run before it.
            req(1, 2561, 512, r),
            req(1, 3072, 512, r),
            // Another device (none).
            req(2, 3584, 512, r),
            // Past the end.
            req(1, 4 << 20, 512, r),
        ];
        let runs: Vec<usize> = {
            let mut ends = Vec::new();
            let mut i = 0;
            while i < reqs.len() {
                i = b.run_end(&reqs, i);
                ends.push(i);
            }
            ends
        };
        assert_eq!(runs, [3, 4, 6, 7, 8, 9, 10]);
        // A run stops at MERGE_MAX bytes.
        let big: Vec<BlockRequest> = (0..3).map(|k| req(1, k << 19, 1 << 19, r)).collect();
        assert_eq!(b.run_end(&big, 0), 2);
        assert_eq!(b.run_end(&big, 2), 3);
    }

    #[test]
    fn ranges_are_sector_aligned_and_inside() {
        assert!(Block::range_ok(0, 512, 1024, 512));
        assert!(Block::range_ok(512, 512, 1024, 512));
        assert!(!Block::range_ok(512, 1024, 1024, 512));
        assert!(!Block::range_ok(1, 512, 1024, 512));
        assert!(!Block::range_ok(0, 100, 1024, 512));
        assert!(!Block::range_ok(u64::MAX - 511, 512, u64::MAX, 512));
    }
}
