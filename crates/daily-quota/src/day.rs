//! The UTC day. Counts are kept per day of the database clock (the one clock all replicas
//! share); the time until the next day is only advice for `Retry-After`, so the local clock is
//! good enough for it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Today's UTC date by the database clock, as SQL.
pub(crate) const TODAY: &str = "((now() AT TIME ZONE 'UTC')::date)";

/// Time until the next 00:00 UTC, at least one second (Unix time has no leap seconds, so a UTC
/// day is always 86 400 of them).
pub fn until_next_utc_midnight() -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into_day = now.as_millis() % 86_400_000;
    let left = 86_400_000 - u64::try_from(into_day).unwrap_or(0);
    Duration::from_millis(left).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midnight_is_within_a_day() {
        let d = until_next_utc_midnight();
        assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(86_400));
    }
}
