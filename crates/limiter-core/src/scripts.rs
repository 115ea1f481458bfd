//! The Lua scripts, one per atomic operation, loaded from `lua/` at compile time.
//!
//! This crate's scripts form one Redis Functions library ([`library`]): loaded once with
//! `FUNCTION LOAD`, its shared admission helpers are compiled once instead of on every call, and
//! each script is called with FCALL. Where Functions are missing (Redis before 7, a proxy or ACL
//! refusing them) a script runs by EVALSHA instead (`redis_functions.rs` decides). On NOSCRIPT (a
//! fresh server, `SCRIPT FLUSH`, a failover to a replica that never saw the script) redis-rs loads
//! it and retries once, so callers never see NOSCRIPT. Scripts of other crates run by EVALSHA.

use std::fmt::Write as _;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// One Lua script: its name (for errors, spans and metrics) and its source.
#[derive(Debug)]
pub struct LuaScript {
    name: &'static str,
    source: &'static str,
    /// The body alone, for a member of this crate's Functions library (its helpers are defined
    /// once by the library); `None` for other scripts.
    body: Option<&'static str>,
    compiled: OnceLock<redis::Script>,
    /// Its function name in the library (`<name>_<library version>`).
    function: OnceLock<String>,
}

impl LuaScript {
    /// A script from its name and source (other crates define their own scripts with it and run
    /// them through [`crate::RedisHandle::eval`]).
    pub const fn new(name: &'static str, source: &'static str) -> Self {
        LuaScript {
            name,
            source,
            body: None,
            compiled: OnceLock::new(),
            function: OnceLock::new(),
        }
    }

    /// A member of this crate's Functions library: `source` for EVALSHA (helpers included),
    /// `body` without the helpers.
    const fn member(name: &'static str, source: &'static str, body: &'static str) -> Self {
        LuaScript {
            name,
            source,
            body: Some(body),
            compiled: OnceLock::new(),
            function: OnceLock::new(),
        }
    }

    /// Its name for FCALL, if it is a member of the library.
    pub(crate) fn function(&self) -> Option<&str> {
        self.body?;
        Some(
            self.function
                .get_or_init(|| format!("{}_{}", self.name, library().version)),
        )
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
            pub static $ident: LuaScript = LuaScript::member(
                $file,
                concat!(
                    $(include_str!(concat!("../../../lua/", $lib, ".lua")), "\n",)?
                    include_str!(concat!("../../../lua/", $file, ".lua"))
                ),
                include_str!(concat!("../../../lua/", $file, ".lua")),
            );
        )*
        /// Every script, for tooling that preloads or benchmarks them.
        pub static ALL: &[&LuaScript] = &[$(&$ident),*];
    };
}

/// The helpers every admission script uses, defined once at the top of the library.
const ADMISSION_LIB: &str = include_str!("../../../lua/admission_lib.lua");

/// This crate's scripts as one Redis Functions library.
#[derive(Debug)]
pub struct Library {
    /// Library name, `limiter_core_<version>`.
    pub name: String,
    /// A hash of every script's text: a different build's library lives beside this one under
    /// other names (function names are global in Redis), so replicas of two builds never
    /// replace each other's functions during a rolling deploy.
    pub version: String,
    /// The `FUNCTION LOAD` payload.
    pub code: String,
}

/// The library, built once.
pub fn library() -> &'static Library {
    static LIBRARY: OnceLock<Library> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let mut hash = Sha256::new();
        hash.update(ADMISSION_LIB);
        let members = ALL.iter().filter_map(|s| Some((s.name, s.body?)));
        for (name, body) in members.clone() {
            hash.update(name);
            hash.update(body);
        }
        let version = hex::encode(&hash.finalize()[..8]);
        let name = format!("limiter_core_{version}");
        let mut code = format!("#!lua name={name}\n{ADMISSION_LIB}\n");
        for (script, body) in members {
            // Each body sees its arguments under the names it uses as a script.
            let _ = write!(
                code,
                "redis.register_function('{script}_{version}', function(KEYS, ARGV)\n{body}\nend)\n"
            );
        }
        Library {
            name,
            version,
            code,
        }
    })
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
