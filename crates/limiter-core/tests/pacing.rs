//! Pacing across replicas. Its own test binary, so that no other test's load adds scheduling noise
//! to the 1 ms tolerance (cargo runs test binaries one after another).
#![allow(clippy::unwrap_used)]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use limiter_core::{Pace, Pacer};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_spaces_starts_fleet_wide() {
    let prefix = testkit::unique_prefix("pace");
    let rate = 3.0;
    let pacers: Vec<_> = (0..4)
        .map(|_| Pacer::new(common::replica(&prefix), "pubmed", rate, 1).unwrap())
        .collect();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // 4 replicas x 3 callers x 2 calls = 24 calls at 3/s: about 8 s of schedule.
    for (i, p) in pacers.iter().enumerate() {
        for _ in 0..3 {
            let p = p.clone();
            let starts = Arc::clone(&starts);
            tasks.push(tokio::spawn(async move {
                for _ in 0..2 {
                    let r = p.acquire(Duration::from_secs(30)).await.unwrap().unwrap();
                    // The observed start, taken after the wait returns, on one shared clock.
                    let now = Instant::now();
                    assert!(now >= r.start_at);
                    starts.lock().unwrap().push((now, i, r.start_at));
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut starts = starts.lock().unwrap().clone();
    starts.sort();
    assert_eq!(starts.len(), 24);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut by_deadline: Vec<_> = starts.iter().map(|s| s.2).collect();
    by_deadline.sort();
    let min_deadline_gap = by_deadline.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    let max_late = starts.iter().map(|s| s.0 - s.2).max().unwrap();
    eprintln!("min deadline gap {min_deadline_gap:?}, max lateness {max_late:?}");
    let min_gap = starts.windows(2).map(|w| w[1].0 - w[0].0).min().unwrap();
    assert!(
        min_gap + Duration::from_millis(1) >= interval,
        "two starts {min_gap:?} apart, interval {interval:?}"
    );
    // Evenly spaced, not bunched: the whole run takes about 23 intervals.
    let span = starts[23].0 - starts[0].0;
    assert!(span >= interval * 23 - Duration::from_millis(1));
    assert!(
        span < interval * 23 + Duration::from_millis(500),
        "{span:?}"
    );
}

#[tokio::test]
async fn try_acquire_allows_a_burst_then_refuses_without_booking() {
    let prefix = testkit::unique_prefix("pacetry");
    let p = Pacer::new(common::replica(&prefix), "s2", 10.0, 3).unwrap();
    for _ in 0..3 {
        assert!(matches!(p.try_acquire().await.unwrap(), Pace::Booked(_)));
    }
    let Pace::Refused { retry_after } = p.try_acquire().await.unwrap() else {
        panic!("burst exceeded")
    };
    assert!(retry_after <= p.interval() + Duration::from_millis(1));
    // Refusals book nothing: after the hinted wait the next call is allowed.
    for _ in 0..20 {
        assert!(matches!(
            p.try_acquire().await.unwrap(),
            Pace::Refused { .. }
        ));
    }
    tokio::time::sleep(retry_after + Duration::from_millis(2)).await;
    assert!(matches!(p.try_acquire().await.unwrap(), Pace::Booked(_)));
}

#[tokio::test]
async fn reserve_refuses_beyond_max_wait() {
    let prefix = testkit::unique_prefix("pacemax");
    let p = Pacer::new(common::replica(&prefix), "llm", 1.0, 1).unwrap();
    let Pace::Booked(first) = p.reserve(Duration::from_secs(5)).await.unwrap() else {
        panic!("first call refused")
    };
    assert_eq!(first.wait, Duration::ZERO);
    let Pace::Booked(second) = p.reserve(Duration::from_secs(5)).await.unwrap() else {
        panic!("second call refused")
    };
    assert!(second.wait > Duration::from_millis(900) && second.wait <= p.interval());
    // The third slot is ~2 s away: refused with a 0.5 s budget, and nothing booked.
    assert!(matches!(
        p.reserve(Duration::from_millis(500)).await.unwrap(),
        Pace::Refused { .. }
    ));
    let Pace::Booked(third) = p.reserve(Duration::from_secs(5)).await.unwrap() else {
        panic!("third call refused")
    };
    assert!(third.wait > Duration::from_millis(1900) && third.wait <= p.interval() * 2);
}

#[test]
fn invalid_rates_are_rejected() {
    let prefix = testkit::unique_prefix("pacebad");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(Pacer::new(common::replica(&prefix), "x", rate, 1).is_err());
    }
    assert!(Pacer::new(common::replica(&prefix), "x", 1.0, 0).is_err());
}

#[tokio::test]
async fn spacing_guard_widens_the_interval() {
    let prefix = testkit::unique_prefix("paceguard");
    let plain = Pacer::new(common::replica(&prefix), "pubmed", 4.0, 1).unwrap();
    // 250 ms plus the clock guard (5 ms at this rate).
    assert_eq!(plain.interval(), Duration::from_millis(255));
    let p = plain.with_spacing_guard(Duration::from_millis(25));
    assert_eq!(p.interval(), Duration::from_millis(280));
    let Pace::Booked(first) = p.reserve(Duration::from_secs(5)).await.unwrap() else {
        panic!("refused")
    };
    let Pace::Booked(second) = p.reserve(Duration::from_secs(5)).await.unwrap() else {
        panic!("refused")
    };
    assert_eq!(first.wait, Duration::ZERO);
    assert!(second.wait > Duration::from_millis(270) && second.wait <= Duration::from_millis(280));
}
