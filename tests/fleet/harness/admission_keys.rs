//! Reads the admission state straight from the test's own Redis (see lua/admission_lib.lua for
//! the layout), to follow what a dead replica left behind: its waiters and its leases.

use redis::AsyncCommands;

/// A view of one fleet's admission keys in a Redis the test owns (only one fleet uses it).
pub struct AdmissionKeys {
    conn: redis::aio::MultiplexedConnection,
    /// The key stem `T` (`T:lease:global`, `T:q2:0`, ...).
    stem: String,
}

impl std::fmt::Debug for AdmissionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionKeys")
            .field("stem", &self.stem)
            .finish()
    }
}

impl AdmissionKeys {
    /// Finds the stem from the global lease key, waiting (30 s at most) until it exists: once a
    /// slot was granted.
    pub async fn open(url: &str) -> AdmissionKeys {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let keys: Vec<String> = conn.keys("*:lease:global").await.unwrap();
            assert!(keys.len() <= 1, "one fleet in this Redis: {keys:?}");
            if let Some(k) = keys.first() {
                let stem = k.trim_end_matches(":lease:global").to_string();
                return AdmissionKeys { conn, stem };
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no lease was ever granted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Chat waiters (ids) with the replica each waits on.
    pub async fn chat_waiters(&mut self) -> Vec<(String, String)> {
        let ids: Vec<String> = self
            .conn
            .zrange(format!("{}:q2:0", self.stem), 0, -1)
            .await
            .unwrap();
        // A waiter's id starts with its replica's.
        ids.into_iter()
            .map(|id| {
                let replica = id.split('.').next().unwrap_or_default().to_string();
                (id, replica)
            })
            .collect()
    }

    /// Waiters in the queue of `class` (0 chat, 1 research, 2 export).
    pub async fn queued(&mut self, class: usize) -> usize {
        self.conn
            .zcard(format!("{}:q2:{class}", self.stem))
            .await
            .unwrap()
    }

    /// Replica ids in the fleet registry.
    pub async fn replicas(&mut self) -> Vec<String> {
        self.conn
            .zrange(format!("{}:replicas", self.stem), 0, -1)
            .await
            .unwrap()
    }

    /// What replica `id` left behind: its leases (global scope and holders), its waiters in any
    /// class, and its registry entry. (Its record of grants pushed to its waiters, `T:grants:<id>`,
    /// is bookkeeping, not slots: it expires by itself.)
    pub async fn left_by(&mut self, id: &str) -> Vec<String> {
        let mine = |l: &String| l.starts_with(&format!("{id}."));
        let mut left: Vec<String> = self.leases().await.into_iter().filter(mine).collect();
        let holders: Vec<String> = self
            .conn
            .hkeys(format!("{}:holders", self.stem))
            .await
            .unwrap();
        left.extend(
            holders
                .into_iter()
                .filter(mine)
                .map(|h| format!("holder {h}")),
        );
        for class in 0..3 {
            let ids: Vec<String> = self
                .conn
                .zrange(format!("{}:q2:{class}", self.stem), 0, -1)
                .await
                .unwrap();
            left.extend(
                ids.iter()
                    .filter(|w| mine(w))
                    .map(|w| format!("waiter {w}")),
            );
        }
        if self.replicas().await.iter().any(|r| r == id) {
            left.push("registry entry".into());
        }
        left
    }

    /// Lease ids in the global scope (each starts with its replica id and a dot).
    pub async fn leases(&mut self) -> Vec<String> {
        self.conn
            .zrange(format!("{}:lease:global", self.stem), 0, -1)
            .await
            .unwrap()
    }
}
