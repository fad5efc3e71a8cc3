//! What a device hypercall's `ret` field says (Solo5 `solo5_result_t`:
//! OK, AGAIN, EINVAL, EUNSPEC).

use kiln_abi::status::Solo5Result;

/// How a device hypercall did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `SOLO5_R_AGAIN`: nothing to read now.
    Again,
    /// `SOLO5_R_EINVAL`, `SOLO5_R_EUNSPEC` or a value the ABI does not
    /// define, with that value.
    Error(i32),
}

/// Decodes a `ret` field.
pub fn from_ret(ret: i32) -> Result<(), Failure> {
    match Solo5Result::from_i32(ret) {
        Some(Solo5Result::Ok) => Ok(()),
        Some(Solo5Result::Again) => Err(Failure::Again),
        _ => Err(Failure::Error(ret)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ret_values_decode() {
        assert_eq!(from_ret(0), Ok(()));
        assert_eq!(from_ret(1), Err(Failure::Again));
        assert_eq!(from_ret(2), Err(Failure::Error(2)));
        assert_eq!(from_ret(3), Err(Failure::Error(3)));
        assert_eq!(from_ret(-7), Err(Failure::Error(-7)));
    }
}
