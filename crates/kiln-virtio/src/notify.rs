//! Notification suppression on split virtqueues: the event-index
//! arithmetic and ring offsets (virtio 1.2, 2.7.7 "Used Buffer
//! Notification Suppression", 2.7.10 "Available Buffer Notification
//! Suppression", 2.7.6 and 2.7.8 for the rings' layout).
//!
//! kiln drives `virtio-drivers`' virtqueues for the network, but decides
//! itself when to notify the device and when the device may interrupt:
//! `VirtQueue::should_notify` in virtio-drivers 0.13 compares the 16-bit
//! ring indices with `>=`, which stops notifying once the available index
//! wraps past 65535 (the device then waits for a notification that never
//! comes) and notifies whenever the device's `avail_event` lies anywhere
//! behind, not only when the new buffers cross it (an exit for nothing
//! each time).

/// Offset of `idx` in the available ring (after `flags`).
pub const AVAIL_IDX: usize = 2;
/// Offset of `flags` in the used ring.
pub const USED_FLAGS: usize = 0;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT`: the driver needs no used-buffer
/// notification (without the event index).
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VIRTQ_USED_F_NO_NOTIFY`: the device needs no available-buffer
/// notification (without the event index).
pub const USED_F_NO_NOTIFY: u16 = 1;

/// Offset of `used_event` (written by the driver) in the available ring
/// of a queue of `size` entries: after `flags`, `idx` and the ring.
pub const fn used_event_offset(size: usize) -> usize {
    4 + 2 * size
}

/// Offset of `avail_event` (written by the device) in the used ring of a
/// queue of `size` entries: after `flags`, `idx` and the ring of 8-byte
/// elements.
pub const fn avail_event_offset(size: usize) -> usize {
    4 + 8 * size
}

/// Whether moving an index from `old` to `new` crosses `event`, the index
/// the other side asked to be told about (virtio's `vring_need_event`):
/// true if `event` lies in `[old, new)`, modulo 2^16.
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// The `used_event` that asks for no interrupt while the driver has taken
/// `popped` used buffers: half the index space behind, which the device's
/// used index (at most a queue's size ahead of `popped`) cannot cross.
pub const fn used_event_off(popped: u16) -> u16 {
    popped.wrapping_sub(0x8000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_event_is_true_only_when_the_batch_crosses_the_event() {
        // The device asked to be told once the index passes 10.
        assert!(need_event(10, 11, 10));
        assert!(need_event(10, 14, 8));
        // A batch that ends at the event, or starts after it, does not.
        assert!(!need_event(10, 10, 8));
        assert!(!need_event(10, 14, 11));
        // Nothing added: no notification.
        assert!(!need_event(10, 10, 10));
    }

    /// Regression: virtio-drivers 0.13's `should_notify` computes
    /// `avail_idx >= avail_event + 1`, false for every batch after the
    /// index wraps while the event is still below 65536.
    #[test]
    fn need_event_across_the_wrap() {
        assert!(need_event(65534, 2, 65530));
        assert!(need_event(65535, 0, 65535));
        assert!(need_event(0, 3, 65533));
        assert!(!need_event(65530, 2, 65535));
        assert!(!need_event(5, 2, 65535));
    }

    #[test]
    fn used_event_off_is_never_crossed() {
        for popped in [0u16, 1, 100, 32_767, 32_768, 65_535] {
            let event = used_event_off(popped);
            // The device's used index runs at most a queue's size ahead
            // of the driver, and the index it last checked may lag a
            // queue's size behind.
            for ahead in 0..=256u16 {
                let new = popped.wrapping_add(ahead);
                for back in 0..=ahead + 256 {
                    assert!(!need_event(event, new, new.wrapping_sub(back)));
                }
            }
        }
    }

    #[test]
    fn offsets_of_a_64_entry_queue() {
        assert_eq!(used_event_offset(64), 132);
        assert_eq!(avail_event_offset(64), 516);
    }
}
