//! What the fault tests (partition, pause, failover, skew) share: a fleet kept at its cap of 20 by
//! 60 users before the fault, the wait for every replica to admit through Redis again after it,
//! and the check that the cap is reached, and no more, once the fleet is whole.

use std::time::Duration;

use std::time::Instant;

use super::{Fleet, Load, LoadOptions, client};

/// The fleet-wide cap the fault tests run against (the service's default).
pub const CAP: u64 = 20;

impl Fleet {
    /// Load from 60 users named `<name>-user-<n>` spread over every replica; returns once the
    /// LLM ran `CAP` calls at once (asserted) and `heartbeat` (the heartbeat TTL: three
    /// heartbeats) has passed, so every replica's heartbeat has read the fleet's peak at the cap.
    /// The simulator's statistics are reset when it returns: what it records from then on is the
    /// fault.
    pub async fn load_at_cap(&self, name: &str, heartbeat: Duration, llm_ms: u64) -> Load {
        let load = Load::start(
            &client(),
            LoadOptions {
                bases: self.bases(),
                users: (0..60).map(|n| format!("{name}-user-{n}")).collect(),
                ip_offset: 0,
                failover: false,
            },
        );
        self.sim.reset_stats().await;
        let before = self
            .sim
            .wait_llm_max(CAP, Duration::from_millis(10_000 + 2 * llm_ms))
            .await;
        assert_eq!(before, CAP, "the shared cap is reached before the fault");
        // A periodic read, not an event a test can observe: three heartbeats' time.
        tokio::time::sleep(heartbeat).await;
        self.sim.reset_stats().await;
        load
    }

    /// Every replica admitting through Redis (admission mode `shared`).
    pub async fn all_shared(&self) -> bool {
        for i in 0..self.replicas.len() {
            let Some(h) = self.health(i).await else {
                return false;
            };
            if h["components"]["admission"]["mode"] != "shared" {
                return false;
            }
        }
        true
    }

    /// How long after `since` every replica admitted through Redis again; `None` if not within
    /// `limit` of it.
    pub async fn wait_all_shared(&self, since: Instant, limit: Duration) -> Option<Duration> {
        while since.elapsed() < limit {
            if self.all_shared().await {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// The most LLM calls at once over the run so far, then, from a fresh count, whether the
    /// whole fleet reaches the cap again and the most it runs over another second:
    /// `(run max, reached, max after)`.
    pub async fn run_max_then_cap_again(&self) -> (u64, u64, u64) {
        let (_, run_max) = self.sim.llm_in_flight().await;
        self.sim.reset_stats().await;
        let again = self.sim.wait_llm_max(CAP, Duration::from_secs(15)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_, again_max) = self.sim.llm_in_flight().await;
        (run_max, again, again_max)
    }
}
