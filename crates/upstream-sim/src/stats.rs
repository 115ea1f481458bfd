//! What reached the simulator: per endpoint and per group, requests in total and by status,
//! requests in flight and the most ever in flight at once, arrival times (bounded ring buffer),
//! plus the `user` fields and `traceparent` headers received (bounded), per LLM end user
//! (`user` field) the requests in flight and the most ever in flight at once, and a log of LLM
//! calls with their start and end ([`crate::calls`]).
//!
//! This is the independent observer that tests of pacing and concurrency limits assert on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::calls::{CallLog, LlmCall};
use crate::settings::Group;

/// Every route the simulator counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    PubmedEsearch,
    PubmedEsummary,
    PubmedEfetch,
    S2Search,
    S2Paper,
    LlmChat,
    LlmModels,
}

impl Endpoint {
    /// Key in [`StatsSnapshot::endpoints`].
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::PubmedEsearch => "pubmed.esearch",
            Endpoint::PubmedEsummary => "pubmed.esummary",
            Endpoint::PubmedEfetch => "pubmed.efetch",
            Endpoint::S2Search => "s2.search",
            Endpoint::S2Paper => "s2.paper",
            Endpoint::LlmChat => "llm.chat",
            Endpoint::LlmModels => "llm.models",
        }
    }

    pub fn group(self) -> Group {
        match self {
            Endpoint::PubmedEsearch | Endpoint::PubmedEsummary | Endpoint::PubmedEfetch => {
                Group::Pubmed
            }
            Endpoint::S2Search | Endpoint::S2Paper => Group::S2,
            Endpoint::LlmChat | Endpoint::LlmModels => Group::Llm,
        }
    }
}

/// Counters of one endpoint or group, as returned by `GET /stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// Requests that arrived (since the last reset).
    pub total: u64,
    /// Finished requests by HTTP status ("200", "429", ...).
    pub by_status: BTreeMap<String, u64>,
    /// Requests abandoned before an answer (the client went away, e.g. during a hang).
    pub dropped: u64,
    /// Requests being served now (streams count until their last chunk).
    pub in_flight: u64,
    /// Largest `in_flight` seen since the last reset.
    pub max_in_flight: u64,
    /// Arrival times in ms since the simulator started, oldest first (last N only).
    pub timestamps_ms: Vec<u64>,
}

impl EndpointStats {
    /// Finished requests with this status.
    pub fn status(&self, status: u16) -> u64 {
        self.by_status
            .get(&status.to_string())
            .copied()
            .unwrap_or(0)
    }

    /// Largest number of arrivals within any window of `window_ms` (half-open `[t, t+window)`),
    /// e.g. `max_in_window(1000) <= 3` checks "at most 3 requests in any second".
    pub fn max_in_window(&self, window_ms: u64) -> usize {
        let ts = &self.timestamps_ms;
        let mut best = 0;
        let mut start = 0;
        for end in 0..ts.len() {
            while ts[end] >= ts[start].saturating_add(window_ms.max(1)) {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }
}

/// A `user` field received by the LLM endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedUser {
    pub at_ms: u64,
    pub user: String,
}

/// Concurrency of one end user at the LLM, keyed by the request's `user` field. A request counts
/// from the moment its body was parsed until its answer (or stream) ended; the injected fault
/// latency of the `llm` group comes before that and is not counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserStats {
    /// Requests of this user that arrived (since the last reset).
    pub total: u64,
    /// Requests of this user being answered now.
    pub in_flight: u64,
    /// Largest `in_flight` seen since the last reset.
    pub max_in_flight: u64,
}

/// A `traceparent` header received by any endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedTrace {
    pub at_ms: u64,
    pub endpoint: String,
    pub traceparent: String,
}

/// Body of `GET /stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// ms since the simulator started.
    pub uptime_ms: u64,
    /// Per group: "pubmed", "s2", "llm" (every group is present, possibly all zero).
    pub groups: BTreeMap<String, EndpointStats>,
    /// Per endpoint: "pubmed.esearch", "pubmed.esummary", "pubmed.efetch", "s2.search",
    /// "s2.paper", "llm.chat", "llm.models" (every endpoint is present).
    pub endpoints: BTreeMap<String, EndpointStats>,
    /// `user` fields of LLM requests, oldest first (last N only).
    pub users: Vec<RecordedUser>,
    /// `traceparent` headers, oldest first (last N only).
    pub traceparents: Vec<RecordedTrace>,
    /// Per LLM end user (`user` field): requests and concurrency. At most N users are tracked;
    /// requests of users beyond that are counted in `llm_users_untracked`.
    #[serde(default)]
    pub llm_users: BTreeMap<String, UserStats>,
    /// LLM requests whose user could not be tracked (more than N distinct users).
    #[serde(default)]
    pub llm_users_untracked: u64,
    /// Every LLM call (last N only, oldest first): user, start and end. See [`crate::calls`].
    #[serde(default)]
    pub llm_calls: Vec<LlmCall>,
}

impl StatsSnapshot {
    /// Counters of a group; all zero when unknown.
    pub fn group(&self, group: Group) -> EndpointStats {
        self.groups.get(group.as_str()).cloned().unwrap_or_default()
    }

    /// Counters of an endpoint; all zero when unknown.
    pub fn endpoint(&self, endpoint: Endpoint) -> EndpointStats {
        self.endpoints
            .get(endpoint.name())
            .cloned()
            .unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct Counter {
    total: u64,
    by_status: BTreeMap<u16, u64>,
    dropped: u64,
    in_flight: u64,
    max_in_flight: u64,
    timestamps: VecDeque<u64>,
}

impl Counter {
    fn arrive(&mut self, at_ms: u64, capacity: usize) {
        self.total += 1;
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
        if self.timestamps.len() >= capacity {
            self.timestamps.pop_front();
        }
        self.timestamps.push_back(at_ms);
    }

    fn reset(&mut self) {
        // In-flight requests still finish later and decrement, so their count survives a reset.
        *self = Counter {
            in_flight: self.in_flight,
            max_in_flight: self.in_flight,
            ..Counter::default()
        };
    }

    fn snapshot(&self) -> EndpointStats {
        EndpointStats {
            total: self.total,
            by_status: self
                .by_status
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            dropped: self.dropped,
            in_flight: self.in_flight,
            max_in_flight: self.max_in_flight,
            timestamps_ms: self.timestamps.iter().copied().collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: BTreeMap<Endpoint, Counter>,
    groups: BTreeMap<Group, Counter>,
    users: VecDeque<RecordedUser>,
    traceparents: VecDeque<RecordedTrace>,
    llm_users: BTreeMap<String, UserStats>,
    llm_users_untracked: u64,
    llm_calls: CallLog,
}

impl Inner {
    /// Applies `f` to the endpoint's counter and to its group's.
    fn for_both(&mut self, endpoint: Endpoint, f: impl Fn(&mut Counter)) {
        f(self.endpoints.entry(endpoint).or_default());
        f(self.groups.entry(endpoint.group()).or_default());
    }
}

/// The live counters; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Stats {
    start: Instant,
    capacity: usize,
    inner: Arc<Mutex<Inner>>,
}

impl Stats {
    /// `capacity` bounds each ring buffer (timestamps per endpoint, users, traceparents).
    pub fn new(capacity: usize) -> Stats {
        Stats {
            start: Instant::now(),
            capacity: capacity.max(1),
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; the counters are still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts an arrival; the returned guard counts the finish (or the drop, if never finished).
    pub fn begin(&self, endpoint: Endpoint, traceparent: Option<String>) -> InFlight {
        let mut inner = self.lock();
        // Read the clock under the lock so timestamps are recorded in order.
        let at = self.now_ms();
        inner.for_both(endpoint, |c| c.arrive(at, self.capacity));
        if let Some(tp) = traceparent {
            push_bounded(
                &mut inner.traceparents,
                RecordedTrace {
                    at_ms: at,
                    endpoint: endpoint.name().to_string(),
                    traceparent: tp,
                },
                self.capacity,
            );
        }
        InFlight {
            stats: self.clone(),
            endpoint,
            status: None,
        }
    }

    pub fn record_user(&self, user: &str) {
        let at = self.now_ms();
        let mut inner = self.lock();
        push_bounded(
            &mut inner.users,
            RecordedUser {
                at_ms: at,
                user: user.to_string(),
            },
            self.capacity,
        );
    }

    /// Counts an LLM request of `user` as in flight until the returned guard drops, and logs the
    /// call.
    pub fn begin_user(&self, user: &str) -> UserInFlight {
        let mut inner = self.lock();
        let at = self.now_ms();
        let call = inner.llm_calls.start(user, at, self.capacity);
        let tracked = inner.llm_users.len() < self.capacity || inner.llm_users.contains_key(user);
        if !tracked {
            inner.llm_users_untracked += 1;
            return UserInFlight {
                stats: self.clone(),
                user: None,
                call,
            };
        }
        let u = inner.llm_users.entry(user.to_string()).or_default();
        u.total += 1;
        u.in_flight += 1;
        u.max_in_flight = u.max_in_flight.max(u.in_flight);
        UserInFlight {
            stats: self.clone(),
            user: Some(user.to_string()),
            call,
        }
    }

    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.endpoints.values_mut().for_each(Counter::reset);
        inner.groups.values_mut().for_each(Counter::reset);
        inner.users.clear();
        inner.traceparents.clear();
        // As for the counters: users with requests still in flight keep them.
        inner.llm_users.retain(|_, u| u.in_flight > 0);
        for u in inner.llm_users.values_mut() {
            *u = UserStats {
                total: 0,
                in_flight: u.in_flight,
                max_in_flight: u.in_flight,
            };
        }
        inner.llm_users_untracked = 0;
        inner.llm_calls.reset();
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let uptime_ms = self.now_ms();
        let inner = self.lock();
        let groups = Group::ALL
            .into_iter()
            .map(|g| {
                (
                    g.as_str().to_string(),
                    inner
                        .groups
                        .get(&g)
                        .map(Counter::snapshot)
                        .unwrap_or_default(),
                )
            })
            .collect();
        let endpoints = ALL_ENDPOINTS
            .into_iter()
            .map(|e| {
                (
                    e.name().to_string(),
                    inner
                        .endpoints
                        .get(&e)
                        .map(Counter::snapshot)
                        .unwrap_or_default(),
                )
            })
            .collect();
        StatsSnapshot {
            uptime_ms,
            groups,
            endpoints,
            users: inner.users.iter().cloned().collect(),
            traceparents: inner.traceparents.iter().cloned().collect(),
            llm_users: inner.llm_users.clone(),
            llm_users_untracked: inner.llm_users_untracked,
            llm_calls: inner.llm_calls.snapshot(),
        }
    }
}

const ALL_ENDPOINTS: [Endpoint; 7] = [
    Endpoint::PubmedEsearch,
    Endpoint::PubmedEsummary,
    Endpoint::PubmedEfetch,
    Endpoint::S2Search,
    Endpoint::S2Paper,
    Endpoint::LlmChat,
    Endpoint::LlmModels,
];

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, capacity: usize) {
    if q.len() >= capacity {
        q.pop_front();
    }
    q.push_back(item);
}

/// One request being served; dropping it ends the request in the counters.
#[derive(Debug)]
pub struct InFlight {
    stats: Stats,
    endpoint: Endpoint,
    status: Option<u16>,
}

impl InFlight {
    /// Records the answer's status now (the request may stay in flight, e.g. while streaming).
    pub fn answered(&mut self, status: u16) {
        if self.status.is_some() {
            return;
        }
        self.status = Some(status);
        let mut inner = self.stats.lock();
        inner.for_both(self.endpoint, |c| {
            *c.by_status.entry(status).or_default() += 1
        });
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let answered = self.status.is_some();
        let mut inner = self.stats.lock();
        inner.for_both(self.endpoint, |c| {
            c.in_flight = c.in_flight.saturating_sub(1);
            if !answered {
                c.dropped += 1;
            }
        });
    }
}

/// One LLM request of a user being answered; dropping it ends it in the per-user counters.
#[derive(Debug)]
pub struct UserInFlight {
    stats: Stats,
    /// `None` when the user was not tracked.
    user: Option<String>,
    /// Its number in the call log.
    call: u64,
}

impl Drop for UserInFlight {
    fn drop(&mut self) {
        let at = self.stats.now_ms();
        let mut inner = self.stats.lock();
        inner.llm_calls.end(self.call, at);
        let Some(user) = self.user.take() else {
            return;
        };
        if let Some(u) = inner.llm_users.get_mut(&user) {
            u.in_flight = u.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests;
