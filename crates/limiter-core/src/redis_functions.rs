//! Whether this crate's scripts run as Redis Functions (FCALL) or by EVALSHA, per handle.
//!
//! A handle starts with Functions. The first FCALL on a server without the library (a fresh or
//! restarted server, a failover to one that never had it) answers "Function not found": the
//! handle loads the library (`FUNCTION LOAD REPLACE`, the same code under the same versioned
//! name, so replicas racing to load it agree) and calls again. A server that refuses FCALL or
//! FUNCTION LOAD itself (Redis before 7, the command renamed away, a proxy or an ACL that
//! forbids it) turns Functions off for the handle's life: every script then runs by EVALSHA.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::RedisError;

use crate::error::is_availability_error;
use crate::scripts::library;

/// Shared by the clones of one handle.
#[derive(Debug, Clone, Default)]
pub(crate) struct Functions {
    off: Arc<AtomicBool>,
}

impl Functions {
    /// Whether FCALL is still worth trying.
    pub(crate) fn on(&self) -> bool {
        !self.off.load(Ordering::Relaxed)
    }

    /// EVALSHA from now on.
    pub(crate) fn turn_off(&self, why: &RedisError) {
        if !self.off.swap(true, Ordering::Relaxed) {
            tracing::info!(error = %why, "Redis Functions refused; scripts run by EVALSHA");
        }
    }
}

/// What to do after an FCALL failed.
pub(crate) enum After {
    /// The library is missing: load it and call again.
    Load,
    /// Functions are refused: run the script by EVALSHA.
    Evalsha,
    /// A real error of this call.
    Fail,
}

/// Classifies an FCALL error.
pub(crate) fn after_fcall(e: &RedisError) -> After {
    if is_availability_error(e) {
        return After::Fail;
    }
    let text = e.to_string();
    if text.contains("Function not found") {
        After::Load
    } else if refused(&text) {
        After::Evalsha
    } else {
        After::Fail
    }
}

/// Whether a FUNCTION LOAD error means "not here" rather than "not now" (anything the server or a
/// proxy answered: Functions cannot be used through it).
pub(crate) fn load_refused(e: &RedisError) -> bool {
    !is_availability_error(e)
}

fn refused(text: &str) -> bool {
    text.contains("unknown command") || text.contains("NOPERM") || text.contains("not allowed")
}

/// `FUNCTION LOAD REPLACE <library>`.
pub(crate) fn load_cmd() -> redis::Cmd {
    let mut cmd = redis::cmd("FUNCTION");
    cmd.arg("LOAD").arg("REPLACE").arg(&library().code);
    cmd
}
