//! [`LimitHandle`]: the runtime switches the layers read on every request: the [`Mode`] (enforce,
//! shadow, off) and a window-limit override. Atomics only, so reading them costs nothing
//! measurable and changing them takes effect on the next request on every clone of the layer.
//!
//! What is runtime-adjustable: the mode of any layer, and the limit of a [`crate::SlidingWindowLayer`]
//! (a window is one Redis script taking the limit as an argument, so a new limit is just another
//! argument). The admission caps are changed on the admission itself
//! (`limiter_core::Admission::set_caps`). Give each layer a handle of its own to switch layers
//! one by one; [`crate::runtime`] carries such changes to every replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use http::HeaderName;

/// The header a layer in [`Mode::Shadow`] adds to a response it would have refused; its value is
/// the refusal's stable code (`rate_limited`, `queue_timeout`, ...).
///
/// ```
/// assert_eq!(limiter_tower::SHADOW_HEADER, "limit-shadow-refusal");
/// ```
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("limit-shadow-refusal");

/// How a layer treats its decisions.
///
/// ```
/// use limiter_tower::Mode;
///
/// let mode: Mode = "shadow".parse().unwrap();
/// assert_eq!(mode, Mode::Shadow);
/// assert_eq!(mode.as_str(), "shadow");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Decide and refuse (the default).
    Enforce,
    /// Decide and count, but never refuse: a request that would have been refused goes through
    /// with the `limit-shadow-refusal` header and a `tracing` event. For trying limits on real
    /// traffic before enforcing them.
    Shadow,
    /// Do not decide at all: requests go straight to the inner service.
    Off,
}

impl Mode {
    fn to_u8(self) -> u8 {
        match self {
            Mode::Enforce => 0,
            Mode::Shadow => 1,
            Mode::Off => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Mode::Shadow,
            2 => Mode::Off,
            _ => Mode::Enforce,
        }
    }

    /// `enforce`, `shadow` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
            Mode::Off => "off",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    /// Parses `enforce`, `shadow` or `off`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "shadow" => Ok(Mode::Shadow),
            "off" => Ok(Mode::Off),
            other => Err(format!(
                "unknown limit mode {other:?} (enforce, shadow or off)"
            )),
        }
    }
}

#[derive(Debug)]
struct Inner {
    mode: AtomicU8,
    /// 0 = the limit the window was built with.
    window_limit: AtomicU32,
    shadow_refusals: AtomicU64,
}

/// A shared, cheaply cloned switch board for one or more layers. Give the same handle to several
/// layers to switch them together.
///
/// ```
/// use limiter_tower::{LimitHandle, Mode};
///
/// let handle = LimitHandle::new();
/// assert_eq!(handle.mode(), Mode::Enforce);
/// handle.set_mode(Mode::Shadow);
/// handle.set_window_limit(Some(50));
/// assert_eq!(handle.window_limit(), Some(50));
/// assert_eq!(handle.shadow_refusals(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct LimitHandle {
    inner: Arc<Inner>,
}

impl Default for LimitHandle {
    fn default() -> Self {
        LimitHandle::new()
    }
}

impl LimitHandle {
    /// Enforcing, with the windows' configured limits.
    pub fn new() -> Self {
        LimitHandle {
            inner: Arc::new(Inner {
                mode: AtomicU8::new(Mode::Enforce.to_u8()),
                window_limit: AtomicU32::new(0),
                shadow_refusals: AtomicU64::new(0),
            }),
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.inner.mode.load(Ordering::Relaxed))
    }

    /// Switches the mode; the next request sees it.
    pub fn set_mode(&self, mode: Mode) {
        self.inner.mode.store(mode.to_u8(), Ordering::Relaxed);
    }

    /// The window limit in force, if overridden.
    pub fn window_limit(&self) -> Option<u32> {
        match self.inner.window_limit.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Overrides the limit of the windows using this handle (`None`: back to the configured
    /// limit). Requests already in a window stay counted. Every replica must be told (an admin
    /// endpoint broadcasting it, say): the limit is an argument of each check, not stored in
    /// Redis.
    pub fn set_window_limit(&self, limit: Option<u32>) {
        self.inner
            .window_limit
            .store(limit.unwrap_or(0), Ordering::Relaxed);
    }

    /// Requests that shadow mode let through although they would have been refused.
    pub fn shadow_refusals(&self) -> u64 {
        self.inner.shadow_refusals.load(Ordering::Relaxed)
    }

    pub(crate) fn count_shadow_refusal(&self, layer: &'static str, code: &'static str) {
        self.inner.shadow_refusals.fetch_add(1, Ordering::Relaxed);
        tracing::info!(layer, code, "limit shadow mode: would have refused");
    }
}

/// Marks a response let through by shadow mode.
pub(crate) fn mark_shadow<B>(resp: &mut http::Response<B>, code: &'static str) {
    resp.headers_mut()
        .insert(SHADOW_HEADER, http::HeaderValue::from_static(code));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_round_trip() {
        for m in [Mode::Enforce, Mode::Shadow, Mode::Off] {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
            assert_eq!(Mode::from_u8(m.to_u8()), m);
        }
        assert!("block".parse::<Mode>().is_err());
    }
}
