use super::*;

#[test]
fn max_in_window_slides() {
    let s = EndpointStats {
        timestamps_ms: vec![0, 100, 999, 1000, 1500, 1999, 2000, 2001],
        ..Default::default()
    };
    // [0, 1000): 0, 100, 999; [1000, 2000): 1000, 1500, 1999; [1500, 2500): 1500, 1999, 2000, 2001.
    assert_eq!(s.max_in_window(1000), 4);
    assert_eq!(s.max_in_window(1), 1);
    assert_eq!(s.max_in_window(10_000), 8);
    assert_eq!(EndpointStats::default().max_in_window(1000), 0);
}

#[test]
fn reset_keeps_requests_in_flight() {
    let stats = Stats::new(3);
    let a = stats.begin(Endpoint::S2Search, None);
    let mut b = stats.begin(Endpoint::S2Search, Some("tp".into()));
    b.answered(200);
    drop(b);
    stats.reset();
    let snap = stats.snapshot().endpoint(Endpoint::S2Search);
    assert_eq!((snap.total, snap.in_flight, snap.max_in_flight), (0, 1, 1));
    drop(a);
    let snap = stats.snapshot().group(Group::S2);
    assert_eq!((snap.in_flight, snap.dropped), (0, 1));
}

#[test]
fn per_user_concurrency() {
    let stats = Stats::new(2);
    let a1 = stats.begin_user("a");
    let a2 = stats.begin_user("a");
    drop(a1);
    let _a3 = stats.begin_user("a");
    let b = stats.begin_user("b");
    // A third distinct user is beyond the capacity of 2.
    drop(stats.begin_user("c"));
    let s = stats.snapshot();
    assert_eq!(
        s.llm_users["a"],
        UserStats {
            total: 3,
            in_flight: 2,
            max_in_flight: 2
        }
    );
    assert_eq!(s.llm_users["b"].in_flight, 1);
    assert!(!s.llm_users.contains_key("c"));
    assert_eq!(s.llm_users_untracked, 1);
    drop((a2, b));
    stats.reset();
    let s = stats.snapshot();
    assert_eq!(
        s.llm_users["a"],
        UserStats {
            total: 0,
            in_flight: 1,
            max_in_flight: 1
        }
    );
    assert!(!s.llm_users.contains_key("b"));
}
