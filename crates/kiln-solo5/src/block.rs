//! The block device: reads and writes on the device's manifest handle
//! (BLOCK_READ and BLOCK_WRITE on hvt, `pread64`/`pwrite64` on spt), each
//! request checked against the geometry first. Under kiln-hvt with its
//! BLOCK_EXCHANGE extension a request is queued instead
//! ([`crate::block_queue`]) and completes after the exchange the platform
//! makes when no task can run, so requests issued together share one exit.

use alloc::vec;
use core::future::{Future, ready};
use core::pin::Pin;
use core::task::{Context, Poll};

use kiln_devices::{BlockError, BlockInfo};

use crate::block_queue::Op;
use crate::env::{Device, DeviceError};
use crate::outcome::{Failure, from_ret};
use crate::reactor::Handle;
use crate::sys;

/// A block device the tender attached (a file on the host).
pub struct Block {
    handle: Handle,
    info: BlockInfo,
    /// Whether requests go through BLOCK_EXCHANGE.
    batched: bool,
}

/// `EIO`, reported when the tender refuses a request kiln already checked.
const EIO: i32 = 5;

fn error(failure: Failure) -> BlockError {
    match failure {
        Failure::Again => BlockError::Io(EIO),
        Failure::Error(code) => BlockError::Io(code),
    }
}

impl Block {
    pub(crate) fn new(handle: Handle, device: &Device) -> Result<Block, DeviceError> {
        let sector_size = device.info.block_size();
        if sector_size < 512 || !sector_size.is_power_of_two() {
            return Err(DeviceError::BadSectorSize {
                name: device.name,
                sector_size,
            });
        }
        Ok(Block {
            handle,
            info: BlockInfo {
                sector_size: u32::from(sector_size),
                sectors: device.info.block_capacity() / u64::from(sector_size),
                read_only: false,
            },
            batched: sys::host::has_block_exchange(),
        })
    }

    fn read_now(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let offset = self.info.check(sector, buf.len())?;
        sys::host::block_read(self.handle.raw(), offset, buf).map_err(error)
    }

    fn write_now(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        let offset = self.info.check(sector, buf.len())?;
        sys::host::block_write(self.handle.raw(), offset, buf).map_err(error)
    }
}

impl kiln_devices::Block for Block {
    fn info(&self) -> BlockInfo {
        self.info
    }

    fn read(&self, sector: u64, buf: &mut [u8]) -> impl Future<Output = Result<(), BlockError>> {
        Request {
            block: self,
            sector,
            state: State::Read(buf),
        }
    }

    fn write(&self, sector: u64, buf: &[u8]) -> impl Future<Output = Result<(), BlockError>> {
        Request {
            block: self,
            sector,
            state: State::Write(buf),
        }
    }

    /// On hvt a no-op (the ABI has no flush; completed writes are in the
    /// host's page cache); on spt `fdatasync` on the device.
    fn flush(&self) -> impl Future<Output = Result<(), BlockError>> {
        ready(sys::host::block_flush(self.handle.raw()).map_err(error))
    }
}

/// Where a [`Request`] is.
enum State<'a> {
    /// Not started: a read into this buffer.
    Read(&'a mut [u8]),
    /// Not started: a write of these bytes.
    Write(&'a [u8]),
    /// Queued for BLOCK_EXCHANGE with this id; a read's buffer to fill.
    Queued(u64, Option<&'a mut [u8]>),
    /// Completed.
    Done,
}

/// A read or write: performed by its first poll with the standard
/// hypercalls (or on spt), queued for BLOCK_EXCHANGE otherwise.
struct Request<'b, 'd> {
    block: &'b Block,
    sector: u64,
    state: State<'d>,
}

impl Request<'_, '_> {
    /// Queues the request (checked first); `Ready` with an error it fails.
    fn queue(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BlockError>> {
        let state = core::mem::replace(&mut self.state, State::Done);
        let (op, len, staged, out) = match state {
            State::Read(buf) => (Op::Read, buf.len(), vec![0; buf.len()], Some(buf)),
            State::Write(buf) => (Op::Write, buf.len(), buf.to_vec(), None),
            other => {
                self.state = other;
                return Poll::Pending;
            }
        };
        let offset = match self.block.info.check(self.sector, len) {
            Ok(offset) => offset,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let handle = self.block.handle.raw();
        let (id, send) = crate::platform::block_queue().lock().push(
            handle,
            offset,
            op,
            staged,
            cx.waker().clone(),
        );
        self.state = State::Queued(id, out);
        if send {
            crate::platform::block_exchange();
        }
        Poll::Pending
    }
}

impl Future for Request<'_, '_> {
    type Output = Result<(), BlockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if !this.block.batched {
            // The hypercall completes synchronously.
            let r = match core::mem::replace(&mut this.state, State::Done) {
                State::Read(buf) => this.block.read_now(this.sector, buf),
                State::Write(buf) => this.block.write_now(this.sector, buf),
                _ => Ok(()),
            };
            return Poll::Ready(r);
        }
        if matches!(this.state, State::Read(_) | State::Write(_))
            && let Poll::Ready(r) = this.queue(cx)
        {
            return Poll::Ready(r);
        }
        let State::Queued(id, _) = this.state else {
            return Poll::Ready(Ok(()));
        };
        let Some((ret, staged)) = crate::platform::block_queue().lock().take(id, cx.waker()) else {
            return Poll::Pending;
        };
        if let State::Queued(_, Some(buf)) = core::mem::replace(&mut this.state, State::Done) {
            buf.copy_from_slice(staged.get(..buf.len()).unwrap_or_default());
        }
        Poll::Ready(from_ret(ret).map_err(error))
    }
}

impl Drop for Request<'_, '_> {
    fn drop(&mut self) {
        if let State::Queued(id, _) = self.state {
            crate::platform::block_queue().lock().cancel(id);
        }
    }
}
