//! The virtio console (virtio 1.2, 5.3), when the VM has one: kiln's
//! console output goes to its port 0 instead of the 16550
//! (`sys::host::puts` asks here first). Transmit only, one buffer in
//! flight: a write is copied into the buffer, the device is notified
//! (unless it asked not to be) and the write returns once the device has
//! used the buffer, so that output is out before the VM exits. No
//! `VIRTIO_CONSOLE_F_MULTIPORT` (port 0's queues are 0 and 1, and QEMU
//! opens port 0 for such a driver) and no event index (one buffer at a
//! time gains nothing from it, and virtio-drivers 0.13's check of it is
//! wrong: `crate::notify`).
//!
//! A device that does not give the buffer back within [`WRITE_LIMIT_NANOS`]
//! is dropped: that write and every later one go to the 16550.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, Ordering};

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{SomeTransport, Transport};

use crate::sys::dma::KilnHal;
use crate::sys::ring::{Ring, Tracked};

/// Port 0's transmit queue.
const TRANSMIT_QUEUE: u16 = 1;
/// Entries of the queue (one is used at a time).
const QUEUE_SIZE: usize = 2;
/// The bytes one buffer carries; longer writes go in several.
const BUFFER_LEN: usize = 4096;
/// Longest the device may take to use a buffer.
const WRITE_LIMIT_NANOS: u64 = 1_000_000_000;

bitflags::bitflags! {
    /// The features kiln asks for (virtio 1.2, 5.3.3 and 6).
    #[derive(Copy, Clone, Debug, Default, Eq, PartialEq)]
    struct Features: u64 {
        /// Virtio 1.0 or later.
        const VERSION_1 = 1 << 32;
    }
}

struct Port {
    transport: Tracked<SomeTransport<'static>>,
    queue: VirtQueue<KilnHal, QUEUE_SIZE>,
    ring: Ring,
    buffer: Box<[u8]>,
}

/// The console, once a device was found; `try_lock`ed by writers, so a
/// write from inside a write (a fault, a panic) goes to the 16550.
static PORT: spin::Mutex<Option<Port>> = spin::Mutex::new(None);
/// Whether [`PORT`] holds a console (read without the lock).
static UP: AtomicBool = AtomicBool::new(false);

/// Brings up the virtio console on `transport`; later output goes to it.
/// A second console is left alone.
pub fn attach(transport: SomeTransport<'static>) -> Result<(), virtio_drivers::Error> {
    if UP.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut transport = Tracked::new(transport);
    transport.begin_init(Features::VERSION_1);
    let queue = VirtQueue::new(&mut transport, TRANSMIT_QUEUE, false, false)?;
    let ring = transport
        .ring(TRANSMIT_QUEUE, QUEUE_SIZE, false)
        .ok_or(virtio_drivers::Error::InvalidParam)?;
    // Never an interrupt: the writer waits for the used buffer itself.
    ring.interrupts_off(0);
    transport.finish_init();
    *PORT.lock() = Some(Port {
        transport,
        queue,
        ring,
        buffer: alloc::vec![0u8; BUFFER_LEN].into_boxed_slice(),
    });
    UP.store(true, Ordering::Release);
    Ok(())
}

/// Writes `bytes` to the virtio console; false if there is none (or it is
/// busy, or stopped answering), and the caller writes to the 16550.
pub fn write(bytes: &[u8]) -> bool {
    if !UP.load(Ordering::Acquire) {
        return false;
    }
    let Some(mut guard) = PORT.try_lock() else {
        return false;
    };
    let Some(port) = guard.as_mut() else {
        return false;
    };
    for chunk in bytes.chunks(BUFFER_LEN) {
        if !port.send(chunk) {
            // The device kept the buffer: never touch the port again.
            core::mem::forget(guard.take());
            UP.store(false, Ordering::Release);
            return false;
        }
    }
    true
}

impl Port {
    /// Sends `chunk` (at most [`BUFFER_LEN`] bytes) and waits until the
    /// device has used it; false if it did not within the limit.
    fn send(&mut self, chunk: &[u8]) -> bool {
        let len = chunk.len();
        self.buffer[..len].copy_from_slice(chunk);
        let data = &self.buffer[..len];
        // SAFETY: the buffer is not written again until the device gives
        // it back (`pop_used` below), or ever, if it does not (the port is
        // then forgotten); it is a boxed slice that never moves.
        let Ok(token) = (unsafe { self.queue.add(&[data], &mut []) }) else {
            return false;
        };
        if self.ring.should_notify() {
            self.transport.notify(TRANSMIT_QUEUE);
        }
        let limit = super::clock::now()
            .as_nanos()
            .saturating_add(WRITE_LIMIT_NANOS);
        while self.queue.peek_used() != Some(token) {
            if super::clock::now().as_nanos() > limit {
                return false;
            }
            core::hint::spin_loop();
        }
        // SAFETY: the token and buffer are the pair added above.
        unsafe { self.queue.pop_used(token, &[data], &mut []) }.is_ok()
    }
}
