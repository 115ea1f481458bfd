//! The model checked exhaustively at small bounds (2 replicas, caps 1-2, a few clients): every
//! interleaving of requests, hand-offs, heartbeats, time passing and the faults allowed.
#![allow(clippy::unwrap_used)]

use admission_model::system::{ClientSpec, Faults, System};
use admission_model::{Flaw, Params};
use stateright::{Checker, Model};

fn params(user_cap: usize, global_cap: usize, flaw: Option<Flaw>) -> Params {
    Params {
        user_cap,
        global_cap,
        classes: 2,
        max_queue: 4,
        max_user_queue: 2,
        flaw,
    }
}

/// Two users on two replicas, both classes, more requests than slots.
fn clients() -> Vec<ClientSpec> {
    vec![
        ClientSpec {
            user: 0,
            class: 1,
            replica: 0,
        },
        ClientSpec {
            user: 1,
            class: 1,
            replica: 1,
        },
        ClientSpec {
            user: 0,
            class: 0,
            replica: 1,
        },
        ClientSpec {
            user: 1,
            class: 0,
            replica: 0,
        },
    ]
}

fn system(params: Params, faults: Faults, budget: u8) -> System {
    System {
        params,
        replicas: 2,
        clients: clients(),
        faults,
        fault_budget: budget,
        admin_reset: false,
        stop_unrenewed: false,
        local_admission: None,
        local_flaw: None,
    }
}

fn check(sys: System) -> usize {
    let checker = sys.checker().threads(2).spawn_bfs().join();
    checker.assert_properties();
    checker.unique_state_count()
}

#[test]
fn holds_without_faults() {
    // One slot: waiters of both users and classes compete for it.
    for (user_cap, global_cap) in [(1, 1), (1, 2), (2, 2)] {
        let n = check(system(
            params(user_cap, global_cap, None),
            Faults::default(),
            0,
        ));
        eprintln!("no faults, caps {user_cap}/{global_cap}: {n} states");
    }
}

#[test]
fn holds_through_crashes_lost_messages_and_expired_records() {
    let faults = Faults {
        crash: true,
        lose_message: true,
        record_expiry: true,
        ..Faults::default()
    };
    let n = check(system(params(1, 2, None), faults, 1));
    eprintln!("crash, lost message, record expiry: {n} states");
}

#[test]
fn holds_through_redis_restarted_empty() {
    let faults = Faults {
        restart_empty: true,
        ..Faults::default()
    };
    let n = check(system(params(2, 2, None), faults, 1));
    eprintln!("restart empty: {n} states");
}

/// Runs the checker until the named property has a counterexample; returns its path.
fn counterexample(sys: System, property: &'static str) -> String {
    let checker = sys.checker().threads(2).spawn_bfs().join();
    let path = checker
        .discovery(property)
        .unwrap_or_else(|| panic!("no counterexample to {property:?}"));
    format!("{:?}", path.into_actions())
}

#[test]
fn finds_a_release_that_forgets_the_user_count() {
    let sys = system(
        params(1, 2, Some(Flaw::ReleaseForgetsUserCount)),
        Faults::default(),
        0,
    );
    let path = counterexample(
        sys,
        "with no more faults, every waiter is answered and no slot is lost",
    );
    eprintln!("release forgets the user count: {path}");
}

#[test]
fn finds_a_dispatch_that_ignores_the_user_cap() {
    let sys = system(
        params(1, 2, Some(Flaw::DispatchIgnoresUserCap)),
        Faults::default(),
        0,
    );
    let path = counterexample(sys, "in flight per user <= user cap");
    eprintln!("dispatch ignores the user cap: {path}");
}

/// The known gap: a replica cut from Redis (or paused) for longer than the lease TTL keeps its
/// requests running while their leases expire and the others fill the cap.
#[test]
fn finds_the_cap_exceeded_when_a_replica_is_cut_past_the_lease_ttl() {
    let faults = Faults {
        cut: true,
        ..Faults::default()
    };
    let path = counterexample(
        system(params(1, 2, None), faults, 1),
        "in flight at the upstream <= global cap",
    );
    eprintln!("replica cut past the lease ttl: {path}");
}

/// A failover to a Redis replica that missed the last write: the caps hold (replicas register
/// what they run before anyone admits), but a waiter that was served, or had left, can come back
/// with the lost write and be granted again: that slot waits for the lease TTL.
/// The same cut, with a replica that stops a request whose lease it cannot renew before that
/// lease expires: the cap holds for a cut of any length.
#[test]
fn holds_through_a_cut_when_unrenewed_requests_stop() {
    let faults = Faults {
        cut: true,
        ..Faults::default()
    };
    let mut sys = System {
        stop_unrenewed: true,
        ..system(params(1, 2, None), faults, 1)
    };
    // A fifth request, so that someone can take a slot while the cut replica's lease expires.
    sys.clients.push(ClientSpec {
        user: 2,
        class: 1,
        replica: 1,
    });
    let n = check(sys);
    eprintln!("cut, requests stopped with their lease: {n} states");
}

#[test]
fn failover_that_loses_the_last_write() {
    let faults = Faults {
        failover: true,
        ..Faults::default()
    };
    let checker = system(params(2, 2, None), faults, 1)
        .checker()
        .threads(2)
        .spawn_bfs()
        .join();
    for holds in [
        "in flight at the upstream <= global cap",
        "in flight per user <= user cap",
        "strict priority, FIFO in a class",
        "with no more faults, every waiter is answered and no slot is lost",
    ] {
        assert!(
            checker.discovery(holds).is_none(),
            "{holds}: {:?}",
            checker.discovery(holds).map(|p| p.into_actions())
        );
    }
    let path = checker
        .discovery("no waiter granted after it left")
        .map(|p| p.into_actions());
    eprintln!(
        "failover: {} states; a waiter granted again: {path:?}",
        checker.unique_state_count()
    );
    assert!(
        path.is_some(),
        "expected: a lost leave brings its waiter back"
    );
}

#[test]
fn holds_through_two_faults_of_any_kind() {
    let faults = Faults {
        crash: true,
        lose_message: true,
        record_expiry: true,
        restart_empty: true,
        ..Faults::default()
    };
    let n = check(system(params(1, 2, None), faults, 2));
    eprintln!("two faults of any kind: {n} states");
}

#[test]
fn holds_through_an_operators_reset_and_a_fault() {
    let faults = Faults {
        crash: true,
        lose_message: true,
        ..Faults::default()
    };
    let sys = System {
        admin_reset: true,
        ..system(params(1, 2, None), faults, 1)
    };
    let n = check(sys);
    eprintln!("reset and a fault: {n} states");
}
