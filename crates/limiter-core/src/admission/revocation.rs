//! [`Revocation`]: when a running request must stop because its slot may no longer be counted in
//! Redis.
//!
//! Why a running request is stopped at all. A replica cut off from Redis (a partition, a pause)
//! cannot renew its leases; once they expire there, the other replicas hand those slots on. If
//! its requests ran on, the fleet would run more than the global cap: admission alone cannot keep
//! the cap, only the holders stopping can. Under [`OutagePolicy::Safety`] a permit is therefore
//! revoked at the last instant its slot is surely still counted in Redis, measured on this
//! replica's clock with a margin for drift (see `lease.rs`): a shared permit when its lease is
//! lost, a permit granted locally during an outage when the replica's own contact with Redis is
//! too old to vouch for it. Under [`OutagePolicy::Availability`] nothing is revoked: the request
//! runs to its end, and the loss is only reported.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::config::OutagePolicy;
use super::inner::Inner;
use super::mode::Mode;

/// A permit's revocation signal: owned, so a response body can wait on it after the permit moved.
///
/// ```no_run
/// # async fn run(permit: limiter_core::Permit) {
/// let revoked = permit.revocation();
/// tokio::select! {
///     () = revoked.revoked() => { /* stop: the slot may be someone else's by now */ }
///     () = async { /* the request's work */ } => {}
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Revocation {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Availability policy, or a permit nothing can revoke.
    Never,
    /// A shared permit: its lease's loss.
    Lease(watch::Receiver<bool>),
    /// A local permit: the replica's contact with Redis while it is degraded.
    Local { inner: Weak<Inner>, ttl: Duration },
}

/// Re-checked at least this often while the replica's contact is stale but it is no longer
/// degraded (its recovery registering the local permits in Redis).
const RECHECK: Duration = Duration::from_millis(100);

impl Revocation {
    pub(crate) fn never() -> Self {
        Revocation { kind: Kind::Never }
    }

    pub(crate) fn lease(policy: OutagePolicy, lost: watch::Receiver<bool>) -> Self {
        match policy {
            OutagePolicy::Safety => Revocation {
                kind: Kind::Lease(lost),
            },
            OutagePolicy::Availability => Revocation::never(),
        }
    }

    pub(crate) fn local(policy: OutagePolicy, inner: Weak<Inner>, ttl: Duration) -> Self {
        match policy {
            OutagePolicy::Safety => Revocation {
                kind: Kind::Local { inner, ttl },
            },
            OutagePolicy::Availability => Revocation::never(),
        }
    }

    /// Resolves when the permit is revoked: the request holding it should stop now. Never
    /// resolves under the availability policy.
    pub async fn revoked(self) {
        match self.kind {
            Kind::Never => std::future::pending().await,
            Kind::Lease(mut lost) => {
                // An error: the lease was released (the permit ended) without loss.
                if lost.wait_for(|l| *l).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            Kind::Local { inner, ttl } => loop {
                let (until, degraded) = match inner.upgrade() {
                    Some(i) => (i.outage.counted_until(ttl), i.mode() == Mode::Degraded),
                    None => std::future::pending().await,
                };
                // Never in contact with Redis: nothing of this replica is counted there, the
                // local limit alone bounds it.
                let Some(until) = until else {
                    std::future::pending::<()>().await;
                    return;
                };
                let now = Instant::now();
                if now >= until && degraded {
                    return;
                }
                tokio::time::sleep_until(until.max(now + RECHECK)).await;
            },
        }
    }
}
