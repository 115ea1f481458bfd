//! The admin actions `set-limits`, `set-mode` and `reset-limits` on `serve`: the change is
//! checked against this service's routes and layers (limiter-tower's
//! [`limiter_tower::runtime::LimitsChange`], the same rules as the gateway), written to the
//! fleet's document in Redis (compare-and-set, versioned), logged with who made it, and applied
//! here at once; every other replica follows within a second
//! ([`crate::limits::runtime::follow`]).

use std::net::IpAddr;
use std::sync::Arc;

use limiter_tower::runtime::{ChangeRequest, LimitsChange, UpdateError};
use serde_json::Value;

use crate::error::ApiError;
use crate::routes::health::{Action, ActionBody};
use crate::state::AppState;

/// Longest `by`.
const MAX_BY: usize = 128;

/// Makes the change `body` asks for; the limits in force after it.
pub async fn change(state: &AppState, client: IpAddr, body: ActionBody) -> Result<Value, ApiError> {
    let action = match body.action {
        Action::SetLimits => "set-limits",
        Action::SetMode => "set-mode",
        _ => "reset-limits",
    };
    let by = match body.by {
        Some(b) if b.is_empty() || b.len() > MAX_BY || b.chars().any(char::is_control) => {
            return Err(ApiError::InvalidRequest(
                "by: 1 to 128 printable characters".into(),
            ));
        }
        Some(b) => b,
        None => client.to_string(),
    };
    let req = ChangeRequest {
        action: action.into(),
        route: body.route,
        limits: body.limits,
        admission: body.admission,
        layer: body.layer,
        mode: body.mode,
        by: None,
    };
    let limits = state.runtime_limits();
    let change =
        LimitsChange::parse(&req, limits).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let (old, new) = state
        .runtime_store()
        .update(&by, |doc| change.apply(doc))
        .await
        .map_err(|e| match e {
            UpdateError::Invalid(e) => ApiError::InvalidRequest(e.to_string()),
            other => ApiError::unavailable(
                "the limits store is unavailable; nothing was changed",
                other,
            ),
        })?;
    tracing::info!(
        by = %new.updated_by,
        at_ms = new.updated_at_ms,
        action,
        old_version = old.version,
        new_version = new.version,
        old = %serde_json::to_string(&old).unwrap_or_default(),
        new = %serde_json::to_string(&new).unwrap_or_default(),
        "runtime limits changed"
    );
    limits.apply_if_newer(Arc::new(new));
    Ok(serde_json::json!({ "limits": limits.view() }))
}
