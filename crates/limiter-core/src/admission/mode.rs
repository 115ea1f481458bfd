//! Whether admission goes through Redis: the mode of one replica and its changes.

use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

/// Whether admission goes through Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Normal: shared caps in Redis.
    Shared = 0,
    /// Redis unreachable: local share of the caps.
    Degraded = 1,
    /// Redis is back and this replica's unregistered permits are registered there; still
    /// admitting locally (each grant registered against the shared caps first) until the fleet
    /// has registered its own, before anyone admits by Redis's counts alone.
    Recovering = 2,
}

impl Mode {
    /// `shared`, `degraded` or `recovering`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Degraded => "degraded",
            Mode::Recovering => "recovering",
        }
    }
}

/// The current mode, and a notification on every change.
#[derive(Debug)]
pub(crate) struct ModeCell {
    mode: AtomicU8,
    changed: Notify,
}

impl Default for ModeCell {
    fn default() -> Self {
        ModeCell {
            mode: AtomicU8::new(Mode::Shared as u8),
            changed: Notify::new(),
        }
    }
}

impl ModeCell {
    pub(crate) fn get(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Shared,
            1 => Mode::Degraded,
            _ => Mode::Recovering,
        }
    }

    /// Sets the mode; `true` if it changed (waiters of [`ModeCell::changed`] are woken).
    pub(crate) fn set(&self, mode: Mode) -> bool {
        let old = self.mode.swap(mode as u8, Ordering::AcqRel);
        if old == mode as u8 {
            return false;
        }
        self.changed.notify_waiters();
        true
    }

    /// Notified on every change (register with `enable` before checking the mode).
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}
