//! Errors of the limiter primitives. A Redis that cannot answer is never confused with a denial:
//! denials are `Ok` values, an unreachable Redis is [`LimiterError::Unavailable`].

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Why a limiter call could not reach a decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LimiterError {
    /// Redis could not be reached or could not serve the call now (connection refused or dropped,
    /// timeout, cluster down, loading, failover in progress). Callers fall back to degraded mode.
    #[error("redis unavailable")]
    Unavailable(#[source] RedisError),
    /// Redis answered, but not as the script's contract says (a bug or a foreign key type).
    #[error("script {script} failed")]
    Script {
        /// Name of the Lua script (its file name without `.lua`).
        script: &'static str,
        /// The error Redis answered with.
        #[source]
        source: RedisError,
    },
    /// A reply that does not have the shape the script header promises.
    #[error("script {script} returned an unexpected reply: {detail}")]
    Protocol {
        /// Name of the Lua script.
        script: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A configuration or argument the primitives cannot work with (caught before any Redis call).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl LimiterError {
    /// Whether this is the "Redis is down" case, for which callers switch to degraded mode.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, LimiterError::Unavailable(_))
    }

    /// Classifies a Redis error raised by a script call: transport and availability problems are
    /// `Unavailable`; errors the server raised while running a healthy script are `Script`.
    pub(crate) fn from_script(script: &'static str, err: RedisError) -> Self {
        if is_availability_error(&err) {
            LimiterError::Unavailable(err)
        } else {
            LimiterError::Script {
                script,
                source: err,
            }
        }
    }
}

/// Errors that mean "Redis cannot serve right now", as opposed to "Redis rejected this call".
pub(crate) fn is_availability_error(err: &RedisError) -> bool {
    if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
    {
        return true;
    }
    match err.kind() {
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        ),
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound | ErrorKind::Client => true,
        // BUSY (a script running too long) and OOM arrive as extension codes.
        ErrorKind::Extension => matches!(err.code(), Some("BUSY" | "OOM" | "NOREPLICAS")),
        _ => false,
    }
}
