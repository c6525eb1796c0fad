//! LDK's namespace/key rules, and how a (primary, secondary, key) triple is laid out in redb.

use std::io;

use ldk_node::lightning::util::persist::{KVSTORE_NAMESPACE_KEY_ALPHABET, KVSTORE_NAMESPACE_KEY_MAX_LEN};

/// The separator between the parts of a stored key. It is outside LDK's alphabet, so the
/// encoding is unambiguous and a namespace's keys form one contiguous range.
pub(crate) const SEP: u8 = 0;

fn valid_str(s: &str) -> bool {
    s.len() <= KVSTORE_NAMESPACE_KEY_MAX_LEN && s.chars().all(|c| KVSTORE_NAMESPACE_KEY_ALPHABET.contains(c))
}

fn invalid(operation: &str, primary: &str, secondary: &str, key: Option<&str>, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("cannot {operation} {primary:?}/{secondary:?}/{:?}: {why}", key.unwrap_or("")),
    )
}

/// Checks a namespace pair (and key, if given) against LDK's rules.
pub fn validate(primary: &str, secondary: &str, key: Option<&str>, operation: &str) -> io::Result<()> {
    if let Some(key) = key {
        if key.is_empty() {
            return Err(invalid(operation, primary, secondary, Some(key), "the key may not be empty"));
        }
        if !valid_str(key) {
            return Err(invalid(
                operation,
                primary,
                secondary,
                Some(key),
                "the key has invalid characters or length",
            ));
        }
    }
    if primary.is_empty() && !secondary.is_empty() {
        return Err(invalid(
            operation,
            primary,
            secondary,
            key,
            "the primary namespace may not be empty if the secondary is not",
        ));
    }
    if !valid_str(primary) || !valid_str(secondary) {
        return Err(invalid(
            operation,
            primary,
            secondary,
            key,
            "a namespace has invalid characters or length",
        ));
    }
    Ok(())
}

/// `primary \0 secondary \0 key`.
pub(crate) fn encode(primary: &str, secondary: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(primary.len() + secondary.len() + key.len() + 2);
    out.extend_from_slice(primary.as_bytes());
    out.push(SEP);
    out.extend_from_slice(secondary.as_bytes());
    out.push(SEP);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The half-open range of stored keys that belong to one namespace pair.
pub(crate) fn namespace_range(primary: &str, secondary: &str) -> (Vec<u8>, Vec<u8>) {
    // Every key of the pair starts with `primary \0 secondary \0`; raising that last
    // separator by one gives the first byte string past all of them.
    let start = encode(primary, secondary, "");
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last = SEP + 1;
    }
    (start, end)
}

/// Splits a stored key back into its three parts.
pub(crate) fn decode(stored: &[u8]) -> io::Result<(String, String, String)> {
    let mut parts = stored.splitn(3, |b| *b == SEP);
    let mut next = || {
        parts
            .next()
            .and_then(|p| std::str::from_utf8(p).ok())
            .map(String::from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stored key"))
    };
    Ok((next()?, next()?, next()?))
}

/// The key part of a stored key.
pub(crate) fn key_part(stored: &[u8]) -> io::Result<String> {
    decode(stored).map(|(_, _, key)| key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_ranges_do_not_leak_between_namespaces() {
        let k = encode("a", "b", "c");
        assert_eq!(decode(&k).expect("decode"), ("a".into(), "b".into(), "c".into()));
        let (start, end) = namespace_range("a", "b");
        assert!(start.as_slice() <= k.as_slice() && k.as_slice() < end.as_slice());
        // "a"/"bb" and "ab"/"" must not fall inside "a"/"b".
        for other in [encode("a", "bb", "c"), encode("ab", "", "c"), encode("a", "", "b")] {
            assert!(!(start.as_slice() <= other.as_slice() && other.as_slice() < end.as_slice()));
        }
    }

    #[test]
    fn rules_match_ldk() {
        assert!(validate("", "", Some("k"), "write").is_ok());
        assert!(validate("p", "", Some("k"), "write").is_ok());
        assert!(validate("", "s", Some("k"), "write").is_err());
        assert!(validate("p", "s", Some(""), "write").is_err());
        assert!(validate("p", "s", Some("a/b"), "write").is_err());
        assert!(validate("p", "s", None, "list").is_ok());
        let max = "A".repeat(KVSTORE_NAMESPACE_KEY_MAX_LEN);
        assert!(validate(&max, &max, Some(&max), "write").is_ok());
        let over = "A".repeat(KVSTORE_NAMESPACE_KEY_MAX_LEN + 1);
        let err = validate("p", "s", Some(&over), "write").expect_err("too long");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
