//! Makes the health report: every component probed at once, each within a bound.
//!
//! Score: 100 minus a penalty per problem (PostgreSQL down 50, Redis down 25, queue over 90 % of
//! the global cap 15 (70 %: 5), error rate over 10 % 20 (5 %: 10), each open breaker 10 (max 30),
//! pool nearly exhausted 10, a latency over 500 ms 5). Status: PostgreSQL down → `unhealthy`;
//! otherwise `healthy` from 80, `degraded` from 50 (and whenever Redis is down), else `unhealthy`.

use std::future::Future;
use std::time::Duration;

use super::report::{
    BreakersComponent, Components, HealthReport, HealthStatus, PostgresComponent, RedisComponent,
};
use crate::state::AppState;

const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

async fn within<T, E: std::fmt::Display>(f: impl Future<Output = Result<T, E>>) -> Option<T> {
    match tokio::time::timeout(PROBE_TIMEOUT, f).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health probe failed");
            None
        }
        Err(_) => None,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

/// Builds the full report (admin view); the public view strips it.
pub async fn report(state: &AppState) -> HealthReport {
    let redis_ping = within(state.redis().ping());
    let pg_ping = within(state.quota().ping());
    let gate = within(state.gate().stats());
    let load = within(state.quota().check_system_load());
    let breakers = async {
        match state.breakers() {
            Some(b) => (true, within(b.states()).await.unwrap_or_default()),
            None => (false, Vec::new()),
        }
    };
    let fleet = within(crate::admin::fleet_status::read(state));
    let (redis_ping, pg_ping, gate, load, (wired, breaker_states), fleet) =
        tokio::join!(redis_ping, pg_ping, gate, load, breakers, fleet);
    let pool = state.quota().pool();
    let pool_size = pool.size();
    let pool_idle = u32::try_from(pool.num_idle()).unwrap_or(0);
    let pool_max = state.config().database.max_connections;
    let rate_limit = state.ip_stats().snapshot();
    let errors = state.request_stats().snapshot();

    let mut score: i32 = 100;
    let mut recs = Vec::new();
    if pg_ping.is_none() {
        score -= 50;
        recs.push("PostgreSQL is unreachable: chat answers 503 and no quota is spent; check the database and FLEETGATE_DATABASE_URL.".to_string());
    }
    if redis_ping.is_none() {
        score -= 25;
        recs.push(format!(
            "Redis is unreachable: per-IP windows fail {}, admission {}; check Redis.",
            if state.config().limits.fail_open {
                "open"
            } else {
                "closed"
            },
            if state.config().admission.local_fallback {
                "uses this replica's local share of the caps"
            } else {
                "refuses requests"
            }
        ));
    }
    for (lat, name) in [(redis_ping, "Redis"), (pg_ping, "PostgreSQL")] {
        if lat.is_some_and(|d| d > Duration::from_millis(500)) {
            score -= 5;
            recs.push(format!("{name} latency is high (over 500 ms)."));
        }
    }
    if let Some(g) = &gate {
        let use_pct = g.slots_in_use as f64 / f64::from(g.global_cap.max(1));
        if use_pct >= 0.9 {
            score -= 15;
            recs.push("Nearly all global slots are in use: consider raising FLEETGATE_MAX_CONCURRENT_GLOBAL if upstreams allow it.".into());
        } else if use_pct >= 0.7 {
            score -= 5;
        }
        let waiting = g.waiting.chat + g.waiting.research + g.waiting.export;
        if waiting > 50 {
            recs.push(format!("{waiting} requests are waiting for a slot."));
        }
    }
    if errors.error_rate > 0.10 {
        score -= 20;
        recs.push(
            "More than 10 % of responses are server errors: check upstreams and logs.".into(),
        );
    } else if errors.error_rate > 0.05 {
        score -= 10;
        recs.push("More than 5 % of responses are server errors.".into());
    }
    let open = breaker_states
        .iter()
        .filter(|b| b.state != "closed")
        .count();
    if open > 0 {
        score -= i32::try_from(open.min(3) * 10).unwrap_or(30);
        recs.push(format!(
            "{open} circuit breaker(s) not closed: an upstream is failing."
        ));
    }
    if pool_max > 0 && pool_size >= pool_max && pool_idle == 0 {
        score -= 10;
        recs.push("The database pool is exhausted: raise FLEETGATE_DATABASE_MAX_CONNECTIONS or look for slow queries (emergency-cleanup ends idle-in-transaction sessions).".into());
    }
    for m in load.iter().flatten() {
        if m.status != "ok" {
            recs.push(format!("database {}: {} ({})", m.metric, m.value, m.status));
        }
    }
    let score = u8::try_from(score.clamp(0, 100)).unwrap_or(0);
    let status = if pg_ping.is_none() || score < 50 {
        HealthStatus::Unhealthy
    } else if redis_ping.is_none() || score < 80 {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    };
    HealthReport {
        status,
        score,
        components: Some(Components {
            redis: RedisComponent {
                status: if redis_ping.is_some() { "up" } else { "down" }.into(),
                latency_ms: redis_ping.map(ms),
                mode: if redis_ping.is_some() && !state.gate().degraded() {
                    "shared"
                } else {
                    "degraded"
                }
                .into(),
                topology: state.redis().topology().into(),
            },
            postgres: PostgresComponent {
                status: if pg_ping.is_some() { "up" } else { "down" }.into(),
                latency_ms: pg_ping.map(ms),
                pool_size,
                pool_idle,
                pool_in_use: pool_size.saturating_sub(pool_idle),
                pool_max,
                load: load.unwrap_or_default(),
            },
            queue: gate,
            admission: state.gate().local(),
            fleet,
            breakers: BreakersComponent {
                wired,
                states: breaker_states,
            },
            rate_limit,
            errors,
        }),
        recommendations: Some(recs),
    }
}
