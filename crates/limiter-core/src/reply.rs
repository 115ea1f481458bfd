//! Decoding of script replies: every script returns a flat array of integers (see its header).

use crate::LimiterError;

/// Takes exactly `N` integers from a script reply, or reports a protocol error naming the script.
pub(crate) fn ints<const N: usize>(
    script: &'static str,
    reply: Vec<i64>,
) -> Result<[i64; N], LimiterError> {
    <[i64; N]>::try_from(reply).map_err(|r| LimiterError::Protocol {
        script,
        detail: format!("expected {N} integers, got {}", r.len()),
    })
}

/// A non-negative integer of milliseconds as a `Duration` (negative values clamp to zero).
pub(crate) fn millis(v: i64) -> std::time::Duration {
    std::time::Duration::from_millis(v.max(0) as u64)
}
