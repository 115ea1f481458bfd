//! The gateway's admin endpoint, on the policy's `[admin] path` (default `/api/system-health`),
//! answered by the gateway itself and never passed to the app.
//!
//! - `GET`: `{"status": "healthy"}` for anyone; with the admin token, also `limits`: the runtime
//!   limits in force on this replica (document version, who changed it and when, each route's
//!   limits and modes, the admission caps).
//! - `POST` with the admin token (`Authorization: Bearer <FLEETGATE_ADMIN_TOKEN>`), a JSON body:
//!   - `{"action": "set-limits", "route": "/api/chat", "limits": {"per_ip_per_min": 10}}`
//!     (`per_ip_per_min`, `per_user_per_min`, `daily_quota`; only limits the route has),
//!   - `{"action": "set-limits", "admission": {"global_concurrency": 5, "per_user_concurrency": 1}}`
//!     (both forms may be combined in one call),
//!   - `{"action": "set-mode", "route": "/api/chat" | "*", "layer": "window" | "admission" |
//!     "quota" | "breaker" | "all", "mode": "enforce" | "shadow" | "off"}`,
//!   - `{"action": "reset-limits"}` (everything back to the policy) or with `"route"` (that
//!     route's runtime values and modes only; `"*"`: the service-wide modes).
//!
//!   Each may carry `"by"` (who is making the change, for the log and the document; the client
//!   address when absent). The answer is the limits in force after the change.
//!
//! Refusals are problem+json: 401 `unauthorized` (no bearer token), 403 `forbidden` (wrong token,
//! or no admin token configured), 429 `rate_limited` with `Retry-After` (too many wrong tokens
//! from this client address, limiter-tower's [`AdminGate`]: the token is not even compared), 400 `invalid_request` with `field` naming what is wrong, 405
//! `method_not_allowed`, 413 `payload_too_large`, 503 `service_unavailable` (Redis unreachable;
//! nothing changed).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use limiter_tower::runtime::{
    ChangeRequest, InvalidChange, LimitsChange, LimitsStore, UpdateError,
};
use limiter_tower::{AdminGate, AdminRefusal, ClientIpKey};
use serde_json::{Value, json};

use crate::runtime::RuntimeLimits;

/// Largest admin request body.
const MAX_BODY: usize = 16 * 1024;

/// The admin endpoint of one replica.
pub(crate) struct Admin {
    path: String,
    /// The admin token (none configured: every admin action is refused) and its wrong-guess
    /// throttle.
    gate: AdminGate,
    /// Who the client is, behind trusted proxies: the address wrong guesses are counted for.
    client: ClientIpKey,
    store: LimitsStore,
    limits: Arc<RuntimeLimits>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("path", &self.path)
            .field("gate", &self.gate)
            .finish()
    }
}

/// A refusal of the admin endpoint.
struct Problem {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    field: Option<String>,
    detail: Option<String>,
    /// For a 429: how long the client must wait.
    retry_after: Option<std::time::Duration>,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, title: &'static str) -> Self {
        Problem {
            status,
            code,
            title,
            field: None,
            detail: None,
            retry_after: None,
        }
    }

    fn invalid(e: &InvalidChange) -> Self {
        Problem {
            field: Some(e.field.clone()),
            detail: Some(e.to_string()),
            ..Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The request is not valid",
            )
        }
    }

    fn field(field: &str, reason: &str) -> Self {
        Problem::invalid(&InvalidChange::new(field, reason))
    }

    fn with_detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }

    fn response(self) -> Response<Body> {
        let mut doc = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "code": self.code,
        });
        if let Some(f) = self.field {
            doc["field"] = json!(f);
        }
        if let Some(d) = self.detail {
            doc["detail"] = json!(d);
        }
        let mut resp = Response::new(Body::from(doc.to_string()));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: never invite a retry before the block ends.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

fn json_response(v: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(v.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The first field of `v` that serde refused, from its message (`unknown field `x``, say).
fn serde_field(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if let Some(rest) = msg.split("unknown field `").nth(1) {
        return rest.split('`').next().unwrap_or("body").to_string();
    }
    if let Some(rest) = msg.split("missing field `").nth(1) {
        return rest.split('`').next().unwrap_or("body").to_string();
    }
    "body".to_string()
}

impl Admin {
    pub(crate) fn new(
        path: String,
        gate: AdminGate,
        client: ClientIpKey,
        store: LimitsStore,
        limits: Arc<RuntimeLimits>,
    ) -> Self {
        Admin {
            path,
            gate,
            client,
            store,
            limits,
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// `Ok(true)`: the admin; `Ok(false)`: no credentials at all. `peer`: the connection's
    /// address.
    async fn authorize(&self, headers: &http::HeaderMap, peer: IpAddr) -> Result<bool, Problem> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(false);
        };
        let given = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let Some(given) = given else {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
            ));
        };
        let client = self.client.try_resolve(peer, headers).map_err(|e| {
            Problem::field("x-forwarded-for", "a trusted proxy sent no client address")
                .with_detail(e.to_string())
        })?;
        match self.gate.authorize(client, &given).await {
            Ok(()) => Ok(true),
            Err(AdminRefusal::Throttled { retry_after }) => Err(Problem {
                retry_after: Some(retry_after),
                ..Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many wrong admin tokens from this address",
                )
            }),
            Err(AdminRefusal::Wrong | AdminRefusal::Disabled) => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Not allowed",
            )),
        }
    }

    pub(crate) async fn handle(&self, req: Request<Body>) -> Response<Body> {
        match self.handle_inner(req).await {
            Ok(r) => r,
            Err(p) => p.response(),
        }
    }

    async fn handle_inner(&self, req: Request<Body>) -> Result<Response<Body>, Problem> {
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD && method != Method::POST {
            let mut r = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            )
            .response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            return Ok(r);
        }
        // Without a peer (a router served without connect info) every guess shares one bucket:
        // stricter, never looser.
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |c| c.0.ip());
        let admin = self.authorize(req.headers(), peer).await?;
        if method != Method::POST {
            let mut v = json!({"status": "healthy"});
            if admin {
                v["limits"] = self.limits.view();
            }
            return Ok(json_response(&v));
        }
        if !admin {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
            ));
        }
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "The request body is too large",
                )
            })?;
        let action: ChangeRequest = serde_json::from_slice(&body)
            .map_err(|e| Problem::field(&serde_field(&e), "not a valid admin action body"))?;
        let by = match &action.by {
            Some(b) if b.is_empty() || b.len() > 128 || b.chars().any(char::is_control) => {
                return Err(Problem::field("by", "1 to 128 printable characters"));
            }
            Some(b) => b.clone(),
            None => peer.to_string(),
        };
        let change =
            LimitsChange::parse(&action, self.limits.as_ref()).map_err(|e| Problem::invalid(&e))?;
        let (old, new) = self
            .store
            .update(&by, |doc| change.apply(doc))
            .await
            .map_err(|e| match e {
                UpdateError::Invalid(e) => Problem::invalid(&e),
                other => {
                    tracing::error!(error = %other, "runtime limits: change not stored");
                    Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "service_unavailable",
                        "The limits store is unavailable; nothing was changed",
                    )
                }
            })?;
        tracing::info!(
            by = %new.updated_by,
            at_ms = new.updated_at_ms,
            action = %action.action,
            old_version = old.version,
            new_version = new.version,
            old = %serde_json::to_string(&old).unwrap_or_default(),
            new = %serde_json::to_string(&new).unwrap_or_default(),
            "runtime limits changed"
        );
        self.limits.apply_if_newer(Arc::new(new));
        Ok(json_response(&json!({
            "status": "ok",
            "limits": self.limits.view(),
        })))
    }
}
