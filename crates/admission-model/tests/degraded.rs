//! Degraded mode at small bounds: a replica cut from Redis (a partition of one replica, any
//! number of lease TTLs long) admits on its local limit, stops or not by the outage policy, and
//! registers what it runs once healed, while the other replica goes on admitting through Redis.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use admission_model::system::{ClientSpec, Faults, System};
use admission_model::{LocalFlaw, LocalLimit, Params};
use stateright::{Checker, Model};

const CAP: &str = "in flight at the upstream <= global cap";

fn client(user: u8, replica: u8) -> ClientSpec {
    ClientSpec {
        user,
        class: 0,
        replica,
    }
}

/// Two replicas, global cap 2 (a local share of 1 each), user cap 2; two clients on each
/// replica, four users: enough for replica 1 to fill the cap through Redis while replica 0 is
/// cut, and for replica 0 to run one request and admit another.
fn system(rule: LocalLimit, safety: bool, flaw: Option<LocalFlaw>) -> System {
    System {
        params: Params {
            user_cap: 2,
            global_cap: 2,
            classes: 1,
            max_queue: 4,
            max_user_queue: 2,
            flaw: None,
        },
        replicas: 2,
        clients: vec![client(0, 0), client(1, 0), client(2, 1), client(3, 1)],
        faults: Faults {
            cut: true,
            ..Faults::default()
        },
        fault_budget: 1,
        admin_reset: false,
        stop_unrenewed: safety,
        local_admission: Some(rule),
        local_flaw: flaw,
    }
}

/// Every property's counterexample (`None`: it holds), and the states explored. One thread:
/// breadth first in order, so a counterexample is a shortest one.
fn explore(sys: System) -> (usize, BTreeMap<&'static str, Option<String>>) {
    let names: Vec<&'static str> = sys.properties().iter().map(|p| p.name).collect();
    let checker = sys.checker().spawn_bfs().join();
    let found = names
        .into_iter()
        .map(|n| {
            let path = checker
                .discovery(n)
                .map(|p| format!("{:?}", p.into_actions()));
            (n, path)
        })
        .collect();
    (checker.unique_state_count(), found)
}

/// Asserts that every safety and liveness property holds except those in `violated`, which
/// must have a counterexample; returns those counterexamples.
fn expect(sys: System, label: &str, violated: &[&str]) -> Vec<String> {
    let (n, found) = explore(sys);
    eprintln!("{label}: {n} states");
    let mut paths = Vec::new();
    for (p, path) in &found {
        let sometimes = p.starts_with("a waiter") || p.starts_with("the global cap is reached");
        if sometimes {
            assert!(path.is_some(), "{label}: never {p}");
        } else if violated.contains(p) {
            let path = path
                .clone()
                .unwrap_or_else(|| panic!("{label}: expected a counterexample to {p:?}"));
            eprintln!("  {p}: {path}");
            paths.push(path);
        } else {
            assert!(path.is_none(), "{label}: {p}: {path:?}");
        }
    }
    paths
}

/// Safety with a local limit of what the replica held (the service's rule under safety): a local grant only takes the room of one
/// of its requests that ended during the cut, whose lease Redis still counts; when its contact
/// no longer vouches for that, local permits stop and nothing more is admitted. The cap holds for
/// a cut of any length, and the replica's recovery loses no slot.
#[test]
fn safety_holds_through_a_partition_of_any_length_within_what_the_replica_held() {
    expect(
        system(LocalLimit::Held, true, None),
        "safety, limit = what it held",
        &[],
    );
}

/// The same without safety's time bound: local permits outlive the leases they stood in for,
/// which expire in Redis, and the other replica hands their room on.
#[test]
fn safety_without_its_time_bound_exceeds_the_cap() {
    expect(
        system(LocalLimit::Held, true, Some(LocalFlaw::NoTimeBound)),
        "safety without its time bound",
        &[CAP],
    );
}

/// The availability rule's local limit (`min(share, own + (cap - max(peak, own)) / n)`) under
/// safety, which the service used before: in
/// a partition of one replica the other replica admits by Redis's counts, which do not hold the
/// cut replica's local grants, so the fleet runs over the cap while the cut replica's contact
/// still vouches for it (the limit is safe only if nobody reaches Redis). At most by its local
/// limit.
#[test]
fn safety_with_the_services_outage_limit_exceeds_the_cap_in_a_partition() {
    expect(
        system(LocalLimit::Outage, true, None),
        "safety, the service's outage limit",
        &[CAP],
    );
}

/// Availability: the cut replica admits for the whole outage and nothing is stopped; the fleet
/// exceeds the cap, by what the cut replica ran as the outage began or its local limit if more
/// (its requests of before outlive their leases, its local grants are not counted in Redis).
#[test]
fn availability_exceeds_the_cap_by_what_the_cut_replica_runs_at_most() {
    for rule in [LocalLimit::Outage, LocalLimit::Held] {
        expect(
            system(rule, false, None),
            &format!("availability, {rule:?}"),
            &[CAP],
        );
    }
}
