//! The virtio devices the unikernel took, polled by the platform's wait.

/// Checks every device's queues, waking the tasks whose device has work;
/// true if any had.
pub fn poll_all() -> bool {
    false
}
