//! The gateway's own refusals, as RFC 9457 `application/problem+json` in the same shape as the
//! limit refusals of limiter-tower (`type`, `title`, `status`, stable `code`). They never carry
//! an internal error text: the cause is logged, the client gets the code.

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};

/// A refusal made by the gateway itself (not by a limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayProblem {
    /// No route matched and `[default] refuse = true` (404 `not_found`).
    NotFound,
    /// The route limits by user and the request proves no identity (401 `unauthorized`).
    Unauthorized,
    /// The app could not be reached or broke the connection (502 `bad_gateway`).
    BadGateway,
    /// The app sent no response head in time (504 `gateway_timeout`).
    GatewayTimeout,
    /// A protocol upgrade other than WebSocket (h2c) (501 `upgrade_not_supported`).
    UpgradeNotSupported,
    /// The breaker on the app is open (503 `circuit_open`; the caller adds `Retry-After`).
    CircuitOpen,
}

impl GatewayProblem {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            GatewayProblem::NotFound => StatusCode::NOT_FOUND,
            GatewayProblem::Unauthorized => StatusCode::UNAUTHORIZED,
            GatewayProblem::BadGateway => StatusCode::BAD_GATEWAY,
            GatewayProblem::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayProblem::UpgradeNotSupported => StatusCode::NOT_IMPLEMENTED,
            GatewayProblem::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            GatewayProblem::NotFound => "not_found",
            GatewayProblem::Unauthorized => "unauthorized",
            GatewayProblem::BadGateway => "bad_gateway",
            GatewayProblem::GatewayTimeout => "gateway_timeout",
            GatewayProblem::UpgradeNotSupported => "upgrade_not_supported",
            GatewayProblem::CircuitOpen => "circuit_open",
        }
    }

    fn title(self) -> &'static str {
        match self {
            GatewayProblem::NotFound => "No such route",
            GatewayProblem::Unauthorized => "Authentication required",
            GatewayProblem::BadGateway => "The application could not be reached",
            GatewayProblem::GatewayTimeout => "The application did not answer in time",
            GatewayProblem::UpgradeNotSupported => "Protocol upgrades are not supported",
            GatewayProblem::CircuitOpen => "The application is failing; calls to it are paused",
        }
    }

    /// The response.
    pub fn response(self) -> Response<Body> {
        let doc = serde_json::json!({
            "type": "about:blank",
            "title": self.title(),
            "status": self.status().as_u16(),
            "code": self.code(),
        });
        let mut resp = Response::new(Body::from(doc.to_string()));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self == GatewayProblem::Unauthorized {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
