//! The breaker's Lua scripts (`lua/breaker_*.lua`), loaded at compile time, and how they run.
//!
//! limiter-core's `LuaScript` can only be built inside limiter-core, so the scripts are wrapped here
//! in a `OnceLock<redis::Script>` (for the SHA-1) and sent as `EVALSHA` through
//! [`RedisHandle::cmd`]: the same multiplexed (or cluster) connection and the same error
//! classification as limiter-core's own scripts, and a cluster routes `EVALSHA` by its first key.
//! On `NOSCRIPT` (a restarted or flushed Redis) the call is repeated once as `EVAL` with the source,
//! which also caches the script on that server.

use std::sync::OnceLock;

use limiter_core::{LimiterError, RedisHandle};
use redis::{ErrorKind, FromRedisValue, ServerErrorKind};

/// One Lua script of this crate.
#[derive(Debug)]
pub(crate) struct BreakerScript {
    name: &'static str,
    source: &'static str,
    compiled: OnceLock<redis::Script>,
}

impl BreakerScript {
    const fn new(name: &'static str, source: &'static str) -> Self {
        BreakerScript {
            name,
            source,
            compiled: OnceLock::new(),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    fn sha1(&self) -> &str {
        self.compiled
            .get_or_init(|| redis::Script::new(self.source))
            .get_hash()
    }

    /// Runs the script with `args` appended after the keys: one round trip normally, two after
    /// Redis lost its script cache.
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        redis: &RedisHandle,
        keys: &[&str],
        args: impl Fn(&mut redis::Cmd),
    ) -> Result<T, LimiterError> {
        let build = |verb: &str, body: &str| {
            let mut c = redis::cmd(verb);
            c.arg(body).arg(keys.len()).arg(keys);
            args(&mut c);
            c
        };
        match redis.cmd(&build("EVALSHA", self.sha1())).await {
            Err(LimiterError::Script { source, .. })
                if source.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
            {
                redis
                    .cmd(&build("EVAL", self.source))
                    .await
                    .map_err(|e| self.rename(e))
            }
            other => other.map_err(|e| self.rename(e)),
        }
    }

    /// limiter-core names plain commands "command"; errors should name the script.
    fn rename(&self, e: LimiterError) -> LimiterError {
        match e {
            LimiterError::Script { source, .. } => LimiterError::Script {
                script: self.name,
                source,
            },
            other => other,
        }
    }
}

macro_rules! scripts {
    ($($(#[$doc:meta])* $ident:ident = $file:literal;)*) => {
        $(
            $(#[$doc])*
            pub(crate) static $ident: BreakerScript =
                BreakerScript::new($file, include_str!(concat!("../../../lua/", $file, ".lua")));
        )*
    };
}

scripts! {
    /// Grant a call while HALF_OPEN (or OPEN-expired): a bounded, expiring probe permit.
    PERMIT = "breaker_permit";
    /// Record an outcome; may trip or close.
    RECORD = "breaker_record";
    /// Force-close, force-open, reset error metrics.
    ADMIN = "breaker_admin";
    /// Read state and window counts.
    READ = "breaker_read";
}
