//! Redis behind Sentinel: the master's address is asked of the sentinels
//! (`SENTINEL get-master-addr-by-name`) before the first call, every [`WATCH_EVERY`], and
//! whenever a call fails for availability (connection refused or dropped, timeout, `READONLY`
//! from a demoted master). The periodic question is needed: after `SENTINEL FAILOVER` the old
//! master, alive, keeps accepting writes until the sentinels get round to demoting it (seconds),
//! and callers that still write there would count apart from those on the new one.
//! When the answer changes the handle talks to the new master through a new connection manager
//! and counts a failover: replication is asynchronous, so writes acknowledged just before it may
//! be missing on the promoted replica, and callers that hold state in Redis re-register it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError};
use tokio::time::Instant;

use crate::LimiterError;
use crate::error::is_availability_error;

/// At most one round of questions to the sentinels per this interval: a dead master fails every
/// call, and the sentinels keep naming it until they have agreed on a successor.
const ASK_EVERY: Duration = Duration::from_millis(100);

/// How often the sentinels are asked while calls succeed.
pub(crate) const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The master in use.
#[derive(Clone)]
pub(crate) struct Master {
    host: String,
    port: u16,
    /// Multiplexed, reconnecting connection for calls.
    pub(crate) manager: ConnectionManager,
    /// For dedicated connections (pub/sub).
    pub(crate) client: redis::Client,
}

/// Where the sentinels are, and the master they currently name.
pub(crate) struct Sentinel {
    sentinels: Vec<redis::Client>,
    name: String,
    /// The configured URL's settings (database, credentials); the address is the master's.
    base: ConnectionInfo,
    manager_cfg: ConnectionManagerConfig,
    /// Bounds one question to one sentinel.
    ask_timeout: Duration,
    current: RwLock<Option<Master>>,
    /// One round of questions at a time.
    asking: tokio::sync::Mutex<Option<Instant>>,
    failovers: AtomicU64,
    /// The last sentinel that answered, asked first next time.
    first: Mutex<usize>,
}

impl Sentinel {
    /// Checks the addresses; connects to nothing.
    pub(crate) fn new(
        sentinels: &[String],
        name: &str,
        password: Option<&str>,
        url: &str,
        manager_cfg: ConnectionManagerConfig,
        ask_timeout: Duration,
    ) -> Result<Self, LimiterError> {
        let invalid = |what: String| LimiterError::InvalidArgument(what);
        if name.is_empty() {
            return Err(invalid("the Sentinel master name is empty".into()));
        }
        let sentinels = sentinels
            .iter()
            .map(|s| {
                let (host, port) = s
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                    .filter(|(h, _)| !h.is_empty())
                    .ok_or_else(|| invalid(format!("sentinel address {s:?} is not host:port")))?;
                match password {
                    // As a URL: the one way redis-rs takes a password for a plain address.
                    Some(p) => {
                        redis::Client::open(format!("redis://:{}@{host}:{port}", percent_encode(p)))
                    }
                    None => redis::Client::open(ConnectionAddr::Tcp(host.to_string(), port)),
                }
                .map_err(|_| invalid(format!("sentinel address {s:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let base = url
            .into_connection_info()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Sentinel {
            sentinels,
            name: name.to_string(),
            base,
            manager_cfg,
            ask_timeout,
            current: RwLock::new(None),
            asking: tokio::sync::Mutex::new(None),
            failovers: AtomicU64::new(0),
            first: Mutex::new(0),
        })
    }

    fn current(&self) -> Option<Master> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times the master changed since the first one was found.
    pub(crate) fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Acquire)
    }

    /// The master to call, asking the sentinels if none is known yet.
    pub(crate) async fn master(&self) -> Result<Master, LimiterError> {
        if let Some(m) = self.current() {
            return Ok(m);
        }
        self.ask(true).await;
        self.current().ok_or_else(|| {
            LimiterError::Unavailable(RedisError::from((
                ErrorKind::Io,
                "no sentinel named a master",
            )))
        })
    }

    /// A call failed: if Redis could not serve it, the master may have moved.
    pub(crate) async fn failed(&self, err: &RedisError) {
        if is_availability_error(err) {
            self.ask(false).await;
        }
    }

    /// Asks the sentinels for the master and switches to it if it moved, unless a round ended
    /// within [`ASK_EVERY`]. `wait`: wait for a round under way (no master known yet: its answer
    /// is needed) rather than skip.
    async fn ask(&self, wait: bool) {
        let mut last = if wait {
            self.asking.lock().await
        } else {
            match self.asking.try_lock() {
                Ok(g) => g,
                Err(_) => return,
            }
        };
        if last.is_some_and(|t| t.elapsed() < ASK_EVERY) {
            return;
        }
        let named = self.ask_sentinels().await;
        *last = Some(Instant::now());
        let Some((host, port)) = named else {
            tracing::warn!(master = %self.name, "no sentinel named the Redis master");
            return;
        };
        let old = self.current();
        if old
            .as_ref()
            .is_some_and(|m| m.host == host && m.port == port)
        {
            return;
        }
        let info = self
            .base
            .clone()
            .set_addr(ConnectionAddr::Tcp(host.clone(), port));
        let client = match redis::Client::open(info) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the sentinels named an unusable master address");
                return;
            }
        };
        let manager =
            match ConnectionManager::new_lazy_with_config(client.clone(), self.manager_cfg.clone())
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "connection to the new Redis master failed");
                    return;
                }
            };
        if let Some(old) = &old {
            tracing::warn!(
                from = %format!("{}:{}", old.host, old.port),
                to = %format!("{host}:{port}"),
                "Redis master moved (Sentinel failover)"
            );
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Master {
            host,
            port,
            manager,
            client,
        });
        if old.is_some() {
            self.failovers.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The first answer, starting with the sentinel that answered last time.
    async fn ask_sentinels(&self) -> Option<(String, u16)> {
        let n = self.sentinels.len();
        let first = *self.first.lock().unwrap_or_else(PoisonError::into_inner);
        for k in 0..n {
            let i = (first + k) % n;
            let asked = tokio::time::timeout(self.ask_timeout, async {
                let mut c = self.sentinels[i]
                    .get_multiplexed_async_connection()
                    .await
                    .ok()?;
                let named: Option<(String, String)> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.name)
                    .query_async(&mut c)
                    .await
                    .ok()?;
                let (host, port) = named?;
                Some((host, port.parse::<u16>().ok()?))
            })
            .await;
            if let Ok(Some(addr)) = asked {
                *self.first.lock().unwrap_or_else(PoisonError::into_inner) = i;
                return Some(addr);
            }
        }
        None
    }
}

/// Asks the sentinels every [`WATCH_EVERY`] while the handle lives.
pub(crate) fn watch(sentinel: &Arc<Sentinel>, runtime: &tokio::runtime::Handle) {
    let weak: Weak<Sentinel> = Arc::downgrade(sentinel);
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let Some(s) = weak.upgrade() else {
                return;
            };
            s.ask(false).await;
        }
    });
}

/// `s` with every byte but ASCII letters and digits as `%XX`, for a URL's password part.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
