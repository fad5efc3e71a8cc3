//! The virtio devices, through the `virtio-drivers` crate: discovery of the
//! transports at boot (virtio-mmio from the command line; virtio-pci on
//! bus 0 through the configuration ports 0xcf8/0xcfc when the command line
//! announced no device and a host bridge answers: about 40 configuration
//! reads, each an exit), the virtio console (`sys::virtio_console`), the network
//! interface and the block device over them, and the check of their queues
//! that the platform's polling wait makes.
//!
//! The network interface drives `virtio-drivers`' virtqueues itself (the
//! crate's net drivers notify the device on every frame): it keeps
//! [`RX_BUFFERS`] receive buffers posted and [`TX_BUFFERS`] send buffers
//! ([`LARGE_BUFFERS`] of 64 KiB each way with the offloads),
//! copies a received frame once (from the posted buffer, which also holds
//! the virtio-net header, into the caller's), lets kiln-net build a frame
//! to send in a free send buffer behind the header
//! (`NetworkInterface::send_in_place`; `poll_send` copies one built
//! elsewhere), and notifies the device
//! once per wait of the runtime (or when [`NOTIFY_BATCH`] frames are
//! waiting), not once per frame: each notification is an MMIO write, an
//! exit, emulated on hypervisors that emulate CPL 3 MMIO (KVM's PVM).
//! Checksums and TCP segmentation are left to the device when it offers
//! them (`crate::offload`): the frames then carry the virtio-net header
//! kiln-net's stack reads and writes (`NetworkInterface::vnet_header`),
//! segments of up to 64 KiB each way, in receive buffers of that size.
//! Notifications are suppressed both ways with the event index
//! (`sys::ring`): kiln notifies only when the device asked for it (when it
//! went idle, or ran out of receive buffers), and the device interrupts
//! only while the wait is about to halt. Block requests wait for their
//! completion (the device answers within the exit that the notification
//! causes under QEMU's default thread model, or shortly after).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::future::{Future, ready};
use core::ptr::NonNull;
use core::task::{Context, Poll, Waker};

use kiln_devices::net::{ETHERNET_HEADER_LEN, VNET_HEADER_LEN, VNET_MAX_FRAME};
use kiln_devices::{BlockError, BlockInfo, MacAddress, NetError};
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Command as PciCommand, ConfigurationAccess, DeviceFunction, MemoryBarType, PciRoot,
};
use virtio_drivers::transport::{DeviceType, SomeTransport, Transport};

use crate::cmdline::MmioDevice;
use crate::offload;
use crate::sys::dma::KilnHal;
use crate::sys::ring::{Ring, Tracked};

/// Entries of each virtqueue.
const QUEUE_SIZE: usize = 64;
/// Receive buffers posted to a network device.
pub const RX_BUFFERS: usize = 32;
/// Send buffers of a network device.
pub const TX_BUFFERS: usize = 32;
/// The MTU kiln's interfaces report.
const MTU: usize = 1500;
/// A buffer: the virtio-net header (at most 12 bytes) and a frame.
const BUFFER_LEN: usize = 12 + MTU + ETHERNET_HEADER_LEN;
/// A buffer with offloads: the header and a segment of up to 64 KiB.
const LARGE_BUFFER_LEN: usize = 12 + VNET_MAX_FRAME;
/// Receive and send buffers each, with offloads: 16 of 64 KiB each way,
/// 2 MiB in all, allocated when the device comes up (a guest too small
/// for them stops at boot, not under its first bulk transfer).
const LARGE_BUFFERS: usize = 16;
/// `EIO`, for errors the drivers report.
const EIO: i32 = 5;
/// Frames queued without a notification before `poll_send` notifies.
pub const NOTIFY_BATCH: usize = 16;
/// virtio-net's queues.
const QUEUE_RECEIVE: u16 = 0;
const QUEUE_TRANSMIT: u16 = 1;

bitflags::bitflags! {
    /// The virtio-net features kiln asks for (virtio 1.2, 5.1.3).
    #[derive(Copy, Clone, Debug, Default, Eq, PartialEq)]
    struct NetFeatures: u64 {
        /// The checksum and segmentation offloads (`crate::offload`).
        const CSUM = offload::CSUM;
        const GUEST_CSUM = offload::GUEST_CSUM;
        const GUEST_TSO4 = offload::GUEST_TSO4;
        const GUEST_TSO6 = offload::GUEST_TSO6;
        const HOST_TSO4 = offload::HOST_TSO4;
        const HOST_TSO6 = offload::HOST_TSO6;
        /// The device has a MAC address in its configuration.
        const MAC = 1 << 5;
        /// The device has a link status in its configuration.
        const STATUS = 1 << 16;
        /// `used_event` and `avail_event` suppress notifications.
        const RING_EVENT_IDX = 1 << 29;
        /// Virtio 1.0 or later: the 12-byte header.
        const VERSION_1 = 1 << 32;
    }
}

type Dev = SomeTransport<'static>;

/// How a network device interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Irq {
    /// A virtio-mmio line, routed through the IOAPIC that serves its GSI.
    Line(u32),
    /// virtio-pci MSI-X, enabled at discovery (table entry 0: kiln's device
    /// vector at APIC 0); the address of the function's common
    /// configuration, where each queue is given vector 0 once set up.
    Msix(u64),
}

/// The transports found at boot, by type, in the order the VMM listed them;
/// each is taken by the first `Env::net`/`Env::block` for its position.
static FOUND: spin::Mutex<Found> = spin::Mutex::new(Found {
    nets: Vec::new(),
    blocks: Vec::new(),
});

struct Found {
    /// The network transports and their interrupt lines (virtio-mmio
    /// only).
    nets: Vec<Option<(Dev, Option<Irq>)>>,
    blocks: Vec<Option<Dev>>,
}

/// PCI configuration space through the legacy ports (configuration
/// mechanism #1): every q35/pc VMM has them.
struct PortCam;

/// `CONFIG_ADDRESS` and `CONFIG_DATA`.
const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
const PCI_CONFIG_DATA: u16 = 0xcfc;
/// virtio's PCI vendor.
const VIRTIO_VENDOR: u32 = 0x1af4;

impl ConfigurationAccess for PortCam {
    fn read_word(&self, f: DeviceFunction, register_offset: u8) -> u32 {
        super::arch::outl(PCI_CONFIG_ADDRESS, config_address(f, register_offset));
        super::arch::inl(PCI_CONFIG_DATA)
    }

    fn write_word(&mut self, f: DeviceFunction, register_offset: u8, data: u32) {
        super::arch::outl(PCI_CONFIG_ADDRESS, config_address(f, register_offset));
        super::arch::outl(PCI_CONFIG_DATA, data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

fn config_address(f: DeviceFunction, register_offset: u8) -> u32 {
    0x8000_0000
        | (u32::from(f.bus) << 16)
        | (u32::from(f.device & 0x1f) << 11)
        | (u32::from(f.function & 0x7) << 8)
        | u32::from(register_offset & 0xfc)
}

/// Where kiln puts the memory BARs a firmware left unassigned: q35's
/// 32-bit PCI hole above its MMCONFIG window (0xb000_0000, 256 MiB), below
/// the IOAPIC, inside kiln's device window for up to 3 GiB of RAM.
const BAR_WINDOW: core::ops::Range<u64> = 0xc000_0000..0xfec0_0000;

/// `CONFIG_ADDRESS` offset of BAR 0.
const BAR0: u8 = 0x10;

/// Whether every memory BAR of `f` reads as address 0: a firmware that
/// assigns no BARs (qboot, which `kiln run --machine q35` boots through)
/// left them to the guest. Six configuration reads.
fn bars_unassigned(f: DeviceFunction) -> bool {
    (0..6).all(|i| {
        let bar = PortCam.read_word(f, BAR0 + 4 * i);
        bar & 1 == 1 || bar & 0xffff_fff0 == 0
    })
}

/// Gives each memory BAR of `f` an address in [`BAR_WINDOW`] after
/// `next` (aligned to its size, as PCI requires); a BAR that does not
/// fit is left unassigned (the transport then fails to come up).
fn assign_bars(root: &mut PciRoot<PortCam>, f: DeviceFunction, next: &mut u64) {
    let Ok(bars) = root.bars(f) else {
        return;
    };
    for (i, bar) in bars.iter().enumerate() {
        let Some(BarInfo::Memory {
            address_type, size, ..
        }) = bar
        else {
            continue;
        };
        let Some(address) = next.checked_next_multiple_of(*size) else {
            continue;
        };
        let end = address.saturating_add(*size);
        if *size == 0 || end > BAR_WINDOW.end {
            continue;
        }
        let index = i as u8;
        match address_type {
            MemoryBarType::Width32 => root.set_bar_32(f, index, address as u32),
            MemoryBarType::Width64 => root.set_bar_64(f, index, address),
            _ => continue,
        }
        *next = end;
    }
}

/// PCI capability IDs: MSI-X, and vendor-specific (virtio's structures).
const CAP_MSIX: u8 = 0x11;
const CAP_VENDOR: u8 = 0x09;
/// `cfg_type` of virtio's common configuration (virtio 1.2, 4.1.4).
const VIRTIO_PCI_CAP_COMMON_CFG: u32 = 1;
/// The common configuration's `queue_select` and `queue_msix_vector`.
const COMMON_QUEUE_SELECT: u64 = 0x16;
const COMMON_QUEUE_MSIX_VECTOR: u64 = 0x1a;

/// The address of memory BAR `bar` of `f`, if it has one kiln can reach.
fn bar_address(f: DeviceFunction, bar: u8) -> Option<u64> {
    if bar > 5 {
        return None;
    }
    let low = PortCam.read_word(f, BAR0 + 4 * bar);
    if low & 1 == 1 {
        return None;
    }
    let mut address = u64::from(low & 0xffff_fff0);
    if (low >> 1) & 0b11 == 0b10 && bar < 5 {
        address |= u64::from(PortCam.read_word(f, BAR0 + 4 * (bar + 1))) << 32;
    }
    let window = crate::sys::paging::device_window_start();
    (address >= window && address < 1 << 32).then_some(address)
}

fn mmio_write32(addr: u64, value: u32) {
    // SAFETY: callers pass an address inside a BAR of a virtio function
    // (checked by `bar_address` to lie in the device window, which kiln's
    // page tables map uncached for the whole run), at a register offset
    // the function's capabilities name.
    unsafe { (addr as *mut u32).write_volatile(value) }
}

/// Enables MSI-X on virtio-pci function `f` with table entry 0 sending
/// kiln's device vector to APIC 0; the address of its common
/// configuration, or `None` (no MSI-X, or a structure kiln cannot reach:
/// the device is then polled).
fn enable_msix(root: &PciRoot<PortCam>, f: DeviceFunction) -> Option<u64> {
    let (mut msix, mut common) = (None, None);
    for cap in root.capabilities(f) {
        if cap.id == CAP_MSIX {
            msix = Some(cap.offset);
        } else if cap.id == CAP_VENDOR
            && (PortCam.read_word(f, cap.offset) >> 24) & 0xff == VIRTIO_PCI_CAP_COMMON_CFG
        {
            let bar = (PortCam.read_word(f, cap.offset + 4) & 0xff) as u8;
            let offset = PortCam.read_word(f, cap.offset + 8);
            common = bar_address(f, bar).map(|b| b + u64::from(offset));
        }
    }
    let (msix, common) = (msix?, common?);
    let table = PortCam.read_word(f, msix + 4);
    let entry = bar_address(f, (table & 0b111) as u8)? + u64::from(table & !0b111);
    // Message address (APIC 0, physical), upper address, data (fixed
    // delivery, edge), vector control (unmasked).
    mmio_write32(entry, 0xfee0_0000);
    mmio_write32(entry + 4, 0);
    mmio_write32(entry + 8, u32::from(super::cpu::DEVICE_VECTOR));
    mmio_write32(entry + 12, 0);
    // Message control (the upper half of the capability's first word):
    // MSI-X enable (bit 15) on, function mask (bit 14) off.
    let first = PortCam.read_word(f, msix);
    let enabled = (first | 1 << 31) & !(1 << 30);
    PortCam.write_word(f, msix, enabled);
    Some(common)
}

/// Gives the network queues of the function whose common configuration
/// is at `common` MSI-X vector 0; whether the device took it (QEMU answers
/// `VIRTIO_MSI_NO_VECTOR` for a vector it cannot use).
fn route_queues(common: u64) -> bool {
    [QUEUE_RECEIVE, QUEUE_TRANSMIT].iter().all(|&queue| {
        // SAFETY: `common` is the common configuration structure
        // (`enable_msix` found it in a BAR in the device window, mapped
        // uncached); these are its 16-bit `queue_select` and
        // `queue_msix_vector`, which nothing else writes after the
        // device's initialisation.
        unsafe {
            ((common + COMMON_QUEUE_SELECT) as *mut u16).write_volatile(queue);
            ((common + COMMON_QUEUE_MSIX_VECTOR) as *mut u16).write_volatile(0);
            ((common + COMMON_QUEUE_MSIX_VECTOR) as *const u16).read_volatile() == 0
        }
    })
}

/// Finds the virtio devices on PCI bus 0, in slot order (QEMU gives slots
/// in `-device` order), giving their BARs addresses where the firmware did
/// not. Only function 0 of single-function devices is read: a full scan of
/// 256 functions would be 512 exits.
fn discover_pci(found: &mut Found) {
    let mut root = PciRoot::new(PortCam);
    let mut next_bar = BAR_WINDOW
        .start
        .max(crate::sys::paging::device_window_start());
    for device in 0..32 {
        let f = DeviceFunction {
            bus: 0,
            device,
            function: 0,
        };
        let id = PortCam.read_word(f, 0);
        if id & 0xffff != VIRTIO_VENDOR {
            continue;
        }
        if bars_unassigned(f) {
            assign_bars(&mut root, f, &mut next_bar);
        }
        let (_, command) = root.get_status_command(f);
        root.set_command(
            f,
            command | PciCommand::MEMORY_SPACE | PciCommand::BUS_MASTER,
        );
        let Ok(transport) = PciTransport::new::<KilnHal, _>(&mut root, f) else {
            continue;
        };
        let transport: Dev = transport.into();
        match transport.device_type() {
            DeviceType::Network => {
                let irq = enable_msix(&root, f).map(Irq::Msix);
                found.nets.push(Some((transport, irq)));
            }
            DeviceType::Block => found.blocks.push(Some(transport)),
            DeviceType::Console => attach_console(transport),
            _ => {}
        }
    }
}

/// Whether there is a PCI bus: a host bridge answers at 0:0.0 (q35, pc;
/// on microvm the read gives all ones).
fn pci_bus_present() -> bool {
    let host_bridge = DeviceFunction {
        bus: 0,
        device: 0,
        function: 0,
    };
    PortCam.read_word(host_bridge, 0) & 0xffff != 0xffff
}

/// Output goes to a virtio console from now on (`sys::virtio_console`);
/// one that cannot be set up is left alone (the 16550 stays).
fn attach_console(transport: Dev) {
    let _ = super::virtio_console::attach(transport);
}

/// Why a transport was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The window lies outside the device window (RAM, or past 4 GiB).
    #[error(
        "virtio-mmio device at {base:#x} (+{size:#x}) is outside the device window {window_start:#x}..4 GiB"
    )]
    OutsideWindow {
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
        /// Where the device window starts.
        window_start: u64,
    },
}

/// Finds the virtio-mmio devices the command line announced, or, when it
/// announced none and there is a PCI bus, the virtio devices on bus 0. A
/// virtio console is set up at once (it takes the console's output);
/// devices of other types, and windows without a device, are skipped.
pub fn discover(mmio: &[MmioDevice]) -> Result<(), DiscoveryError> {
    let window_start = crate::sys::paging::device_window_start();
    let mut found = FOUND.lock();
    for d in mmio {
        let end = d.base.checked_add(d.size);
        if d.base < window_start || end.is_none_or(|e| e > 1 << 32) {
            return Err(DiscoveryError::OutsideWindow {
                base: d.base,
                size: d.size,
                window_start,
            });
        }
        let Some(header) = NonNull::new(d.base as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: the window lies in the device window, which kiln's page
        // tables map uncached for the whole run; the command line names
        // each window once, and nothing else uses it.
        let Ok(transport) = (unsafe { MmioTransport::new(header, d.size as usize) }) else {
            continue;
        };
        let transport: Dev = transport.into();
        match transport.device_type() {
            DeviceType::Network => found.nets.push(Some((transport, Some(Irq::Line(d.irq))))),
            DeviceType::Block => found.blocks.push(Some(transport)),
            DeviceType::Console => attach_console(transport),
            _ => {}
        }
    }
    if mmio.is_empty() && pci_bus_present() {
        discover_pci(&mut found);
    }
    Ok(())
}

/// How many network and block devices were found.
pub fn counts() -> (usize, usize) {
    let found = FOUND.lock();
    (found.nets.len(), found.blocks.len())
}

/// Takes the `position`th network (or block) transport found at boot and
/// its interrupt line.
fn take(block: bool, position: usize) -> Option<(Dev, Option<Irq>)> {
    let mut found = FOUND.lock();
    if block {
        found
            .blocks
            .get_mut(position)
            .and_then(Option::take)
            .map(|d| (d, None))
    } else {
        found.nets.get_mut(position).and_then(Option::take)
    }
}

/// What the platform's wait checks.
static NETS: spin::Mutex<Vec<&'static spin::Mutex<NetState>>> = spin::Mutex::new(Vec::new());

/// Whether the wait may halt: every network device the unikernel took can
/// interrupt (virtio-mmio, with its line), and the LAPIC and IOAPIC are
/// set up (`sys::idle`, once).
pub fn can_halt() -> bool {
    let nets = NETS.lock();
    let mut irqs = alloc::vec::Vec::new();
    for net in nets.iter() {
        match net.lock().irq {
            Some(Irq::Line(irq)) => irqs.push(irq),
            Some(Irq::Msix(_)) => {}
            None => return false,
        }
    }
    super::idle::ready(irqs.into_iter())
}

/// Before a halt: asks every network device to interrupt at its next
/// received frame (and at its next sent one when a task waits for a send
/// buffer), and acknowledges the interrupts delivered since the last halt
/// so that each line drops and the next used buffer raises it again (an
/// edge the IOAPIC sees). No interrupt delivered: no acknowledgement, whose
/// register read is an exit. The caller checks the queues afterwards.
pub fn arm_all() {
    let delivered = super::cpu::device_interrupts();
    let ack = ACKED.swap(delivered, core::sync::atomic::Ordering::Relaxed) != delivered;
    for net in NETS.lock().iter() {
        let mut state = net.lock();
        state.rx_ring.interrupts_on(state.rx_popped);
        if state.tx_waker.is_some() {
            state.tx_ring.interrupts_on(state.tx_popped);
        }
        // An MSI-X message raises no line to lower.
        if ack && matches!(state.irq, Some(Irq::Line(_))) {
            let _ = state.transport.ack_interrupt();
        }
    }
}

/// The count of device interrupts at the last acknowledgement (`u64::MAX`:
/// none yet, so the first halt acknowledges).
static ACKED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(u64::MAX);

/// Notifies every network device of the buffers queued since the last
/// notification (the start of each wait, and exit).
pub fn flush_all() {
    for net in NETS.lock().iter() {
        if let Some(mut state) = net.try_lock() {
            state.notify();
        }
    }
}

/// Checks every network device's queues and wakes the tasks waiting on one
/// that has work; true if it woke any.
pub fn poll_all() -> bool {
    let nets = NETS.lock();
    let mut woke = false;
    for net in nets.iter() {
        let Some(mut state) = net.try_lock() else {
            continue;
        };
        if state.rx_waker.is_some() && state.rx_queue.peek_used().is_some() {
            if let Some(w) = state.rx_waker.take() {
                w.wake();
            }
            woke = true;
        }
        if state.tx_waker.is_some() && state.reap() {
            if let Some(w) = state.tx_waker.take() {
                w.wake();
            }
            woke = true;
        }
    }
    woke
}

struct NetState {
    transport: Tracked<Dev>,
    rx_queue: VirtQueue<KilnHal, QUEUE_SIZE>,
    tx_queue: VirtQueue<KilnHal, QUEUE_SIZE>,
    /// The queues' suppression fields.
    rx_ring: Ring,
    tx_ring: Ring,
    /// Used buffers taken from each queue, modulo 2^16 (the crate's
    /// `last_used_idx`).
    rx_popped: u16,
    tx_popped: u16,
    /// The virtio-net header's length: 12 (virtio 1), else 10.
    header: usize,
    /// The offloads are on: frames carry the header to and from the
    /// stack, and may be 64 KiB long.
    vnet: bool,
    /// Its interrupt line, if it has one kiln can route.
    irq: Option<Irq>,
    /// The receive buffers, each posted to the device.
    rx: Vec<Box<[u8]>>,
    /// The receive buffer of each token.
    rx_of_token: [usize; QUEUE_SIZE],
    /// The send buffers.
    tx: Vec<Box<[u8]>>,
    /// The send buffers not with the device.
    tx_free: Vec<usize>,
    /// The send buffer of each token.
    tx_of_token: [usize; QUEUE_SIZE],
    /// The length each send buffer was added with.
    tx_len: [usize; TX_BUFFERS],
    /// Buffers added to each queue since its last notification.
    rx_unnotified: usize,
    tx_unnotified: usize,
    rx_waker: Option<Waker>,
    tx_waker: Option<Waker>,
}

impl NetState {
    /// Posts receive buffer `i` (the device is told at the next
    /// notification).
    fn post(&mut self, i: usize) -> Result<(), NetError> {
        // SAFETY: buffer `i` is not touched again until the device returns
        // it (`pop_used` with the token recorded here); it is a boxed slice
        // that never moves.
        let token = unsafe { self.rx_queue.add(&[], &mut [&mut self.rx[i]]) }
            .map_err(|_| NetError::Io(EIO))?;
        let slot = self
            .rx_of_token
            .get_mut(usize::from(token))
            .ok_or(NetError::Io(EIO))?;
        *slot = i;
        self.rx_unnotified += 1;
        Ok(())
    }

    /// Tells the device about the buffers added since the last time, if
    /// it asked to be told (event index or the used ring's flag; not
    /// `VirtQueue::should_notify`, see `crate::notify`).
    fn notify(&mut self) {
        if self.tx_unnotified > 0 {
            self.tx_unnotified = 0;
            if self.tx_ring.should_notify() {
                self.transport.notify(QUEUE_TRANSMIT);
            }
        }
        if self.rx_unnotified > 0 {
            self.rx_unnotified = 0;
            if self.rx_ring.should_notify() {
                self.transport.notify(QUEUE_RECEIVE);
            }
        }
    }

    /// Hands send buffer `i`, taken from `tx_free` and holding `len`
    /// bytes (header and frame), to the device; back to `tx_free` if the
    /// queue refuses it. Notifies once [`NOTIFY_BATCH`] frames wait.
    fn publish(&mut self, i: usize, len: usize) -> Result<(), NetError> {
        // SAFETY: buffer `i` is not touched until `reap` takes it back
        // with this token; it is a boxed slice that never moves.
        let added = unsafe { self.tx_queue.add(&[&self.tx[i][..len]], &mut []) };
        let sent = added.map_err(|_| NetError::Io(EIO)).and_then(|token| {
            let slot = self
                .tx_of_token
                .get_mut(usize::from(token))
                .ok_or(NetError::Io(EIO))?;
            *slot = i;
            self.tx_len[i] = len;
            self.tx_unnotified += 1;
            Ok(())
        });
        if sent.is_err() {
            self.tx_free.push(i);
        } else if self.tx_unnotified >= NOTIFY_BATCH {
            self.notify();
        }
        sent
    }

    /// Takes back the send buffers the device is done with; true if any.
    fn reap(&mut self) -> bool {
        let mut any = false;
        while let Some(token) = self.tx_queue.peek_used() {
            let Some(&i) = self.tx_of_token.get(usize::from(token)) else {
                break;
            };
            let len = self.tx_len[i];
            // SAFETY: the token and buffer are the pair `publish` added,
            // with the length it gave.
            if unsafe {
                self.tx_queue
                    .pop_used(token, &[&self.tx[i][..len]], &mut [])
            }
            .is_err()
            {
                break;
            }
            self.tx_popped = self.tx_popped.wrapping_add(1);
            self.tx_free.push(i);
            any = true;
        }
        if any {
            // `pop_used` asked for an interrupt at the next used buffer.
            self.tx_ring.interrupts_off(self.tx_popped);
        }
        any
    }
}

/// A virtio-net interface.
pub struct Net {
    state: &'static spin::Mutex<NetState>,
    mac: MacAddress,
    vnet: bool,
}

impl Net {
    /// Brings up the `position`th virtio-net device; `None` if there is no
    /// such device.
    pub(crate) fn take(position: usize) -> Option<Result<Net, virtio_drivers::Error>> {
        let (transport, irq) = take(false, position)?;
        Some(Self::new(transport, irq))
    }

    fn new(transport: Dev, irq: Option<Irq>) -> Result<Net, virtio_drivers::Error> {
        // The offloads as a set or not at all (`offload::consistent`):
        // what the device is told, and what `features` holds.
        let mut transport = Tracked::with_filter(transport, offload::consistent);
        transport.begin_init(
            NetFeatures::MAC
                | NetFeatures::STATUS
                | NetFeatures::RING_EVENT_IDX
                | NetFeatures::VERSION_1
                | NetFeatures::from_bits_retain(offload::ASKED),
        );
        let features = NetFeatures::from_bits_retain(transport.features());
        let vnet = offload::enabled(features.bits());
        // The MAC address: the first six bytes of the configuration.
        let mac: [u8; 6] = transport.read_consistent(|| transport.read_config_space(0))?;
        let event_idx = features.contains(NetFeatures::RING_EVENT_IDX);
        let rx_queue = VirtQueue::new(&mut transport, QUEUE_RECEIVE, false, event_idx)?;
        let tx_queue = VirtQueue::new(&mut transport, QUEUE_TRANSMIT, false, event_idx)?;
        let (Some(rx_ring), Some(tx_ring)) = (
            transport.ring(QUEUE_RECEIVE, QUEUE_SIZE, event_idx),
            transport.ring(QUEUE_TRANSMIT, QUEUE_SIZE, event_idx),
        ) else {
            return Err(virtio_drivers::Error::InvalidParam);
        };
        rx_ring.interrupts_off(0);
        tx_ring.interrupts_off(0);
        // MSI-X: the queues' vector, set before the device runs them.
        let irq = match irq {
            Some(Irq::Msix(common)) if !route_queues(common) => None,
            irq => irq,
        };
        transport.finish_init();
        let header = if features.contains(NetFeatures::VERSION_1) {
            12
        } else {
            10
        };
        let buffer = |len: usize| alloc::vec![0u8; len].into_boxed_slice();
        let (len, rx_count, tx_count) = if vnet {
            (LARGE_BUFFER_LEN, LARGE_BUFFERS, LARGE_BUFFERS)
        } else {
            (BUFFER_LEN, RX_BUFFERS, TX_BUFFERS)
        };
        let mut state = NetState {
            transport,
            rx_queue,
            tx_queue,
            rx_ring,
            tx_ring,
            rx_popped: 0,
            tx_popped: 0,
            header,
            vnet,
            irq,
            rx: (0..rx_count).map(|_| buffer(len)).collect(),
            rx_of_token: [0; QUEUE_SIZE],
            tx: (0..tx_count).map(|_| buffer(len)).collect(),
            tx_free: (0..tx_count).rev().collect(),
            tx_of_token: [0; QUEUE_SIZE],
            tx_len: [0; TX_BUFFERS],
            rx_unnotified: 0,
            tx_unnotified: 0,
            rx_waker: None,
            tx_waker: None,
        };
        for i in 0..rx_count {
            state
                .post(i)
                .map_err(|_| virtio_drivers::Error::QueueFull)?;
        }
        state.notify();
        let state: &'static spin::Mutex<NetState> = Box::leak(Box::new(spin::Mutex::new(state)));
        NETS.lock().push(state);
        Ok(Net {
            state,
            mac: MacAddress(mac),
            vnet,
        })
    }
}

impl kiln_devices::NetworkInterface for Net {
    fn mac(&self) -> MacAddress {
        self.mac
    }

    fn mtu(&self) -> usize {
        MTU
    }

    fn vnet_header(&self) -> bool {
        self.vnet
    }

    fn poll_receive(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>> {
        let needed = self.max_frame();
        if buf.len() < needed {
            return Poll::Ready(Err(NetError::BufferTooSmall {
                len: buf.len(),
                needed,
            }));
        }
        let mut state = self.state.lock();
        let Some(token) = state.rx_queue.peek_used() else {
            state.rx_waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let Some(&i) = state.rx_of_token.get(usize::from(token)) else {
            return Poll::Ready(Err(NetError::Io(EIO)));
        };
        let s = &mut *state;
        // SAFETY: the token and buffer are the pair `post` added.
        let done = unsafe { s.rx_queue.pop_used(token, &[], &mut [&mut s.rx[i]]) };
        if done.is_ok() {
            // `pop_used` asked for an interrupt at the next used buffer.
            s.rx_popped = s.rx_popped.wrapping_add(1);
            s.rx_ring.interrupts_off(s.rx_popped);
        }
        let (header, vnet) = (s.header, s.vnet);
        let copied = done.map_err(|_| NetError::Io(EIO)).and_then(|len| {
            let used = s.rx[i].get(..len as usize).ok_or(NetError::Io(EIO))?;
            if vnet {
                return offload::from_device(used, header, buf).ok_or(NetError::Io(EIO));
            }
            let frame = used
                .get(header..)
                .filter(|f| f.len() <= buf.len())
                .ok_or(NetError::Io(EIO))?;
            buf[..frame.len()].copy_from_slice(frame);
            Ok(frame.len())
        });
        let reposted = state.post(i);
        Poll::Ready(reposted.and(copied))
    }

    fn poll_send(&self, cx: &mut Context<'_>, frame: &[u8]) -> Poll<Result<(), NetError>> {
        let max = self.max_frame();
        if frame.len() > max {
            return Poll::Ready(Err(NetError::FrameTooLarge {
                len: frame.len(),
                max,
            }));
        }
        let mut state = self.state.lock();
        if state.tx_free.is_empty() {
            state.reap();
        }
        let Some(i) = state.tx_free.pop() else {
            state.tx_waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let s = &mut *state;
        let header = s.header;
        let len = if s.vnet {
            offload::to_device(frame, header, &mut s.tx[i])
        } else {
            let len = header + frame.len();
            s.tx[i][..header].fill(0);
            s.tx[i][header..len].copy_from_slice(frame);
            Some(len)
        };
        let Some(len) = len else {
            s.tx_free.push(i);
            return Poll::Ready(Err(NetError::FrameTooLarge {
                len: frame.len(),
                max,
            }));
        };
        Poll::Ready(s.publish(i, len))
    }

    /// Builds the frame in a free send buffer, behind the device's
    /// virtio-net header, as `poll_send` would have copied it there.
    fn send_in_place(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Option<Result<(), NetError>> {
        if len > self.max_frame() {
            return None;
        }
        let mut state = self.state.lock();
        if state.tx_free.is_empty() {
            state.reap();
        }
        let s = &mut *state;
        let i = *s.tx_free.last()?;
        let used = offload::fill_device(&mut s.tx[i], s.header, s.vnet, len, fill)?;
        s.tx_free.pop();
        Some(s.publish(i, used))
    }
}

impl Net {
    /// The longest frame to or from the stack: with the offloads, its
    /// virtio-net header and a segment of up to 64 KiB.
    fn max_frame(&self) -> usize {
        if self.vnet {
            VNET_HEADER_LEN + VNET_MAX_FRAME
        } else {
            MTU + ETHERNET_HEADER_LEN
        }
    }
}

/// A virtio-blk device.
pub struct Block {
    dev: spin::Mutex<VirtIOBlk<KilnHal, Dev>>,
    info: BlockInfo,
}

/// Offset of `blk_size` in `struct virtio_blk_config`.
const BLK_SIZE_OFFSET: usize = 20;

impl Block {
    /// Brings up the `position`th virtio-blk device; `None` if there is no
    /// such device.
    pub(crate) fn take(position: usize) -> Option<Result<Block, virtio_drivers::Error>> {
        let (transport, _) = take(true, position)?;
        Some(Self::new(transport))
    }

    fn new(transport: Dev) -> Result<Block, virtio_drivers::Error> {
        // The logical block size the VMM gives (QEMU's
        // logical_block_size), if it is one kiln can use; else 512.
        let blk_size: u32 = transport.read_config_space(BLK_SIZE_OFFSET).unwrap_or(0);
        let sector_size = if blk_size.is_power_of_two() && (512..=65536).contains(&blk_size) {
            blk_size
        } else {
            SECTOR_SIZE as u32
        };
        let dev = VirtIOBlk::<KilnHal, Dev>::new(transport)?;
        let bytes = dev.capacity().saturating_mul(SECTOR_SIZE as u64);
        let info = BlockInfo {
            sector_size,
            sectors: bytes / u64::from(sector_size),
            read_only: dev.readonly(),
        };
        Ok(Block {
            dev: spin::Mutex::new(dev),
            info,
        })
    }

    fn read_now(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let offset = self.info.check(sector, buf.len())?;
        let block =
            usize::try_from(offset / SECTOR_SIZE as u64).map_err(|_| BlockError::Io(EIO))?;
        self.dev
            .lock()
            .read_blocks(block, buf)
            .map_err(|_| BlockError::Io(EIO))
    }

    fn write_now(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        let offset = self.info.check(sector, buf.len())?;
        if self.info.read_only {
            return Err(BlockError::ReadOnly);
        }
        let block =
            usize::try_from(offset / SECTOR_SIZE as u64).map_err(|_| BlockError::Io(EIO))?;
        self.dev
            .lock()
            .write_blocks(block, buf)
            .map_err(|_| BlockError::Io(EIO))
    }
}

impl kiln_devices::Block for Block {
    fn info(&self) -> BlockInfo {
        self.info
    }

    fn read(&self, sector: u64, buf: &mut [u8]) -> impl Future<Output = Result<(), BlockError>> {
        ready(self.read_now(sector, buf))
    }

    fn write(&self, sector: u64, buf: &[u8]) -> impl Future<Output = Result<(), BlockError>> {
        ready(self.write_now(sector, buf))
    }

    /// A virtio-blk FLUSH (QEMU: `fdatasync` of the backing file) when the
    /// device offers it.
    fn flush(&self) -> impl Future<Output = Result<(), BlockError>> {
        ready(self.dev.lock().flush().map_err(|_| BlockError::Io(EIO)))
    }
}
