//! Key naming, in one place. Every key starts with the configured prefix. Keys that one script
//! touches together share a hash tag (`{...}`) so scripts run unchanged on Redis Cluster; keys that
//! need not be together (one per IP) carry their own tag so they spread over shards.
//!
//! Ids from the outside (user ids, IPs, service names) go through [`encode_component`]: the result
//! never contains `{`, `}`, `:` or whitespace, so no input can move a key into another hash slot,
//! another namespace or another user's key, and distinct inputs never map to the same key.

use std::borrow::Cow;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::LimiterError;

/// Ids longer than this (in bytes) are stored as a SHA-256 digest: bounded key size for any input.
const MAX_PLAIN_ID: usize = 96;

/// Encodes an untrusted id into a key component.
///
/// Short ids keep `[A-Za-z0-9_.-]` and percent-encode every other byte (so `%`, `~`, braces, colons,
/// newlines and non-UTF-8 bytes all become `%XX`). Long ids become `~` + hex SHA-256; `~` never
/// starts a plain encoding (it would be `%7E`), so the two forms cannot collide.
pub fn encode_component(raw: &[u8]) -> Cow<'_, str> {
    if raw.len() > MAX_PLAIN_ID {
        let digest = Sha256::digest(raw);
        return Cow::Owned(format!("~{}", hex::encode(digest)));
    }
    if raw.iter().all(|b| is_plain(*b)) {
        // Every byte is ASCII, so this cannot fail.
        if let Ok(s) = std::str::from_utf8(raw) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(raw.len() * 3);
    for &b in raw {
        if is_plain(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push_str(&format!("{b:02X}"));
        }
    }
    Cow::Owned(out)
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// The key namespace of one deployment (or one test): `{prefix}:...`.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    /// A namespace. The prefix is trusted configuration, but it is still checked so that it cannot
    /// carry a hash tag or a separator that would break the layout below.
    pub fn new(prefix: &str) -> Result<Self, LimiterError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix.bytes().all(|b| is_plain(b) || b == b'/');
        if !ok {
            return Err(LimiterError::InvalidArgument(format!(
                "key prefix {prefix:?} must be 1-64 characters of [A-Za-z0-9_.-/]"
            )));
        }
        Ok(Keys {
            prefix: prefix.into(),
        })
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Sliding-window log for one client of one policy: `{prefix}:win:{policy}:{<client>}`.
    /// Tagged by client so per-IP keys spread over shards.
    pub fn window(&self, policy: &str, client: &[u8]) -> String {
        format!(
            "{}:win:{}:{{{}}}",
            self.prefix,
            encode_component(policy.as_bytes()),
            encode_component(client)
        )
    }

    /// Pacing state of one outbound service: `{prefix}:pace:{<service>}`.
    pub fn pacing(&self, service: &str) -> String {
        format!(
            "{}:pace:{{{}}}",
            self.prefix,
            encode_component(service.as_bytes())
        )
    }

    /// The hash tag shared by every key of one lease group (its scopes, fence, queue). A group is
    /// one slot on a cluster by necessity: a global cap is one decision.
    pub fn group_tag(&self, group: &str) -> String {
        format!("{}:{{{}}}", self.prefix, encode_component(group.as_bytes()))
    }

    /// Lease set of one scope in a group: `{prefix}:{<group>}:lease:<scope>`.
    pub fn lease_scope(&self, group: &str, scope: &[u8]) -> String {
        format!(
            "{}:lease:{}",
            self.group_tag(group),
            encode_component(scope)
        )
    }

    /// Fencing counter of a group.
    pub fn fence(&self, group: &str) -> String {
        format!("{}:fence", self.group_tag(group))
    }

    /// Any other key of a group (queue, registry...): `{prefix}:{<group>}:<name>`.
    pub fn group_key(&self, group: &str, name: &str) -> String {
        format!("{}:{}", self.group_tag(group), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_stay_readable() {
        assert_eq!(encode_component(b"user-42_a.b"), "user-42_a.b");
    }

    #[test]
    fn separators_and_tags_are_escaped() {
        let e = encode_component(b"{x}:*\n%~ ");
        assert_eq!(e, "%7Bx%7D%3A%2A%0A%25%7E%20");
        assert!(!e.contains(['{', '}', ':', '\n', '*']));
    }

    #[test]
    fn long_and_binary_ids_are_bounded_and_distinct() {
        let a = vec![b'a'; 10_000];
        let mut b = a.clone();
        b[9_999] = b'b';
        let (ea, eb) = (encode_component(&a), encode_component(&b));
        assert!(ea.starts_with('~') && ea.len() == 65);
        assert_ne!(ea, eb);
        let bin = encode_component(&[0xff, 0xfe, 0x00]);
        assert_eq!(bin, "%FF%FE%00");
    }

    #[test]
    fn prefix_is_validated() {
        assert!(Keys::new("fg").is_ok());
        assert!(Keys::new("a{b}").is_err());
        assert!(Keys::new("a:b").is_err());
        assert!(Keys::new("").is_err());
    }

    #[test]
    fn window_keys_have_their_own_tag() {
        let k = Keys::new("fg").expect("prefix");
        assert_eq!(k.window("search", b"10.0.0.1"), "fg:win:search:{10.0.0.1}");
        assert_eq!(k.lease_scope("adm", b"user:42"), "fg:{adm}:lease:user%3A42");
    }
}
