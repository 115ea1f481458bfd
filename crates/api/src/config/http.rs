//! What one replica allows a client connection: how long it may take to send a request head and
//! body, how long it may sit idle between requests, how large a body may be, how long a response
//! may stay blocked on a client that does not read, and how many connections are open at once.

use serde::Deserialize;

use super::ConfigError;

/// HTTP server limits (`[http]` in the TOML file).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// `FLEETGATE_HTTP_HEADER_TIMEOUT_MS`: from the first byte of a request until its head (request
    /// line and headers) is complete. A client dribbling headers is dropped after this.
    pub header_timeout_ms: u64,
    /// `FLEETGATE_HTTP_IDLE_TIMEOUT_MS`: how long a connection may wait, with no request running,
    /// for the first byte of its next request (also right after connecting). Keep it above the
    /// load balancer's own idle timeout, so that the balancer closes first.
    pub idle_timeout_ms: u64,
    /// `FLEETGATE_HTTP_BODY_TIMEOUT_MS`: from the start of a request until its whole body is read.
    pub body_timeout_ms: u64,
    /// `FLEETGATE_HTTP_MAX_BODY_BYTES`: largest request body (413 `payload_too_large` beyond).
    pub max_body_bytes: usize,
    /// `FLEETGATE_HTTP_WRITE_TIMEOUT_MS`: a response write that cannot progress for this long (the
    /// client stopped reading and its buffers are full, e.g. an SSE stream) drops the connection.
    pub write_timeout_ms: u64,
    /// `FLEETGATE_HTTP_MAX_CONNECTIONS`: open client connections per replica. At the cap the
    /// replica stops accepting until one closes; the kernel's backlog holds the newcomers.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_timeout_ms: 10_000,
            idle_timeout_ms: 75_000,
            body_timeout_ms: 15_000,
            max_body_bytes: 64 * 1024,
            write_timeout_ms: 30_000,
            max_connections: 2048,
        }
    }
}

impl HttpSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |var: &str, reason: &str| ConfigError::Invalid {
            var: var.into(),
            reason: reason.into(),
        };
        // Zero would mean "no time at all"; there is deliberately no "off".
        for (v, var) in [
            (self.header_timeout_ms, "FLEETGATE_HTTP_HEADER_TIMEOUT_MS"),
            (self.idle_timeout_ms, "FLEETGATE_HTTP_IDLE_TIMEOUT_MS"),
            (self.body_timeout_ms, "FLEETGATE_HTTP_BODY_TIMEOUT_MS"),
            (self.write_timeout_ms, "FLEETGATE_HTTP_WRITE_TIMEOUT_MS"),
        ] {
            if !(100..=3_600_000).contains(&v) {
                return Err(invalid(var, "must be within 100..=3600000 (ms)"));
            }
        }
        if !(1024..=16 << 20).contains(&self.max_body_bytes) {
            return Err(invalid(
                "FLEETGATE_HTTP_MAX_BODY_BYTES",
                "must be within 1024..=16777216",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid(
                "FLEETGATE_HTTP_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
