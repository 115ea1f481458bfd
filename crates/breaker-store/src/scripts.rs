//! The breaker's Lua scripts (`lua/breaker_*.lua`), loaded at compile time. They run through
//! limiter-core's [`limiter_core::RedisHandle::eval_with`]: EVALSHA with the load fallback on
//! NOSCRIPT, on the same multiplexed (or cluster) connection and with the same error
//! classification as limiter-core's own scripts.

use limiter_core::scripts::LuaScript;

macro_rules! scripts {
    ($($(#[$doc:meta])* $ident:ident = $file:literal;)*) => {
        $(
            $(#[$doc])*
            pub(crate) static $ident: LuaScript =
                LuaScript::new($file, include_str!(concat!("../../../lua/", $file, ".lua")));
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
