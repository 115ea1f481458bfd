//! `GET /api/openapi.json`: the OpenAPI 3.1 document of every route, generated from the handlers'
//! `#[utoipa::path]` annotations and the body types.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{chat, export, health, probes, research};
use crate::error::Problem;

/// The document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "fleetgate",
        description = "Fleet-wide rate limits, admission queue and daily quota in front of a clinical research chat. Errors are application/problem+json with a stable `code`."
    ),
    paths(
        chat::chat,
        research::research,
        export::export,
        health::get_health,
        health::post_health,
        probes::healthz,
        probes::readyz,
        super::metrics::metrics,
        openapi_json,
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some(
                            "A user's HS256 JWT, or the admin token for admin routes",
                        ))
                        .build(),
                ),
            );
        }
    }
}

/// The OpenAPI document as JSON.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()))
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document(),
    )
        .into_response()
}
