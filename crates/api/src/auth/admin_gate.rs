//! [`AdminGate`]: the admin bearer token of `FLEETGATE_ADMIN_TOKEN`, with wrong guesses throttled
//! per client address (`FLEETGATE_ADMIN_AUTH_FAILURES_PER_MIN` per 60 s, fleet-wide in Redis).
//! The throttle is limiter-tower's [`limiter_tower::AdminGate`] (the gateway uses the same one);
//! this file maps its refusals to the service's errors.

use std::net::IpAddr;

use axum::http::HeaderMap;
use limiter_core::{LimiterError, RedisHandle};
use limiter_tower::{AdminRefusal, AdminToken};

use crate::auth::bearer;
use crate::error::ApiError;

/// The admin token and its guard.
#[derive(Debug)]
pub struct AdminGate(limiter_tower::AdminGate);

impl AdminGate {
    /// A gate for `token` (none: admin actions are disabled), allowing `failures_per_min` wrong
    /// tokens per address and minute.
    pub fn new(
        redis: RedisHandle,
        token: Option<AdminToken>,
        failures_per_min: u32,
    ) -> Result<Self, LimiterError> {
        limiter_tower::AdminGate::new(redis, token, failures_per_min).map(AdminGate)
    }

    /// The token, when configured.
    pub fn token(&self) -> Option<&AdminToken> {
        self.0.token()
    }

    /// Admits a request from `ip` carrying the admin token: 401 without a bearer token, 429 while
    /// the address is blocked, 403 for a wrong token (counted) or when admin is disabled.
    pub async fn authorize(&self, ip: IpAddr, headers: &HeaderMap) -> Result<(), ApiError> {
        let token =
            bearer(headers)?.ok_or(ApiError::Unauthorized("the admin bearer token is required"))?;
        self.0.authorize(ip, token).await.map_err(|r| match r {
            AdminRefusal::Disabled => {
                ApiError::Forbidden("the admin API is disabled (FLEETGATE_ADMIN_TOKEN unset)")
            }
            AdminRefusal::Wrong => ApiError::Forbidden("this token does not grant admin access"),
            AdminRefusal::Throttled { retry_after } => ApiError::RateLimited { retry_after },
        })
    }

    /// Whether the request is an admin's (for views that only add detail for admins): a wrong
    /// token counts as a failure like in [`AdminGate::authorize`].
    pub async fn is_admin(&self, ip: IpAddr, headers: &HeaderMap) -> bool {
        if !headers.contains_key(axum::http::header::AUTHORIZATION) {
            return false;
        }
        self.authorize(ip, headers).await.is_ok()
    }
}
