//! The headers of draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "chat";q=5;w=60` (quota
//! and window in seconds) and `RateLimit: "chat";r=0;t=42` (remaining and seconds until reset).

use std::time::Duration;

use axum::http::HeaderValue;

use crate::error::secs_ceil;

/// `"name";q=limit;w=window_secs`.
pub fn policy_header(name: &str, limit: u32, window: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{name}\";q={limit};w={}", window.as_secs()))
        .unwrap_or(HeaderValue::from_static("\"default\""))
}

/// `"name";r=remaining;t=reset_secs` (`t=0` when nothing is in the window).
pub fn ratelimit_header(name: &str, remaining: u32, reset: Duration) -> HeaderValue {
    let t = if reset.is_zero() { 0 } else { secs_ceil(reset) };
    HeaderValue::from_str(&format!("\"{name}\";r={remaining};t={t}"))
        .unwrap_or(HeaderValue::from_static("\"default\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_matches_the_draft() {
        assert_eq!(
            policy_header("chat", 5, Duration::from_secs(60)),
            "\"chat\";q=5;w=60"
        );
        assert_eq!(
            ratelimit_header("chat", 0, Duration::from_millis(41_200)),
            "\"chat\";r=0;t=42"
        );
    }
}
