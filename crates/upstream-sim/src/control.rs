//! The simulator's own endpoints: `GET/POST /control`, `POST /control/reset`, `GET /stats`,
//! `GET /stats/prompts`, `POST /stats/reset`. They are never delayed or failed by the injected faults.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::settings::SettingsPatch;
use crate::state::SimState;

fn bad(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

pub(crate) async fn get_control(State(state): State<SimState>) -> Response {
    Json(state.settings()).into_response()
}

/// Applies a [`SettingsPatch`]; answers the new settings, or 400 and changes nothing.
pub(crate) async fn post_control(
    State(state): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            return (rej.status(), Json(json!({ "error": rej.body_text() }))).into_response();
        }
    };
    let patch: SettingsPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad(&format!("invalid control patch: {e}")),
    };
    match state.apply(&patch) {
        Ok(settings) => Json(settings).into_response(),
        Err(e) => bad(&e.to_string()),
    }
}

/// Restores the start-up settings and clears the stats.
pub(crate) async fn reset_control(State(state): State<SimState>) -> Response {
    state.reset_settings();
    state.reset_stats();
    Json(state.settings()).into_response()
}

pub(crate) async fn get_stats(State(state): State<SimState>) -> Response {
    Json(state.stats()).into_response()
}

/// The LLM requests last received (see `prompts.rs`).
pub(crate) async fn get_prompts(State(state): State<SimState>) -> Response {
    Json(state.prompts()).into_response()
}

pub(crate) async fn reset_stats(State(state): State<SimState>) -> Response {
    state.reset_stats();
    StatusCode::NO_CONTENT.into_response()
}
