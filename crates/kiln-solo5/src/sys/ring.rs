//! The guest side of Solo5's net ring (`HVT_FEATURE_RING_IO`,
//! `kiln_abi::hvt_ring`; Solo5's `bindings/hvt/net.c` does the same for C
//! guests): writes are copied to a slot and submitted without waiting, a
//! read is submitted and its commit awaited; the tender's I/O thread is
//! kicked (an `out` to the kick port, which KVM turns into an eventfd
//! signal) only when it said it sleeps.
//!
//! Used for the first network interface when the tender offers the ring
//! and not kiln's NET_EXCHANGE (which a kiln guest prefers: see
//! docs/hvt-extensions.md, "Ring I/O"). The ring is accepted only where
//! kiln-hvt puts it, in the tender's low memory below the image, which
//! kiln's page tables map: a tender that does not write the boot info's
//! ring fields leaves there the manifest, whose `net_ring` word is zero.

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use alloc::vec::Vec;
use kiln_abi::hvt::HVT_GUEST_MIN_BASE;
use kiln_abi::hvt_ring::{
    HVT_BOOT_INFO_RING_OFFSET, HVT_FEATURE_RING_IO, HVT_RING_BUF_SIZE, HVT_RING_KICK_PIO_BASE,
    HVT_RING_NET_READ, HVT_RING_NET_WRITE, HvtBootInfoRing, RING_COM_HEAD, RING_COM_TAIL,
    RING_ENT_HEAD, RING_ENT_TAIL, RING_NEEDS_KICK, RING_SIZE_BYTES, commit_offset, entry_offset,
};
use kiln_abi::status::Solo5Result;

use crate::outcome::{Failure, from_ret};

/// The ring's address, 0 when none is offered (or it is not where kiln-hvt
/// puts it).
static RING: AtomicU64 = AtomicU64::new(0);

/// Reads the boot info's ring fields. Called at boot with the boot info's
/// address.
///
/// # Safety
///
/// `boot_info` is the tender's boot info, mapped, with 16 readable bytes
/// after its 40 (the manifest or the ring fields).
pub unsafe fn detect(boot_info: u64) {
    // SAFETY: the caller's: mapped and readable.
    let ext = unsafe {
        ((boot_info + HVT_BOOT_INFO_RING_OFFSET) as *const HvtBootInfoRing).read_volatile()
    };
    let ring = ext.net_ring;
    let fits = ring != 0
        && ring.is_multiple_of(4096)
        && ring >= 0x1000
        && ring
            .checked_add(RING_SIZE_BYTES)
            .is_some_and(|end| end <= HVT_GUEST_MIN_BASE);
    if ext.host_features & HVT_FEATURE_RING_IO != 0 && fits {
        RING.store(ring, Ordering::Relaxed);
    }
}

/// The boot data range the ring takes, to keep kiln's layout clear of it.
pub fn range() -> Option<core::ops::Range<u64>> {
    let ring = RING.load(Ordering::Relaxed);
    (ring != 0).then(|| ring..ring + RING_SIZE_BYTES)
}

/// Slots for frames being written: a write waits while this many are
/// pending.
const SLOTS: u32 = 128;

/// The ring, for one network interface.
pub struct Ring {
    base: u64,
    handle: u32,
    /// Entries submitted (the guest's `ent_tail`).
    tail: u32,
    /// Commits consumed (the guest's `com_head`).
    head: u32,
    /// `SLOTS` buffers of `HVT_RING_BUF_SIZE` bytes.
    slots: Vec<u8>,
}

impl Ring {
    /// The ring for interface `handle`, if the tender offered one.
    pub fn take(handle: u64) -> Option<Ring> {
        let base = RING.swap(0, Ordering::Relaxed);
        if base == 0 {
            return None;
        }
        Some(Ring {
            base,
            handle: u32::try_from(handle).ok()?,
            tail: 0,
            head: 0,
            slots: alloc::vec![0u8; (SLOTS * HVT_RING_BUF_SIZE) as usize],
        })
    }

    fn word(&self, offset: u64) -> &AtomicU32 {
        // SAFETY: the ring lies, 4096-aligned, in mapped memory no Rust
        // object occupies (checked in `detect`); its fields are accessed
        // only atomically here and by the tender.
        unsafe { AtomicU32::from_ptr((self.base + offset) as *mut u32) }
    }

    /// Fills entry `tail` and publishes it, then kicks the tender's thread
    /// if it sleeps.
    fn submit(&mut self, op: u32, data: u64, len: u32) {
        let entry = self.base + entry_offset(self.tail);
        let words = [
            u64::from(op) | u64::from(self.handle) << 32,
            data,
            u64::from(len) | u64::from(self.tail) << 32,
            0,
        ];
        for (i, w) in words.into_iter().enumerate() {
            // SAFETY: the entry's 32 bytes lie inside the ring (the index is
            // masked by `entry_offset`), 8-aligned; the tender reads the
            // entry only after the `ent_tail` store below.
            unsafe { ((entry + 8 * i as u64) as *mut u64).write_volatile(w) };
        }
        self.tail = self.tail.wrapping_add(1);
        self.word(RING_ENT_TAIL).store(self.tail, Ordering::Release);
        // Store ent_tail, then load needs_kick: the tender stores
        // needs_kick, then loads ent_tail; one side sees the other.
        fence(Ordering::SeqCst);
        if self.word(RING_NEEDS_KICK).load(Ordering::Acquire) != 0 {
            // SAFETY: the kick port is open to CPL 3 (cpu.rs); KVM signals
            // the tender's eventfd and the guest goes on.
            unsafe {
                asm!("out dx, eax", in("dx") HVT_RING_KICK_PIO_BASE, in("eax") 0u32,
                     options(nomem, nostack, preserves_flags));
            }
        }
    }

    /// Sends `frame` (at most [`HVT_RING_BUF_SIZE`] bytes), waiting while
    /// [`SLOTS`] writes are pending; returns false for a larger frame,
    /// which the caller sends by hypercall.
    pub fn write(&mut self, frame: &[u8]) -> bool {
        if frame.len() > HVT_RING_BUF_SIZE as usize {
            return false;
        }
        while self
            .tail
            .wrapping_sub(self.word(RING_ENT_HEAD).load(Ordering::Acquire))
            >= SLOTS
        {
            core::hint::spin_loop();
        }
        let at = (self.tail % SLOTS * HVT_RING_BUF_SIZE) as usize;
        let Some(slot) = self.slots.get_mut(at..at + frame.len()) else {
            return false;
        };
        slot.copy_from_slice(frame);
        let data = slot.as_ptr() as u64;
        self.submit(HVT_RING_NET_WRITE, data, frame.len() as u32);
        true
    }

    /// Reads one frame into `buf`, waiting for the tender's answer.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        let cap = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        self.submit(HVT_RING_NET_READ, buf.as_mut_ptr() as u64, cap);
        while self.word(RING_COM_TAIL).load(Ordering::Acquire) == self.head {
            core::hint::spin_loop();
        }
        let commit = self.base + commit_offset(self.head);
        // SAFETY: the commit's 16 bytes lie inside the ring; the tender
        // wrote them before publishing `com_tail` (acquired above).
        let (ret, len) = unsafe {
            (
                ((commit + 4) as *const i32).read_volatile(),
                ((commit + 8) as *const u32).read_volatile(),
            )
        };
        self.head = self.head.wrapping_add(1);
        self.word(RING_COM_HEAD).store(self.head, Ordering::Release);
        // The buffer was written by the tender's read(2) before the commit.
        fence(Ordering::Acquire);
        from_ret(ret)?;
        let n = len as usize;
        if n > buf.len() {
            return Err(Failure::Error(Solo5Result::Eunspec as i32));
        }
        Ok(n)
    }
}
