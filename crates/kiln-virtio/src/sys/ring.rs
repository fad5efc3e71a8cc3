//! Notification suppression on the network's virtqueues (the arithmetic is
//! in [`crate::notify`]): a transport wrapper that records where
//! `virtio-drivers` put each queue's rings, and the reads and writes of
//! their suppression fields (`avail_event`, `used_event`, the rings'
//! flags) that the crate's `VirtQueue` does not expose or gets wrong.

use core::sync::atomic::{Ordering, fence};

use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::notify;

/// Queues whose ring addresses are recorded (virtio-net's receive and
/// transmit queues).
const RECORDED: usize = 2;

/// A transport that records the driver and device areas of queues 0 and
/// 1 as `VirtQueue::new` gives them; everything else is the inner
/// transport's.
pub struct Tracked<T> {
    inner: T,
    areas: [Option<(PhysAddr, PhysAddr)>; RECORDED],
    /// Applied to the features `begin_init` writes (what the device
    /// offered of those asked for), whose result is written instead.
    filter: fn(u64) -> u64,
    /// The features written.
    features: u64,
}

impl<T: Transport> Tracked<T> {
    pub fn new(inner: T) -> Self {
        Self::with_filter(inner, |f| f)
    }

    /// A transport that writes `filter(features)` when the driver writes
    /// its features (features that depend on each other, taken together
    /// or not at all: `crate::offload::consistent`).
    pub fn with_filter(inner: T, filter: fn(u64) -> u64) -> Self {
        Tracked {
            inner,
            areas: [None; RECORDED],
            filter,
            features: 0,
        }
    }

    /// The features written to the device.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The rings of `queue` (of `size` entries), once set up.
    pub fn ring(&self, queue: u16, size: usize, event_idx: bool) -> Option<Ring> {
        let (avail, used) = (*self.areas.get(usize::from(queue))?)?;
        Some(Ring {
            avail: avail as usize,
            used: used as usize,
            size,
            event_idx,
            checked: 0,
        })
    }
}

impl<T: Transport> Transport for Tracked<T> {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features()
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.features = (self.filter)(driver_features);
        self.inner.write_driver_features(self.features)
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        kiln_x86::exits::count(super::host::EXIT_NOTIFY);
        self.inner.notify(queue)
    }
    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status)
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.inner.set_guest_page_size(guest_page_size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }
    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        if let Some(slot) = self.areas.get_mut(usize::from(queue)) {
            *slot = Some((driver_area, device_area));
        }
        self.inner
            .queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        if let Some(slot) = self.areas.get_mut(usize::from(queue)) {
            *slot = None;
        }
        self.inner.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }
    fn read_config_space<V: FromBytes + IntoBytes>(&self, offset: usize) -> Result<V> {
        self.inner.read_config_space(offset)
    }
    fn write_config_space<V: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: V,
    ) -> Result<()> {
        self.inner.write_config_space(offset, value)
    }
}

/// One queue's suppression fields. The addresses are those `VirtQueue`
/// gave the transport: identity-mapped heap memory (`sys::dma`) that lives
/// as long as the queue, which kiln never drops.
pub struct Ring {
    /// The available ring (the driver area).
    avail: usize,
    /// The used ring (the device area).
    used: usize,
    size: usize,
    event_idx: bool,
    /// The available index at the last [`Ring::should_notify`].
    checked: u16,
}

impl Ring {
    fn read(&self, addr: usize) -> u16 {
        // SAFETY: `addr` is a 2-byte aligned field of this queue's rings
        // (offsets from `notify`, within the sizes virtio-drivers
        // allocates with the event index fields), alive for the run.
        unsafe { (addr as *const u16).read_volatile() }
    }

    fn write(&self, addr: usize, value: u16) {
        // SAFETY: as in `read`; the device only reads the driver's
        // fields written here.
        unsafe { (addr as *mut u16).write_volatile(value) }
    }

    /// Whether the device wants to hear about the buffers added since the
    /// last call: with the event index, whether they crossed its
    /// `avail_event`; else whether the used ring's `NO_NOTIFY` is clear.
    pub fn should_notify(&mut self) -> bool {
        // The new available index must be visible before the device's
        // field is read (virtio 1.2, 2.7.13.4), or both sides could skip.
        fence(Ordering::SeqCst);
        let new = self.read(self.avail + notify::AVAIL_IDX);
        let old = core::mem::replace(&mut self.checked, new);
        if self.event_idx {
            let event = self.read(self.used + notify::avail_event_offset(self.size));
            notify::need_event(event, new, old)
        } else {
            new != old && self.read(self.used + notify::USED_FLAGS) & notify::USED_F_NO_NOTIFY == 0
        }
    }

    /// Asks the device to interrupt at its next used buffer, the driver
    /// having taken `popped`. The caller checks the used ring afterwards:
    /// a buffer used before the device saw this raises nothing.
    pub fn interrupts_on(&self, popped: u16) {
        if self.event_idx {
            self.write(self.avail + notify::used_event_offset(self.size), popped);
        } else {
            self.write(self.avail, 0);
        }
        fence(Ordering::SeqCst);
    }

    /// Asks the device not to interrupt (it may still, once, if it read
    /// the old value).
    pub fn interrupts_off(&self, popped: u16) {
        if self.event_idx {
            self.write(
                self.avail + notify::used_event_offset(self.size),
                notify::used_event_off(popped),
            );
        } else {
            self.write(self.avail, notify::AVAIL_F_NO_INTERRUPT);
        }
    }
}
