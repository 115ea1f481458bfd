//! Request counters of one replica (error rate for the health score), kept by
//! [`crate::server::middleware::count_requests`].

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

/// Counters since start or the last `reset-errors`.
#[derive(Debug, Default)]
pub struct RequestStats {
    total: AtomicU64,
    server_errors: AtomicU64,
    client_errors: AtomicU64,
    in_flight: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestSnapshot {
    /// Requests answered.
    pub total: u64,
    /// Of which 5xx.
    pub server_errors: u64,
    /// Of which 4xx.
    pub client_errors: u64,
    /// Requests running now on this replica.
    pub in_flight: u64,
    /// `server_errors / total` (0 when no request was answered).
    pub error_rate: f64,
}

impl RequestStats {
    /// Reads the counters.
    pub fn snapshot(&self) -> RequestSnapshot {
        let total = self.total.load(Ordering::Relaxed);
        let server_errors = self.server_errors.load(Ordering::Relaxed);
        RequestSnapshot {
            total,
            server_errors,
            client_errors: self.client_errors.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            error_rate: if total == 0 {
                0.0
            } else {
                server_errors as f64 / total as f64
            },
        }
    }

    /// Zeroes the answered counters (admin `reset-errors`); in-flight is a gauge and stays.
    pub fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        self.server_errors.store(0, Ordering::Relaxed);
        self.client_errors.store(0, Ordering::Relaxed);
    }
}

/// Counts one request as running until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RequestStats {
    /// A request starts: it counts as in flight until the guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// A response of `status` was sent.
    pub fn answered(&self, status: StatusCode) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        } else if status.is_client_error() {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
