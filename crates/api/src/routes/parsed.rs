//! Request bodies read and checked before the limits that hold capacity: [`read_first`] runs
//! between the per-IP window and admission, so a slow upload or a malformed request never holds a
//! slot (or spends a query); the handler takes the checked body as [`Parsed`].

use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::server::json::{MaxBodyBytes, ValidJson};
use crate::state::AppState;

/// A JSON body with the checks its type cannot express.
pub trait Checked: DeserializeOwned + Clone + Send + Sync + 'static {
    /// `Ok` if the handler may run with it.
    fn check(&self) -> Result<(), ApiError>;
}

/// A body [`read_first`] read and checked.
#[derive(Debug, Clone)]
pub struct Parsed<T>(pub T);

/// Middleware: reads the JSON body as `T` and checks it (400/408/413 on failure, as the
/// handler's own extractor would answer), then passes the request on with the body in its
/// extensions.
pub async fn read_first<T: Checked>(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let limit = MaxBodyBytes::from_ref(&state).0;
    // The head is only borrowed: the request goes on with it, without a copy.
    let parsed = match ValidJson::<T>::read(&parts, body, limit).await {
        Ok(ValidJson(v)) => v,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = parsed.check() {
        return e.into_response();
    }
    let mut req = Request::from_parts(parts, Body::empty());
    req.extensions_mut().insert(Parsed(parsed));
    next.run(req).await
}

impl<S: Send + Sync, T: Checked> FromRequestParts<S> for Parsed<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .remove::<Parsed<T>>()
            // Only reachable if a route forgot its `read_first` layer.
            .ok_or_else(|| ApiError::Internal("request body not read".into()))
    }
}
