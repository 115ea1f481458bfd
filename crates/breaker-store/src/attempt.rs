//! How one attempt of an outbound HTTP call counts: [`Attempt`] (success, failure, rejection),
//! [`classify_status`] and [`parse_retry_after`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What one attempt of an upstream call returned, classified for the breaker and the retries.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// The upstream answered properly.
    Success(T),
    /// Timeout, connection error, 5xx or 429: counts as a breaker failure and is retried
    /// (idempotent calls), after at least `retry_after` when the upstream sent one.
    Failure {
        /// The error to return if no retry succeeds.
        error: E,
        /// The upstream's `Retry-After` (see [`parse_retry_after`]).
        retry_after: Option<Duration>,
    },
    /// A 4xx other than 429: the request was at fault, the upstream is fine. Not a breaker
    /// failure, never retried.
    Rejected(E),
}

/// How an HTTP status counts: see [`classify_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 1xx-3xx.
    Success,
    /// 429 and 5xx (and anything unknown): a failure, retryable.
    Failure,
    /// 4xx except 429.
    Rejected,
}

/// Classifies an HTTP status: 5xx and 429 are failures, other 4xx are rejections.
pub fn classify_status(status: u16) -> StatusClass {
    match status {
        100..=399 => StatusClass::Success,
        429 => StatusClass::Failure,
        400..=499 => StatusClass::Rejected,
        _ => StatusClass::Failure,
    }
}

/// Parses a `Retry-After` value: delta-seconds, or an HTTP date (IMF-fixdate) relative to now.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(86_400)));
    }
    let at = parse_imf_fixdate(v)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now).min(86_400)))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → Unix seconds.
fn parse_imf_fixdate(v: &str) -> Option<u64> {
    let mut it = v.split_ascii_whitespace();
    let _weekday = it.next()?;
    let day: u64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let (h, m, s): (u64, u64, u64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if it.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(200), StatusClass::Success);
        assert_eq!(classify_status(404), StatusClass::Rejected);
        assert_eq!(classify_status(429), StatusClass::Failure);
        assert_eq!(classify_status(503), StatusClass::Failure);
        assert_eq!(classify_status(0), StatusClass::Failure);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("Sun, 99 Nov 1994 08:49:37 GMT"), None);
    }
}
