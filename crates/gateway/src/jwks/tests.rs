//! Which keys of a set are usable.

#![allow(clippy::unwrap_used)]

use super::key_set::parse_set;

fn jwk(kty: &str, extra: &str) -> Vec<u8> {
    format!("{{\"keys\":[{{\"kty\":\"{kty}\",\"kid\":\"k\"{extra}}}]}}").into_bytes()
}

#[test]
fn symmetric_and_encryption_keys_are_not_usable() {
    assert!(parse_set(&jwk("oct", ",\"k\":\"c2VjcmV0\"")).is_err());
    assert!(parse_set(b"{\"keys\":[]}").is_err());
    assert!(parse_set(b"[]").is_err());
    assert!(parse_set(b"not json").is_err());
}
