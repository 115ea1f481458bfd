//! Who is calling: the user behind a JWT ([`AuthUser`], set by
//! [`crate::server::middleware::require_user`] before the per-IP
//! window runs) and the admin bearer token ([`AdminToken`]; the throttled check that routes use is
//! [`crate::auth::admin_gate::AdminGate`]).

pub mod admin_gate;
pub mod jwt;
pub mod pseudonym;

use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

/// An authenticated user (the JWT `sub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// The user id.
    pub id: String,
    /// Its pseudonym ([`crate::auth::pseudonym`]): what logs and upstreams see instead of the id.
    pub pseudonym: String,
}

impl AuthUser {
    /// A stable, non-reversible id for logs and upstreams (keyed HMAC of the user id).
    pub fn hashed_id(&self) -> String {
        self.pseudonym.clone()
    }
}

/// The bearer token of an `Authorization` header, if any.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized(
        "expected `Authorization: Bearer <token>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "expected `Authorization: Bearer <token>`",
        ));
    }
    Ok(Some(token.trim()))
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthUser>()
            .cloned()
            // Only reachable if a route forgot the `require_user` layer: refuse, never admit.
            .ok_or(ApiError::Unauthorized("a bearer token is required"))
    }
}

/// The admin bearer token, compared in constant time (limiter-tower's, shared with the gateway).
pub use limiter_tower::AdminToken;

/// 401 without credentials, 403 with wrong ones (or when no admin token is configured).
pub fn require_admin(admin: Option<&AdminToken>, headers: &HeaderMap) -> Result<(), ApiError> {
    let token =
        bearer(headers)?.ok_or(ApiError::Unauthorized("the admin bearer token is required"))?;
    match admin {
        Some(a) if a.matches(token) => Ok(()),
        Some(_) => Err(ApiError::Forbidden(
            "this token does not grant admin access",
        )),
        None => Err(ApiError::Forbidden(
            "the admin API is disabled (FLEETGATE_ADMIN_TOKEN unset)",
        )),
    }
}

/// Whether the request carries the admin token (for the health endpoint's detailed view).
pub fn is_admin(admin: Option<&AdminToken>, headers: &HeaderMap) -> bool {
    require_admin(admin, headers).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_compare() {
        let t = AdminToken::new("s3cret");
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches(""));
        let mut h = HeaderMap::new();
        assert!(matches!(
            require_admin(Some(&t), &h),
            Err(ApiError::Unauthorized(_))
        ));
        h.insert(
            AUTHORIZATION,
            "Bearer nope".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert!(matches!(
            require_admin(Some(&t), &h),
            Err(ApiError::Forbidden(_))
        ));
        h.insert(
            AUTHORIZATION,
            "bearer s3cret".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert!(require_admin(Some(&t), &h).is_ok());
        assert!(matches!(
            require_admin(None, &h),
            Err(ApiError::Forbidden(_))
        ));
    }
}
