//! [`LimitsChange`]: an operator's request to change the runtime limits ([`ChangeRequest`], a
//! JSON body), checked field by field against what the service has ([`LimitTargets`]) before
//! anything is written, so a refusal names the field that is wrong.
//!
//! Actions: `set-limits` (`route` + `limits`, and/or `admission`), `set-mode` (`route` or `*`,
//! `layer`, `mode`), `reset-limits` (everything, or one `route`'s values and modes; `*`: the
//! service-wide modes).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::document::{AdmissionLimits, InvalidChange, Layer, LimitsDocument, LimitsPatch};
use crate::Mode;

/// A change as an operator sends it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// `set-limits`, `set-mode` or `reset-limits`.
    pub action: String,
    /// A scope: a route as the service names it, or `*`.
    pub route: Option<String>,
    /// Read as a map so that a bad value is refused naming its field.
    pub limits: Option<Map<String, Value>>,
    /// Admission caps (`global_concurrency`, `per_user_concurrency`).
    pub admission: Option<Map<String, Value>>,
    /// `window`, `admission`, `quota`, `breaker` or `all`.
    pub layer: Option<String>,
    /// `enforce`, `shadow` or `off`.
    pub mode: Option<String>,
    /// Who is making the change (for the log and the document).
    pub by: Option<String>,
}

/// What a change is checked against: the scopes and layers the service really has. A runtime
/// change adjusts a limit; it never adds a layer the service was not configured with.
pub trait LimitTargets {
    /// Whether `scope` is one of the service's routes (or `*`, when `wildcard`).
    fn check_scope(&self, scope: &str, wildcard: bool) -> Result<(), InvalidChange>;
    /// Whether the routes of `scope` have the limits `patch` changes.
    fn check_patch(&self, scope: &str, patch: &LimitsPatch) -> Result<(), InvalidChange>;
    /// Whether the service has admission caps to change.
    fn check_admission(&self, caps: &AdmissionLimits) -> Result<(), InvalidChange>;
    /// Whether `layers` can be switched to `mode` at runtime (all of them, to any mode, unless
    /// the service says not).
    fn check_mode(&self, _layers: &[Layer], _mode: Mode) -> Result<(), InvalidChange> {
        Ok(())
    }
}

/// A checked change to the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitsChange {
    /// New values for a route's limits and/or the admission caps.
    Set {
        /// The route and its new limits.
        route: Option<(String, LimitsPatch)>,
        /// New caps.
        admission: Option<AdmissionLimits>,
    },
    /// Layers of a scope switched to a mode.
    Mode {
        /// A route, or `*`.
        scope: String,
        /// The layers switched.
        layers: Vec<Layer>,
        /// Their new mode.
        mode: Mode,
    },
    /// Back to the configured values (one scope, or everything).
    Reset {
        /// `None`: everything.
        scope: Option<String>,
    },
}

/// A limit's value: a whole number from 1 to 2^32 - 1.
fn count(field: String, v: &Value) -> Result<u32, InvalidChange> {
    match v.as_u64().map(u32::try_from) {
        Some(Ok(n)) if n > 0 => Ok(n),
        _ => Err(InvalidChange::new(field, "must be a whole number above 0")),
    }
}

fn limits_patch(m: &Map<String, Value>) -> Result<LimitsPatch, InvalidChange> {
    let mut p = LimitsPatch::default();
    for (k, v) in m {
        let field = format!("limits.{k}");
        let slot = match k.as_str() {
            "per_ip_per_min" => &mut p.per_ip_per_min,
            "per_user_per_min" => &mut p.per_user_per_min,
            "daily_quota" => &mut p.daily_quota,
            _ => {
                return Err(InvalidChange::new(
                    field,
                    "unknown limit (per_ip_per_min, per_user_per_min, daily_quota)",
                ));
            }
        };
        *slot = Some(count(field, v)?);
    }
    Ok(p)
}

fn admission_caps(m: &Map<String, Value>) -> Result<AdmissionLimits, InvalidChange> {
    let mut a = AdmissionLimits::default();
    for (k, v) in m {
        let field = format!("admission.{k}");
        let slot = match k.as_str() {
            "global_concurrency" => &mut a.global_concurrency,
            "per_user_concurrency" => &mut a.per_user_concurrency,
            _ => {
                return Err(InvalidChange::new(
                    field,
                    "unknown cap (global_concurrency, per_user_concurrency)",
                ));
            }
        };
        *slot = Some(count(field, v)?);
    }
    Ok(a)
}

fn unexpected(field: &str, present: bool) -> Result<(), InvalidChange> {
    if present {
        Err(InvalidChange::new(field, "not expected for this action"))
    } else {
        Ok(())
    }
}

impl LimitsChange {
    /// Checks `req` against `targets`; the first field that is wrong is named.
    pub fn parse(req: &ChangeRequest, targets: &dyn LimitTargets) -> Result<Self, InvalidChange> {
        let a = req;
        match a.action.as_str() {
            "set-limits" => {
                unexpected("layer", a.layer.is_some())?;
                unexpected("mode", a.mode.is_some())?;
                let patch = a.limits.as_ref().map(limits_patch).transpose()?;
                let caps = a.admission.as_ref().map(admission_caps).transpose()?;
                let route = match (&a.route, &patch) {
                    (Some(r), Some(l)) => {
                        targets.check_scope(r, false)?;
                        targets.check_patch(r, l)?;
                        if *l == LimitsPatch::default() {
                            return Err(InvalidChange::new("limits", "names no limit"));
                        }
                        Some((r.clone(), *l))
                    }
                    (None, Some(_)) => {
                        return Err(InvalidChange::new("route", "required with limits"));
                    }
                    (Some(_), None) => {
                        return Err(InvalidChange::new("limits", "required with route"));
                    }
                    (None, None) => None,
                };
                if let Some(caps) = &caps {
                    targets.check_admission(caps)?;
                    if caps.is_empty() {
                        return Err(InvalidChange::new("admission", "names no cap"));
                    }
                }
                if route.is_none() && caps.is_none() {
                    return Err(InvalidChange::new(
                        "limits",
                        "give route and limits, or admission",
                    ));
                }
                // Values are checked by the document itself (above 0), naming the field.
                let change = LimitsChange::Set {
                    route,
                    admission: caps,
                };
                change.apply(&mut LimitsDocument::default())?;
                Ok(change)
            }
            "set-mode" => {
                unexpected("limits", a.limits.is_some())?;
                unexpected("admission", a.admission.is_some())?;
                let scope = a
                    .route
                    .clone()
                    .ok_or_else(|| InvalidChange::new("route", "required (a route, or *)"))?;
                targets.check_scope(&scope, true)?;
                let layers = a
                    .layer
                    .as_deref()
                    .and_then(Layer::parse_many)
                    .ok_or_else(|| {
                        InvalidChange::new("layer", "window, admission, quota, breaker or all")
                    })?;
                let mode = a
                    .mode
                    .as_deref()
                    .and_then(|m| m.parse::<Mode>().ok())
                    .ok_or_else(|| InvalidChange::new("mode", "enforce, shadow or off"))?;
                targets.check_mode(&layers, mode)?;
                Ok(LimitsChange::Mode {
                    scope,
                    layers,
                    mode,
                })
            }
            "reset-limits" => {
                unexpected("limits", a.limits.is_some())?;
                unexpected("admission", a.admission.is_some())?;
                unexpected("layer", a.layer.is_some())?;
                unexpected("mode", a.mode.is_some())?;
                if let Some(r) = &a.route {
                    targets.check_scope(r, true)?;
                }
                Ok(LimitsChange::Reset {
                    scope: a.route.clone(),
                })
            }
            _ => Err(InvalidChange::new(
                "action",
                "set-limits, set-mode or reset-limits",
            )),
        }
    }

    /// Makes the change to `doc`.
    pub fn apply(&self, doc: &mut LimitsDocument) -> Result<(), InvalidChange> {
        match self {
            LimitsChange::Set { route, admission } => {
                if let Some((scope, patch)) = route {
                    doc.set_limits(scope, *patch)?;
                }
                if let Some(caps) = admission {
                    doc.set_admission(*caps)?;
                }
            }
            LimitsChange::Mode {
                scope,
                layers,
                mode,
            } => doc.set_mode(scope, layers, *mode),
            LimitsChange::Reset { scope } => doc.reset(scope.as_deref()),
        }
        Ok(())
    }
}
