//! The DHCP Domain Search option (RFC 3397, code 119) decoded into a DNS
//! search list: names in DNS wire format (RFC 1035 section 3.1), possibly
//! compressed (section 4.1.4) with pointers into the option's data, the
//! data of every instance of the option concatenated first (RFC 3396).
//! The data comes from the network: every length and pointer is checked,
//! and a name that does not decode ends the list. Public for its fuzz
//! target (crates/kiln-net/fuzz, seeds replayed by tests/fuzz_seeds.rs).

use alloc::string::String;
use alloc::vec::Vec;

/// The option's code.
pub const OPTION: u8 = 119;

/// The longest search list kept (glibc's resolver keeps as many).
pub const MAX_DOMAINS: usize = 6;

/// The longest name in text, without the trailing dot (RFC 1035 2.3.4).
pub const MAX_NAME: usize = 253;

/// The search list in `data` (the option's data, instances concatenated):
/// at most [`MAX_DOMAINS`] names of at most [`MAX_NAME`] characters, each
/// label of letters, digits, `-` and `_`, lowercased, without a trailing
/// dot.
pub fn decode(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() && out.len() < MAX_DOMAINS {
        let Some((name, next)) = name_at(data, at) else {
            break;
        };
        if !name.is_empty() {
            out.push(name);
        }
        at = next;
    }
    out
}

/// The name starting at `start` and where the next one starts; `None` if
/// it does not decode (out of bounds, a reserved label type, a pointer
/// that does not point backwards, a character outside letters, digits,
/// `-` and `_`, or too long).
fn name_at(data: &[u8], start: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut pos = start;
    let mut next = None;
    loop {
        let len = *data.get(pos)?;
        match len >> 6 {
            0 if len == 0 => {
                return Some((name, next.unwrap_or(pos + 1)));
            }
            0 => {
                let label = data.get(pos + 1..pos + 1 + usize::from(len))?;
                let valid = label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid || name.len() + 1 + label.len() > MAX_NAME + 1 {
                    return None;
                }
                if !name.is_empty() {
                    name.push('.');
                }
                name.extend(label.iter().map(|&b| char::from(b.to_ascii_lowercase())));
                pos += 1 + usize::from(len);
            }
            3 => {
                let low = *data.get(pos + 1)?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                // Strictly backwards (RFC 1035: to a prior occurrence): a
                // walk of jumps alone ends, and one that reads labels again
                // ends at the name's length limit.
                if target >= pos {
                    return None;
                }
                next.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| String::from(*s)).collect()
    }

    #[test]
    fn rfc_3397_example() {
        // Section 3's example: eng.apple.com and marketing.apple.com, the
        // second pointing at the first's "apple.com".
        let data = b"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04";
        assert_eq!(
            decode(data),
            names(&["eng.apple.com", "marketing.apple.com"])
        );
    }

    #[test]
    fn uppercase_is_lowered_and_the_list_is_bounded() {
        let mut data = Vec::new();
        for i in 0..10u8 {
            data.extend_from_slice(&[1, b'A' + i, 4]);
            data.extend_from_slice(b"TEST\x00");
        }
        let got = decode(&data);
        assert_eq!(got.len(), MAX_DOMAINS);
        assert_eq!(got[0], "a.test");
    }

    #[test]
    fn hostile_data_ends_the_list_without_a_panic() {
        let good = b"\x01a\x04test\x00".to_vec();
        for (what, bad) in [
            ("pointer to itself", vec![0xc0, 8]),
            ("pointer forwards", vec![0xc0, 9, 0, 0]),
            ("pointer cut short", vec![0xc0]),
            ("label past the end", vec![5, b'a']),
            ("reserved label type", vec![0x40, 0]),
            ("a dot in a label", b"\x03a.b\x00".to_vec()),
            ("no end", b"\x01b".to_vec()),
        ] {
            let mut data = good.clone();
            data.extend_from_slice(&bad);
            assert_eq!(decode(&data), names(&["a.test"]), "{what}");
        }
        // A name longer than 253 characters.
        let mut data = Vec::new();
        for _ in 0..5 {
            data.push(63);
            data.extend_from_slice(&[b'x'; 63]);
        }
        data.push(0);
        assert_eq!(decode(&data), Vec::<String>::new());
        // A chain of pointers backwards, each to the one before: ends.
        let mut data = b"\x01a\x00".to_vec();
        for i in 0..200u16 {
            let target = if i == 0 { 0 } else { 3 + 2 * (i - 1) };
            data.extend_from_slice(&(0xc000 | target).to_be_bytes());
        }
        assert_eq!(decode(&data).len(), MAX_DOMAINS);
        // Every prefix of a valid list, and arbitrary bytes: no panic.
        let list = b"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04";
        for n in 0..list.len() {
            let _ = decode(&list[..n]);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut data = [0u8; 24];
            for b in &mut data {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = (x >> 32) as u8;
            }
            for name in decode(&data) {
                assert!(name.len() <= MAX_NAME, "{name}");
            }
        }
    }
}
