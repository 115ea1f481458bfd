//! Runtime limits on the gateway: the fleet's runtime-limits document (limiter-tower's
//! [`limiter_tower::runtime`], kept in Redis under the app's prefix) mapped onto this replica's
//! layers. A document scope is a route's `path` as written in the policy (every route with that
//! path, whatever its method) or `*`; what the document does not set falls back to the policy.
//!
//! Applying is storing into atomics (each layer's `LimitHandle`, the quota's limit cell, the
//! admission caps), so the request path pays one atomic load per layer, as before.

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, Ordering};

use limiter_core::Admission;
use limiter_tower::runtime::{
    ALL_SCOPES, AdmissionLimits, InvalidChange, Layer, LimitTargets, LimitsDocument, LimitsPatch,
};
use limiter_tower::{LimitHandle, Mode};
use serde_json::{Value, json};

use crate::policy::RoutePolicy;

/// The switches of one route: one handle per layer.
#[derive(Debug, Clone)]
pub(crate) struct RouteHandles {
    /// The mode when the document sets none (shadow for a `shadow = true` route).
    pub(crate) default_mode: Mode,
    pub(crate) ip_window: LimitHandle,
    pub(crate) user_window: LimitHandle,
    pub(crate) quota: LimitHandle,
    pub(crate) admission: LimitHandle,
    pub(crate) breaker: LimitHandle,
    /// The daily quota's limit, when the route has one.
    pub(crate) quota_limit: Option<Arc<AtomicU32>>,
}

impl RouteHandles {
    pub(crate) fn new(default_mode: Mode) -> Self {
        let handle = || {
            let h = LimitHandle::new();
            h.set_mode(default_mode);
            h
        };
        RouteHandles {
            default_mode,
            ip_window: handle(),
            user_window: handle(),
            quota: handle(),
            admission: handle(),
            breaker: handle(),
            quota_limit: None,
        }
    }

    fn mode(&self, layer: Layer) -> Mode {
        match layer {
            Layer::Window => self.ip_window.mode(),
            Layer::Admission => self.admission.mode(),
            Layer::Quota => self.quota.mode(),
            Layer::Breaker => self.breaker.mode(),
        }
    }
}

/// Every switch of this replica, and the policy's values they fall back to.
#[derive(Debug)]
pub(crate) struct RuntimeLimits {
    routes: Vec<(RoutePolicy, RouteHandles)>,
    fallback_breaker: LimitHandle,
    /// The admission queue and the policy's caps `(per-user, global)`.
    admission: Option<(Admission, (u32, u32))>,
    /// The document applied last.
    applied: RwLock<Arc<LimitsDocument>>,
}

impl RuntimeLimits {
    pub(crate) fn new(
        routes: Vec<(RoutePolicy, RouteHandles)>,
        fallback_breaker: LimitHandle,
        admission: Option<Admission>,
    ) -> Self {
        RuntimeLimits {
            routes,
            fallback_breaker,
            admission: admission.map(|a| {
                let caps = a.caps();
                (a, caps)
            }),
            applied: RwLock::new(Arc::new(LimitsDocument::default())),
        }
    }

    /// The document applied last.
    pub(crate) fn applied(&self) -> Arc<LimitsDocument> {
        match self.applied.read() {
            Ok(d) => Arc::clone(&d),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Applies `doc` if it is newer than the one applied (a change this replica just wrote,
    /// possibly ahead of the watch that will bring it too).
    pub(crate) fn apply_if_newer(&self, doc: Arc<LimitsDocument>) {
        if doc.version > self.applied().version {
            self.apply(doc);
        }
    }

    /// Puts `doc` in force (what it does not set: the policy's values).
    pub(crate) fn apply(&self, doc: Arc<LimitsDocument>) {
        for (p, h) in &self.routes {
            let s = doc.scope(&p.path);
            // `None`: the window's configured limit.
            h.ip_window.set_window_limit(s.per_ip_per_min);
            h.user_window.set_window_limit(s.per_user_per_min);
            if let (Some(cell), Some(default)) = (&h.quota_limit, p.daily_quota) {
                cell.store(s.daily_quota.unwrap_or(default), Ordering::Relaxed);
            }
            let mode = |l: Layer| doc.mode(&p.path, l).unwrap_or(h.default_mode);
            h.ip_window.set_mode(mode(Layer::Window));
            h.user_window.set_mode(mode(Layer::Window));
            h.admission.set_mode(mode(Layer::Admission));
            h.quota.set_mode(mode(Layer::Quota));
            h.breaker.set_mode(mode(Layer::Breaker));
        }
        self.fallback_breaker.set_mode(
            doc.mode(ALL_SCOPES, Layer::Breaker)
                .unwrap_or(Mode::Enforce),
        );
        if let Some((a, (user, global))) = &self.admission {
            a.set_caps(
                Some(doc.admission.per_user_concurrency.unwrap_or(*user)),
                Some(doc.admission.global_concurrency.unwrap_or(*global)),
            );
        }
        let version = doc.version;
        match self.applied.write() {
            Ok(mut d) => *d = doc,
            Err(poisoned) => *poisoned.into_inner() = doc,
        }
        tracing::debug!(version, "runtime limits applied");
    }
}

impl LimitTargets for RuntimeLimits {
    /// Whether `scope` names a route of the policy (or is `*` when `wildcard`).
    fn check_scope(&self, scope: &str, wildcard: bool) -> Result<(), InvalidChange> {
        if (wildcard && scope == ALL_SCOPES) || self.routes.iter().any(|(p, _)| p.path == scope) {
            return Ok(());
        }
        let what = if wildcard {
            "the path of a policy route, or *"
        } else {
            "the path of a policy route"
        };
        Err(InvalidChange::new("route", format!("must be {what}")))
    }

    /// Whether the routes of `scope` have the layers `patch` changes (a runtime change adjusts a
    /// limit; it does not add a layer the policy did not configure).
    fn check_patch(&self, scope: &str, patch: &LimitsPatch) -> Result<(), InvalidChange> {
        let routes: Vec<&RoutePolicy> = self
            .routes
            .iter()
            .filter(|(p, _)| p.path == scope)
            .map(|(p, _)| p)
            .collect();
        let checks = [
            (
                "limits.per_ip_per_min",
                patch.per_ip_per_min,
                routes.iter().any(|p| p.per_ip_per_min.is_some()),
            ),
            (
                "limits.per_user_per_min",
                patch.per_user_per_min,
                routes.iter().any(|p| p.per_user_per_min.is_some()),
            ),
            (
                "limits.daily_quota",
                patch.daily_quota,
                routes.iter().any(|p| p.daily_quota.is_some()),
            ),
        ];
        for (field, value, present) in checks {
            if value.is_some() && !present {
                return Err(InvalidChange::new(
                    field,
                    "the route has no such limit in the policy",
                ));
            }
        }
        Ok(())
    }

    /// Whether the policy has admission (caps to change).
    fn check_admission(&self, _caps: &AdmissionLimits) -> Result<(), InvalidChange> {
        if self.admission.is_none() {
            return Err(InvalidChange::new(
                "admission",
                "the policy has no [admission] section",
            ));
        }
        Ok(())
    }
}

impl RuntimeLimits {
    /// What is in force on this replica: each route's limits and modes, the admission caps.
    pub(crate) fn view(&self) -> Value {
        let doc = self.applied();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|(p, h)| {
                let modes: serde_json::Map<String, Value> = Layer::ALL
                    .iter()
                    .map(|l| (l.as_str().to_string(), json!(h.mode(*l).as_str())))
                    .collect();
                let window = |h: &LimitHandle, configured: Option<u32>| {
                    configured.map(|c| h.window_limit().unwrap_or(c))
                };
                json!({
                    "route": p.path,
                    "method": p.method.as_deref().unwrap_or("*"),
                    "class": p.class,
                    "per_ip_per_min": window(&h.ip_window, p.per_ip_per_min),
                    "per_user_per_min": window(&h.user_window, p.per_user_per_min),
                    "daily_quota": h.quota_limit.as_ref().map(|c| c.load(Ordering::Relaxed)),
                    "modes": modes,
                })
            })
            .collect();
        let admission = self.admission.as_ref().map(|(a, _)| {
            let (user, global) = a.caps();
            json!({"global_concurrency": global, "per_user_concurrency": user})
        });
        json!({
            "version": doc.version,
            "updated_by": doc.updated_by,
            "updated_at_ms": doc.updated_at_ms,
            "routes": routes,
            "unmatched": {"modes": {"breaker": self.fallback_breaker.mode().as_str()}},
            "admission": admission,
            "document": *doc,
        })
    }
}
