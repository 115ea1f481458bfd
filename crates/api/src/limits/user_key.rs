//! [`UserKey`]: the per-user key of admission, the authenticated user's id (set by
//! `server::middleware::require_user`, which runs first).

use axum::http::Request;
use limiter_tower::KeyExtractor;

use crate::auth::AuthUser;

/// The authenticated user's id; none (refused) on a route without authentication.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserKey;

impl<B> KeyExtractor<B> for UserKey {
    fn key(&self, req: &Request<B>) -> Option<String> {
        req.extensions().get::<AuthUser>().map(|u| u.id.clone())
    }
}
