//! Runtime limits on `serve`: the fleet's runtime-limits document (limiter-tower's
//! [`limiter_tower::runtime`], kept in Redis as `<prefix>:runtime-limits:serve`) mapped onto this
//! replica's layers, the same way the gateway maps its own.
//!
//! A scope is a route class's path (`/api/chat`, `/api/research`, `/api/export`) or `*`. What can
//! change: each class's per-IP window (`per_ip_per_min`), the free tier's daily quota
//! (`daily_quota`, on `/api/chat`, the route that spends it), the admission caps, and the modes of
//! the window (enforce, shadow, off) and admission (enforce, off) layers. What the document does not set falls back to the
//! configuration. Applying is storing into atomics, so the request path pays nothing more.

use std::sync::{Arc, RwLock};

use limiter_core::Admission;
use limiter_tower::runtime::{
    ALL_SCOPES, AdmissionLimits, InvalidChange, Layer, LimitTargets, LimitsDocument, LimitsPatch,
};
use limiter_tower::{LimitHandle, Mode};
use serde_json::{Value, json};

use super::admission::RouteClass;
use super::quota::QuotaStore;

/// The name of the document in Redis (`<prefix>:runtime-limits:serve`).
pub const DOCUMENT: &str = "serve";

/// How often every replica polls the document's version, the safety net for a lost pub/sub
/// announcement: a change is in force everywhere within this plus a round trip.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// The scope (route path) of a route class.
pub fn scope(class: RouteClass) -> &'static str {
    match class {
        RouteClass::Chat => "/api/chat",
        RouteClass::Research => "/api/research",
        RouteClass::Export => "/api/export",
    }
}

/// The switches of one route class.
#[derive(Debug, Clone)]
pub struct ClassHandles {
    /// The per-IP window's mode and limit.
    pub window: LimitHandle,
    /// The admission layer's mode.
    pub admission: LimitHandle,
    /// The configured per-IP limit a minute.
    pub per_ip_per_min: u32,
}

impl ClassHandles {
    /// Handles enforcing the configured `per_ip_per_min`.
    pub fn new(per_ip_per_min: u32) -> Self {
        ClassHandles {
            window: LimitHandle::new(),
            admission: LimitHandle::new(),
            per_ip_per_min,
        }
    }
}

/// Every switch of this replica, and the configured values they fall back to.
#[derive(Debug)]
pub struct RuntimeLimits {
    classes: [(RouteClass, ClassHandles); 3],
    quota: QuotaStore,
    free_daily: u32,
    admission: Admission,
    /// The configured caps `(per-user, global)`.
    caps: (u32, u32),
    applied: RwLock<Arc<LimitsDocument>>,
}

impl RuntimeLimits {
    /// Over the layers' handles, the quota store and the admission queue, with their configured
    /// values (the store's and the queue's, as they are now).
    pub fn new(
        classes: [(RouteClass, ClassHandles); 3],
        quota: QuotaStore,
        admission: Admission,
    ) -> Self {
        RuntimeLimits {
            free_daily: quota.free_limit(),
            caps: admission.caps(),
            classes,
            quota,
            admission,
            applied: RwLock::new(Arc::new(LimitsDocument::default())),
        }
    }

    /// The document applied last.
    pub fn applied(&self) -> Arc<LimitsDocument> {
        match self.applied.read() {
            Ok(d) => Arc::clone(&d),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Applies `doc` if it is newer than the one applied (a change this replica just wrote,
    /// possibly ahead of the watch that will bring it too).
    pub fn apply_if_newer(&self, doc: Arc<LimitsDocument>) {
        if doc.version > self.applied().version {
            self.apply(doc);
        }
    }

    /// Puts `doc` in force (what it does not set: the configured values).
    pub fn apply(&self, doc: Arc<LimitsDocument>) {
        for (class, h) in &self.classes {
            let path = scope(*class);
            h.window.set_window_limit(doc.scope(path).per_ip_per_min);
            let mode = |l: Layer| doc.mode(path, l).unwrap_or(Mode::Enforce);
            h.window.set_mode(mode(Layer::Window));
            h.admission.set_mode(mode(Layer::Admission));
        }
        let chat = doc.scope(scope(RouteClass::Chat));
        self.quota
            .set_free_limit(chat.daily_quota.unwrap_or(self.free_daily));
        let (user, global) = self.caps;
        self.admission.set_caps(
            Some(doc.admission.per_user_concurrency.unwrap_or(user)),
            Some(doc.admission.global_concurrency.unwrap_or(global)),
        );
        let version = doc.version;
        match self.applied.write() {
            Ok(mut d) => *d = doc,
            Err(poisoned) => *poisoned.into_inner() = doc,
        }
        tracing::debug!(version, "runtime limits applied");
    }

    /// The admission mode of `class` (chat checks it itself: it admits outside the layer).
    pub fn admission_mode(&self, class: RouteClass) -> Mode {
        self.classes
            .iter()
            .find(|(c, _)| *c == class)
            .map_or(Mode::Enforce, |(_, h)| h.admission.mode())
    }

    /// What is in force on this replica: each class's limits and modes, the quota, the caps.
    pub fn view(&self) -> Value {
        let doc = self.applied();
        let routes: Vec<Value> = self
            .classes
            .iter()
            .map(|(class, h)| {
                json!({
                    "route": scope(*class),
                    "class": class.name(),
                    "per_ip_per_min": h.window.window_limit().unwrap_or(h.per_ip_per_min),
                    "daily_quota": (*class == RouteClass::Chat).then(|| self.quota.free_limit()),
                    "modes": {
                        "window": h.window.mode().as_str(),
                        "admission": h.admission.mode().as_str(),
                    },
                })
            })
            .collect();
        let (user, global) = self.admission.caps();
        json!({
            "version": doc.version,
            "updated_by": doc.updated_by,
            "updated_at_ms": doc.updated_at_ms,
            "routes": routes,
            "admission": {"global_concurrency": global, "per_user_concurrency": user},
            "document": *doc,
        })
    }
}

impl LimitTargets for RuntimeLimits {
    fn check_scope(&self, scope_: &str, wildcard: bool) -> Result<(), InvalidChange> {
        if (wildcard && scope_ == ALL_SCOPES)
            || self.classes.iter().any(|(c, _)| scope(*c) == scope_)
        {
            return Ok(());
        }
        let what = if wildcard {
            "/api/chat, /api/research, /api/export or *"
        } else {
            "/api/chat, /api/research or /api/export"
        };
        Err(InvalidChange::new("route", format!("must be {what}")))
    }

    fn check_patch(&self, scope_: &str, patch: &LimitsPatch) -> Result<(), InvalidChange> {
        if patch.per_user_per_min.is_some() {
            return Err(InvalidChange::new(
                "limits.per_user_per_min",
                "the service has no per-user window",
            ));
        }
        if patch.daily_quota.is_some() && scope_ != scope(RouteClass::Chat) {
            return Err(InvalidChange::new(
                "limits.daily_quota",
                "only /api/chat spends the daily quota",
            ));
        }
        Ok(())
    }

    fn check_admission(&self, _caps: &AdmissionLimits) -> Result<(), InvalidChange> {
        Ok(())
    }

    fn check_mode(&self, layers: &[Layer], mode: Mode) -> Result<(), InvalidChange> {
        // The quota is spent by the chat handler itself and the breakers guard the upstreams,
        // not routes: neither has a switch here (`all` means the two that do).
        if layers.len() < Layer::ALL.len()
            && layers
                .iter()
                .any(|l| matches!(l, Layer::Quota | Layer::Breaker))
        {
            return Err(InvalidChange::new(
                "layer",
                "window, admission or all (quota and breaker have no runtime mode on serve)",
            ));
        }
        // Chat takes its slot outside the admission layer (its stream reports queue positions),
        // so there is no decision to shadow: admission is enforced or off.
        if mode == Mode::Shadow && layers.contains(&Layer::Admission) {
            return Err(InvalidChange::new(
                "mode",
                "admission is enforce or off on serve (window: enforce, shadow or off)",
            ));
        }
        Ok(())
    }
}

/// Keeps `limits` following the fleet's document: loads it now (before the replica serves, so
/// a restarted replica comes up with the fleet's limits), then applies every change announced
/// or polled. Returns the store, for the admin actions that write it. The follower holds the
/// limits weakly and ends once the replica's state is gone (tests drop replicas in-process).
pub async fn follow(
    redis: limiter_core::RedisHandle,
    limits: &Arc<RuntimeLimits>,
    poll: std::time::Duration,
) -> limiter_tower::runtime::LimitsStore {
    let store = limiter_tower::runtime::LimitsStore::new(redis, DOCUMENT);
    let mut docs = store.watch(poll).await;
    limits.apply(docs.borrow_and_update().clone());
    let follower = Arc::downgrade(limits);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = docs.changed() => {
                    let (Ok(()), Some(limits)) = (changed, follower.upgrade()) else {
                        return;
                    };
                    let doc = docs.borrow_and_update().clone();
                    tracing::info!(version = doc.version, by = %doc.updated_by, "runtime limits changed");
                    limits.apply(doc);
                }
                () = tokio::time::sleep(poll) => {
                    if follower.strong_count() == 0 {
                        return;
                    }
                }
            }
        }
    });
    store
}
