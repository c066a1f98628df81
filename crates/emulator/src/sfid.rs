//! Salesforce record ids as the emulators mint them: 15-char base62 plus the 3-char case-safe suffix.
//!
//! Written independently of `salesync-core`'s id type on purpose, so a misreading in either shows up
//! as a failing test instead of cancelling out.

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SUFFIX: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The 3-character case-safe suffix for a 15-character id.
pub fn suffix(id15: &str) -> String {
    let bytes = id15.as_bytes();
    let mut out = String::with_capacity(3);
    for chunk in 0..3 {
        let mut v = 0usize;
        for bit in 0..5 {
            if let Some(c) = bytes.get(chunk * 5 + bit)
                && c.is_ascii_uppercase()
            {
                v |= 1 << bit;
            }
        }
        out.push(SUFFIX[v] as char);
    }
    out
}

/// Mints the 18-character id number `n` for a key prefix (e.g. "00Q"), on pod "5g".
///
/// Digits are mixed so ids have realistic upper/lower-case letters (and so the suffix matters).
pub fn mint(prefix: &str, n: u64) -> String {
    let mut body = [b'0'; 9];
    // A bijective scramble of n keeps ids unique while spreading letters of both cases.
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66;
    x %= 62u64.pow(9);
    let mut k = 9;
    while k > 0 {
        k -= 1;
        body[k] = BASE62[(x % 62) as usize];
        x /= 62;
    }
    let mut id15 = String::with_capacity(18);
    id15.push_str(prefix);
    id15.push_str("5g");
    id15.push('0');
    id15.push_str(std::str::from_utf8(&body).unwrap_or("000000000"));
    let s = suffix(&id15);
    id15.push_str(&s);
    id15
}

/// Normalises a 15- or 18-character id to 18 characters; `None` when it is neither.
pub fn to18(id: &str) -> Option<String> {
    if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match id.len() {
        15 => Some(format!("{id}{}", suffix(id))),
        18 => Some(id.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_pairs() {
        // Pairs published in Salesforce's documentation and community answers.
        assert_eq!(to18("001A0000006Vm9r").as_deref(), Some("001A0000006Vm9rIAC"));
        assert_eq!(to18("003d000000Yp8Uz").as_deref(), Some("003d000000Yp8UzAAJ"));
    }

    #[test]
    fn minted_ids_are_unique_and_consistent() {
        let a: std::collections::HashSet<String> = (0..10_000).map(|n| mint("00Q", n)).collect();
        assert_eq!(a.len(), 10_000);
        for id in a.iter().take(50) {
            assert_eq!(id.len(), 18);
            assert!(id.starts_with("00Q"));
            assert_eq!(to18(&id[..15]).as_deref(), Some(id.as_str()));
        }
    }
}
