//! The runtime-limits document: what operators changed at runtime, on top of the limits the
//! service was started with. Only what was changed is in it; everything else falls back to the
//! configured defaults, so an empty document (version 0) means "as configured".
//!
//! ```json
//! {"version": 3, "updated_by": "ops@203.0.113.7", "updated_at_ms": 1764748800123,
//!  "scopes": {"*": {"modes": {"breaker": "shadow"}},
//!             "/api/chat": {"per_ip_per_min": 10, "modes": {"window": "enforce"}}},
//!  "admission": {"global_concurrency": 5}}
//! ```
//!
//! A scope is a route name chosen by the service (the gateway uses the route's path) or `*`, the
//! whole service. A mode set on a route wins over the one on `*`; setting a mode on `*` clears
//! that layer's mode on every route, so the last change an operator made is the one in force.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Mode;

/// The scope that covers the whole service.
pub const ALL_SCOPES: &str = "*";

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The kinds of layer whose mode can be switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// The sliding windows (per address and per user).
    Window,
    /// Admission (concurrency caps and the queue).
    Admission,
    /// The daily quota.
    Quota,
    /// The circuit breaker on the protected service.
    Breaker,
}

impl Layer {
    /// Every layer, in the order above.
    pub const ALL: [Layer; 4] = [
        Layer::Window,
        Layer::Admission,
        Layer::Quota,
        Layer::Breaker,
    ];

    /// `window`, `admission`, `quota` or `breaker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Window => "window",
            Layer::Admission => "admission",
            Layer::Quota => "quota",
            Layer::Breaker => "breaker",
        }
    }

    /// Parses a layer name, or `all` (every layer).
    pub fn parse_many(s: &str) -> Option<Vec<Layer>> {
        match s {
            "all" => Some(Layer::ALL.to_vec()),
            other => Layer::ALL
                .into_iter()
                .find(|l| l.as_str() == other)
                .map(|l| vec![l]),
        }
    }
}

/// Modes set on one scope (`None`: not set here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerModes {
    /// The windows' mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Mode>,
    /// Admission's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Mode>,
    /// The quota's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Mode>,
    /// The breaker's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Mode>,
}

impl LayerModes {
    /// The mode set for `layer`, if any.
    pub fn get(&self, layer: Layer) -> Option<Mode> {
        *self.slot(layer)
    }

    fn slot(&self, layer: Layer) -> &Option<Mode> {
        match layer {
            Layer::Window => &self.window,
            Layer::Admission => &self.admission,
            Layer::Quota => &self.quota,
            Layer::Breaker => &self.breaker,
        }
    }

    fn slot_mut(&mut self, layer: Layer) -> &mut Option<Mode> {
        match layer {
            Layer::Window => &mut self.window,
            Layer::Admission => &mut self.admission,
            Layer::Quota => &mut self.quota,
            Layer::Breaker => &mut self.breaker,
        }
    }

    /// Whether no mode is set.
    pub fn is_empty(&self) -> bool {
        Layer::ALL.iter().all(|l| self.get(*l).is_none())
    }
}

/// The limits and modes set on one scope (`None`: not set here, the configured value holds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeLimits {
    /// Layer modes.
    #[serde(default, skip_serializing_if = "LayerModes::is_empty")]
    pub modes: LayerModes,
    /// Requests a minute per client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_ip_per_min: Option<u32>,
    /// Requests a minute per user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user_per_min: Option<u32>,
    /// Requests a UTC day per user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_quota: Option<u32>,
}

impl ScopeLimits {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == ScopeLimits::default()
    }
}

/// The admission caps set at runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionLimits {
    /// Requests running at once in the whole fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_concurrency: Option<u32>,
    /// Requests one user may run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user_concurrency: Option<u32>,
}

impl AdmissionLimits {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == AdmissionLimits::default()
    }
}

/// A change of limits on one scope: the values given replace the scope's (the others stay).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    /// Requests a minute per client address.
    pub per_ip_per_min: Option<u32>,
    /// Requests a minute per user.
    pub per_user_per_min: Option<u32>,
    /// Requests a UTC day per user.
    pub daily_quota: Option<u32>,
}

/// A change refused; `field` names what was wrong (`limits.per_ip_per_min`, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidChange {
    /// The field at fault.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl InvalidChange {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidChange {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn positive(field: &str, v: Option<u32>) -> Result<(), InvalidChange> {
    match v {
        Some(0) => Err(InvalidChange::new(field, "must be above 0")),
        _ => Ok(()),
    }
}

/// The whole document. `version` and `updated_at_ms` are set by the store when it is written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsDocument {
    /// Bumped by one on every write; 0: nothing was ever written.
    #[serde(default)]
    pub version: u64,
    /// Who made the last change (as the caller said, or its address).
    #[serde(default)]
    pub updated_by: String,
    /// When (Redis time, ms since the Unix epoch).
    #[serde(default)]
    pub updated_at_ms: u64,
    /// Per scope (route name or `*`).
    #[serde(default)]
    pub scopes: BTreeMap<String, ScopeLimits>,
    /// Admission caps.
    #[serde(default, skip_serializing_if = "AdmissionLimits::is_empty")]
    pub admission: AdmissionLimits,
}

impl LimitsDocument {
    /// What is set on `scope` (empty if nothing).
    pub fn scope(&self, scope: &str) -> ScopeLimits {
        self.scopes.get(scope).cloned().unwrap_or_default()
    }

    /// The mode in force for `layer` on `scope`: the scope's, else `*`'s, else `None` (the
    /// configured mode).
    pub fn mode(&self, scope: &str, layer: Layer) -> Option<Mode> {
        self.scopes
            .get(scope)
            .and_then(|s| s.modes.get(layer))
            .or_else(|| self.scopes.get(ALL_SCOPES).and_then(|s| s.modes.get(layer)))
    }

    /// Sets the limits `patch` gives on `scope` (values must be above 0).
    pub fn set_limits(&mut self, scope: &str, patch: LimitsPatch) -> Result<(), InvalidChange> {
        positive("limits.per_ip_per_min", patch.per_ip_per_min)?;
        positive("limits.per_user_per_min", patch.per_user_per_min)?;
        positive("limits.daily_quota", patch.daily_quota)?;
        let s = self.scopes.entry(scope.to_string()).or_default();
        s.per_ip_per_min = patch.per_ip_per_min.or(s.per_ip_per_min);
        s.per_user_per_min = patch.per_user_per_min.or(s.per_user_per_min);
        s.daily_quota = patch.daily_quota.or(s.daily_quota);
        Ok(())
    }

    /// Sets the admission caps given (values must be above 0).
    pub fn set_admission(&mut self, caps: AdmissionLimits) -> Result<(), InvalidChange> {
        positive("admission.global_concurrency", caps.global_concurrency)?;
        positive("admission.per_user_concurrency", caps.per_user_concurrency)?;
        let a = &mut self.admission;
        a.global_concurrency = caps.global_concurrency.or(a.global_concurrency);
        a.per_user_concurrency = caps.per_user_concurrency.or(a.per_user_concurrency);
        Ok(())
    }

    /// Sets the mode of `layers` on `scope`. On `*`, also clears those layers' modes on every
    /// other scope: the whole service then runs in that mode.
    pub fn set_mode(&mut self, scope: &str, layers: &[Layer], mode: Mode) {
        if scope == ALL_SCOPES {
            for s in self.scopes.values_mut() {
                for l in layers {
                    *s.modes.slot_mut(*l) = None;
                }
            }
        }
        let s = self.scopes.entry(scope.to_string()).or_default();
        for l in layers {
            *s.modes.slot_mut(*l) = Some(mode);
        }
        self.scopes.retain(|_, s| !s.is_empty());
    }

    /// Back to the configured values: on `scope` only, or everything (scopes and admission caps)
    /// when `None`.
    pub fn reset(&mut self, scope: Option<&str>) {
        match scope {
            Some(s) => {
                self.scopes.remove(s);
            }
            None => {
                self.scopes.clear();
                self.admission = AdmissionLimits::default();
            }
        }
    }

    /// Resets the admission caps to the configured ones.
    pub fn reset_admission(&mut self) {
        self.admission = AdmissionLimits::default();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_route_mode_wins_over_the_wildcard_until_the_wildcard_is_set_again() {
        let mut d = LimitsDocument::default();
        assert_eq!(d.mode("/a", Layer::Window), None);
        d.set_mode("*", &[Layer::Window], Mode::Shadow);
        assert_eq!(d.mode("/a", Layer::Window), Some(Mode::Shadow));
        d.set_mode("/a", &[Layer::Window], Mode::Enforce);
        assert_eq!(d.mode("/a", Layer::Window), Some(Mode::Enforce));
        assert_eq!(d.mode("/b", Layer::Window), Some(Mode::Shadow));
        assert_eq!(d.mode("/a", Layer::Quota), None);
        d.set_mode("*", &Layer::ALL, Mode::Off);
        for l in Layer::ALL {
            assert_eq!(d.mode("/a", l), Some(Mode::Off));
        }
        // The route's entry had only modes, now all cleared: no empty scope left behind.
        assert_eq!(d.scopes.keys().collect::<Vec<_>>(), ["*"]);
    }

    #[test]
    fn limits_merge_and_zero_is_refused_naming_the_field() {
        let mut d = LimitsDocument::default();
        let patch = LimitsPatch {
            per_ip_per_min: Some(10),
            ..LimitsPatch::default()
        };
        d.set_limits("/a", patch).unwrap();
        let patch = LimitsPatch {
            daily_quota: Some(7),
            ..LimitsPatch::default()
        };
        d.set_limits("/a", patch).unwrap();
        let s = d.scope("/a");
        assert_eq!((s.per_ip_per_min, s.daily_quota), (Some(10), Some(7)));
        let e = d
            .set_limits(
                "/a",
                LimitsPatch {
                    per_user_per_min: Some(0),
                    ..LimitsPatch::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.field, "limits.per_user_per_min");
        let e = d
            .set_admission(AdmissionLimits {
                global_concurrency: Some(0),
                per_user_concurrency: None,
            })
            .unwrap_err();
        assert_eq!(e.field, "admission.global_concurrency");
        d.set_admission(AdmissionLimits {
            global_concurrency: Some(5),
            per_user_concurrency: None,
        })
        .unwrap();
        assert_eq!(d.admission.global_concurrency, Some(5));
        d.reset(Some("/a"));
        assert!(d.scope("/a").is_empty());
        d.reset(None);
        assert!(d.admission.is_empty());
    }

    #[test]
    fn the_document_round_trips_through_json_without_unset_fields() {
        let mut d = LimitsDocument::default();
        d.set_mode("/a", &[Layer::Breaker], Mode::Off);
        d.set_limits(
            "/a",
            LimitsPatch {
                per_ip_per_min: Some(3),
                ..LimitsPatch::default()
            },
        )
        .unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            r#"{"version":0,"updated_by":"","updated_at_ms":0,"scopes":{"/a":{"modes":{"breaker":"off"},"per_ip_per_min":3}}}"#
        );
        assert_eq!(serde_json::from_str::<LimitsDocument>(&json).unwrap(), d);
        assert!(serde_json::from_str::<LimitsDocument>(r#"{"scopes":{"/a":{"x":1}}}"#).is_err());
        assert!(
            serde_json::from_str::<LimitsDocument>(
                r#"{"scopes":{"/a":{"modes":{"window":"block"}}}}"#
            )
            .is_err()
        );
        assert_eq!(Layer::parse_many("all").unwrap().len(), 4);
        assert_eq!(Layer::parse_many("quota").unwrap(), [Layer::Quota]);
        assert!(Layer::parse_many("queue").is_none());
    }
}
