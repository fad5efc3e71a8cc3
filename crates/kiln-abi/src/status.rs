//! Exit statuses and hypercall result codes (`solo5.h`).

/// The guest finished successfully.
pub const EXIT_SUCCESS: i32 = 0;
/// The guest finished with an error.
pub const EXIT_FAILURE: i32 = 1;
/// The guest aborted; statuses of 255 and above are reserved for Solo5, and a
/// tender reports this one with the guest's message and a register dump.
pub const EXIT_ABORT: i32 = 255;

/// `solo5_result_t`: the `ret` (OUT) field of the hvt hypercalls that have one.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Solo5Result {
    /// The operation completed.
    Ok = 0,
    /// The operation would block (e.g. no packet to read).
    Again = 1,
    /// Invalid argument (bad handle, misaligned offset, short buffer).
    Einval = 2,
    /// Unspecified error (the host operation failed).
    Eunspec = 3,
}

impl Solo5Result {
    /// Decodes a `ret` value; `None` for values the ABI does not define.
    pub const fn from_i32(value: i32) -> Option<Self> {
        match value {
            0 => Some(Self::Ok),
            1 => Some(Self::Again),
            2 => Some(Self::Einval),
            3 => Some(Self::Eunspec),
            _ => None,
        }
    }
}

const _: () = assert!(core::mem::size_of::<Solo5Result>() == 4);
