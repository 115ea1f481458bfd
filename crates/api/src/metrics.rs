//! Prometheus metrics of this process, served by `GET /metrics` (OpenMetrics text, which
//! Prometheus scrapes natively).
//!
//! One registry per process, like a replica is one process: counters and histograms are
//! recorded where things happen; gauges that describe shared state (queue depth, slots, breaker
//! states, degraded mode, health score) are read when scraped. Every label value comes from a
//! closed set (route templates, classes, services, script names, outcomes): no user id or IP
//! is ever a label.

use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `route`, `method`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route template (`/api/chat`), or `unmatched`.
    pub route: String,
    /// HTTP method.
    pub method: &'static str,
    /// Status code.
    pub status: u16,
}

/// `route`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template.
    pub route: String,
}

/// A limiter decision: `limiter` (`ip_window`, `admission`, `quota`), `policy` (route class),
/// `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Which limiter.
    pub limiter: &'static str,
    /// Which policy of it.
    pub policy: &'static str,
    /// What it decided.
    pub outcome: &'static str,
}

/// `class`, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Priority class.
    pub class: &'static str,
    /// `granted`, `timeout`, `full`, `user_queue_full`, `reset`, `shutting_down`, `unavailable`,
    /// `cancelled`.
    pub outcome: &'static str,
}

/// `class`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// Priority class.
    pub class: &'static str,
}

/// `scope`: `global` (fleet-wide) or `replica`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    /// Which count.
    pub scope: &'static str,
}

/// `service`, `state`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerStateLabels {
    /// Upstream service.
    pub service: String,
    /// `closed`, `open`, `half_open`.
    pub state: &'static str,
}

/// `service`, `to`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// Upstream service.
    pub service: String,
    /// State entered.
    pub to: &'static str,
}

/// `service`, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Upstream service.
    pub service: &'static str,
    /// `success`, `rejected` (4xx), `failure` (5xx, 429), `transport`, `timeout`.
    pub outcome: &'static str,
}

/// `service`, `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// Upstream service.
    pub service: String,
    /// `breaker_open`, `paced`, `timeout`, `failure`, `rejected`.
    pub kind: &'static str,
}

/// `script`, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScriptLabels {
    /// Lua script name.
    pub script: &'static str,
    /// `ok`, `unavailable`, `error`.
    pub outcome: &'static str,
}

fn latency_buckets() -> Histogram {
    // 0.5 ms .. ~65 s: Redis scripts sit at the bottom, queue waits and LLM calls at the top.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 18,
    ))
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Limiter decisions by limiter, policy and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
    queue_wait: Family<QueueLabels, Histogram, fn() -> Histogram>,
    queue_depth: Family<ClassLabels, Gauge>,
    slots_in_use: Family<ScopeLabels, Gauge>,
    slots_capacity: Gauge,
    live_replicas: Gauge,
    breaker_state: Family<BreakerStateLabels, Gauge>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    upstream_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    script_duration: Family<ScriptLabels, Histogram, fn() -> Histogram>,
    degraded: Gauge,
    health_score: Gauge,
    in_flight: Gauge,
    quota_rejections: Counter,
    quota_refunds: Counter,
    /// Serialises scrapes: the scrape-time updates of gauges and transition counters are
    /// read-modify-write.
    scrape: Mutex<()>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The Redis script observer (installed by [`crate::AppState`]).
pub fn observe_script(script: &'static str, took: Duration, outcome: limiter_core::ScriptOutcome) {
    get().script(script, outcome.as_str(), took);
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("fleetgate");
        let m = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_buckets),
            decisions: Family::default(),
            queue_wait: Family::new_with_constructor(latency_buckets),
            queue_depth: Family::default(),
            slots_in_use: Family::default(),
            slots_capacity: Gauge::default(),
            live_replicas: Gauge::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_buckets),
            upstream_errors: Family::default(),
            script_duration: Family::new_with_constructor(latency_buckets),
            degraded: Gauge::default(),
            health_score: Gauge::default(),
            in_flight: Gauge::default(),
            quota_rejections: Counter::default(),
            quota_refunds: Counter::default(),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        r.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to the response head, by route template",
            m.http_duration.clone(),
        );
        r.register(
            "http_requests_in_flight",
            "Requests running on this replica",
            m.in_flight.clone(),
        );
        r.register(
            "limiter_decisions",
            "Limiter decisions by limiter (ip_window, admission, quota), policy and outcome",
            m.decisions.clone(),
        );
        r.register(
            "queue_wait_seconds",
            "Time spent waiting for a slot, by class and outcome",
            m.queue_wait.clone(),
        );
        r.register(
            "queue_depth",
            "Waiters in the fleet-wide queue, by class",
            m.queue_depth.clone(),
        );
        r.register(
            "slots_in_use",
            "Concurrency slots held: fleet-wide (global) and by this replica (replica)",
            m.slots_in_use.clone(),
        );
        r.register(
            "slots_capacity",
            "The fleet-wide concurrency cap",
            m.slots_capacity.clone(),
        );
        r.register(
            "live_replicas",
            "Replicas with a live heartbeat in the fleet registry",
            m.live_replicas.clone(),
        );
        r.register(
            "breaker_state",
            "Circuit breaker state per upstream service (1 for the current state)",
            m.breaker_state.clone(),
        );
        r.register(
            "breaker_transitions",
            "Breaker state changes seen by this replica, by service and state entered",
            m.breaker_transitions.clone(),
        );
        r.register(
            "upstream_request_duration_seconds",
            "Upstream HTTP attempts, by service and outcome",
            m.upstream_duration.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream calls that failed, by service and kind",
            m.upstream_errors.clone(),
        );
        r.register(
            "redis_script_duration_seconds",
            "Redis Lua script calls, by script and outcome",
            m.script_duration.clone(),
        );
        r.register(
            "degraded",
            "1 while this replica enforces local shares because Redis is unreachable",
            m.degraded.clone(),
        );
        r.register(
            "health_score",
            "The health score (0-100) of GET /api/system-health",
            m.health_score.clone(),
        );
        r.register(
            "quota_rejections",
            "Requests refused because the daily quota was exhausted",
            m.quota_rejections.clone(),
        );
        r.register(
            "quota_refunds",
            "Spent queries given back (failures that were not the user's doing)",
            m.quota_refunds.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// A response went out.
    pub fn observe_http(&self, route: &str, method: &'static str, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method,
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A limiter decided.
    pub fn decision(&self, limiter: &'static str, policy: &'static str, outcome: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                limiter,
                policy,
                outcome,
            })
            .inc();
    }

    /// A wait for a slot ended.
    pub fn queue_waited(&self, class: &'static str, outcome: &'static str, waited: Duration) {
        self.queue_wait
            .get_or_create(&QueueLabels { class, outcome })
            .observe(waited.as_secs_f64());
    }

    /// One upstream HTTP attempt.
    pub fn upstream_attempt(&self, service: &'static str, outcome: &'static str, took: Duration) {
        self.upstream_duration
            .get_or_create(&UpstreamLabels { service, outcome })
            .observe(took.as_secs_f64());
    }

    /// An upstream call failed as a whole (after its retries).
    pub fn upstream_error(&self, service: &str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                service: service.to_owned(),
                kind,
            })
            .inc();
    }

    /// One Redis script call.
    pub fn script(&self, script: &'static str, outcome: &'static str, took: Duration) {
        self.script_duration
            .get_or_create(&ScriptLabels { script, outcome })
            .observe(took.as_secs_f64());
    }

    /// The daily quota refused a request.
    pub fn quota_rejected(&self) {
        self.quota_rejections.inc();
    }

    /// A spent query was given back.
    pub fn quota_refunded(&self) {
        self.quota_refunds.inc();
    }

    /// Renders the registry after `update` has set the scrape-time values.
    pub fn encode(&self, update: impl FnOnce(&ScrapeView<'_>)) -> String {
        let _one = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        update(&ScrapeView { m: self });
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Setters for the values read at scrape time.
#[derive(Debug)]
pub struct ScrapeView<'a> {
    m: &'a Metrics,
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl ScrapeView<'_> {
    /// Fleet-wide waiters of a class.
    pub fn queue_depth(&self, class: &'static str, n: u64) {
        self.m
            .queue_depth
            .get_or_create(&ClassLabels { class })
            .set(gauge(n));
    }
    /// Slots held fleet-wide and by this replica, and the cap.
    pub fn slots(&self, global: Option<u64>, replica: u64, capacity: u32) {
        if let Some(g) = global {
            self.m
                .slots_in_use
                .get_or_create(&ScopeLabels { scope: "global" })
                .set(gauge(g));
        }
        self.m
            .slots_in_use
            .get_or_create(&ScopeLabels { scope: "replica" })
            .set(gauge(replica));
        self.m.slots_capacity.set(i64::from(capacity));
    }
    /// Live replicas in the registry.
    pub fn live_replicas(&self, n: u64) {
        self.m.live_replicas.set(gauge(n));
    }
    /// One breaker's state (`closed`, `open`, `half_open`).
    pub fn breaker(&self, service: &str, state: &'static str) {
        for s in ["closed", "open", "half_open"] {
            self.m
                .breaker_state
                .get_or_create(&BreakerStateLabels {
                    service: service.to_owned(),
                    state: s,
                })
                .set(i64::from(s == state));
        }
    }
    /// Transitions into `to` seen so far (a monotonic total kept by the breakers).
    pub fn breaker_transitions(&self, service: &str, to: &'static str, total: u64) {
        let c = self.m.breaker_transitions.get_or_create(&TransitionLabels {
            service: service.to_owned(),
            to,
        });
        let seen = c.get();
        if total > seen {
            c.inc_by(total - seen);
        }
    }
    /// Degraded mode.
    pub fn degraded(&self, on: bool) {
        self.m.degraded.set(i64::from(on));
    }
    /// The health score.
    pub fn health_score(&self, score: u8) {
        self.m.health_score.set(i64::from(score));
    }
    /// Requests running here.
    pub fn in_flight(&self, n: u64) {
        self.m.in_flight.set(gauge(n));
    }
}
