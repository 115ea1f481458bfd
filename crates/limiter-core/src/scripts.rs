//! The Lua scripts, one per atomic operation, loaded from `lua/` at compile time.
//!
//! Each is invoked by EVALSHA; on NOSCRIPT (a fresh server, `SCRIPT FLUSH`, a failover to a replica
//! that never saw the script) redis-rs loads it and retries once, so callers never see NOSCRIPT.

use std::sync::OnceLock;

/// One Lua script: its name (for errors, spans and metrics) and its source.
#[derive(Debug)]
pub struct LuaScript {
    name: &'static str,
    source: &'static str,
    compiled: OnceLock<redis::Script>,
}

impl LuaScript {
    /// A script from its name and source (other crates define their own scripts with it and run
    /// them through [`crate::RedisHandle::eval`]).
    pub const fn new(name: &'static str, source: &'static str) -> Self {
        LuaScript {
            name,
            source,
            compiled: OnceLock::new(),
        }
    }

    /// The script's name: its file name without `.lua`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Lua source, e.g. for `redis-benchmark EVALSHA` or `SCRIPT LOAD` by tooling.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The redis-rs script (its SHA-1 computed once).
    pub fn script(&self) -> &redis::Script {
        self.compiled
            .get_or_init(|| redis::Script::new(self.source))
    }

    /// SHA-1 of the source, as EVALSHA wants it.
    pub fn sha1(&self) -> &str {
        self.script().get_hash()
    }
}

macro_rules! scripts {
    ($($(#[$doc:meta])* $ident:ident = $file:literal $(after $lib:literal)?;)*) => {
        $(
            $(#[$doc])*
            pub static $ident: LuaScript = LuaScript::new(
                $file,
                concat!(
                    $(include_str!(concat!("../../../lua/", $lib, ".lua")), "\n",)?
                    include_str!(concat!("../../../lua/", $file, ".lua"))
                ),
            );
        )*
        /// Every script, for tooling that preloads or benchmarks them.
        pub static ALL: &[&LuaScript] = &[$(&$ident),*];
    };
}

scripts! {
    /// Exact sliding-window log (limits up to 1000).
    SLIDING_WINDOW = "sliding_window";
    /// Sliding-window counter, O(1) memory.
    SLIDING_WINDOW_COUNTER = "sliding_window_counter";
    /// GCRA pacing: book the next slot, or refuse if it is too far away.
    PACING_RESERVE = "pacing_reserve";
    /// Acquire a lease in several scopes at once.
    LEASE_ACQUIRE = "lease_acquire";
    /// Extend a live lease.
    LEASE_RENEW = "lease_renew";
    /// Release a lease.
    LEASE_RELEASE = "lease_release";
    /// Admission: take a slot or queue (the queue's scripts share `admission_lib.lua`).
    ADMISSION_ENTER = "admission_enter" after "admission_lib";
    /// Admission: release a slot and hand it to the next eligible waiter.
    ADMISSION_RELEASE = "admission_release" after "admission_lib";
    /// Admission: extend a granted lease.
    ADMISSION_RENEW = "admission_renew" after "admission_lib";
    /// Admission: a waiter leaves (timeout, cancel).
    ADMISSION_LEAVE = "admission_leave" after "admission_lib";
    /// Admission: a replica's heartbeat.
    ADMISSION_HEARTBEAT = "admission_heartbeat" after "admission_lib";
    /// Admission: admin reset of the queue.
    ADMISSION_RESET = "admission_reset" after "admission_lib";
    /// Admission: queue depth and slots in use.
    ADMISSION_STATS = "admission_stats" after "admission_lib";
    /// Admission: register leases granted locally during an outage.
    ADMISSION_ADOPT = "admission_adopt" after "admission_lib";
    /// Admission: reclaim leases of dead replicas.
    ADMISSION_RECLAIM = "admission_reclaim" after "admission_lib";
}
