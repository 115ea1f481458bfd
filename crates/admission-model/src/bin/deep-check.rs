//! The deeper run of the model checker (a bench command, not a CI test): three replicas, more
//! clients, caps up to 3, two faults per run. Prints each configuration's state count, time and
//! verdict; exits non-zero if a property that must hold has a counterexample.
//!
//! `cargo run --release -p admission-model --bin deep-check [-- --clients N --budget N --threads N]`

use std::process::ExitCode;
use std::time::Instant;

use admission_model::Params;
use admission_model::system::{ClientSpec, Faults, System};
use stateright::{Checker, Model};

/// Properties that hold in every configuration run here (the findings, a cut without stopping
/// unrenewed requests and a failover, are shown by tests/check.rs).
const MUST_HOLD: [&str; 4] = [
    "in flight at the upstream <= global cap",
    "in flight per user <= user cap",
    "strict priority, FIFO in a class",
    "with no more faults, every waiter is answered and no slot is lost",
];

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    let n_clients = arg("--clients", 5);
    let budget = u8::try_from(arg("--budget", 2)).unwrap_or(2);
    let threads = arg("--threads", 2);
    // Three users over three replicas, classes alternating.
    let clients: Vec<ClientSpec> = (0..n_clients)
        .map(|i| {
            let i = u8::try_from(i).unwrap_or(u8::MAX);
            ClientSpec {
                user: i % 3,
                class: (i / 2) % 2,
                replica: i % 3,
            }
        })
        .collect();
    let all = Faults {
        crash: true,
        lose_message: true,
        restart_empty: true,
        record_expiry: true,
        ..Faults::default()
    };
    let runs = [
        ("caps 1/2, no faults", 1, 2, Faults::default(), 0),
        ("caps 2/3, no faults", 2, 3, Faults::default(), 0),
        (
            "caps 1/2, crash/lost message/restart/record expiry",
            1,
            2,
            all,
            budget,
        ),
        (
            "caps 2/3, crash/lost message/restart/record expiry",
            2,
            3,
            all,
            budget,
        ),
        (
            "caps 1/2, cut (requests stopped with their lease) or crash",
            1,
            2,
            Faults {
                cut: true,
                crash: true,
                ..Faults::default()
            },
            budget,
        ),
    ];
    let mut ok = true;
    for (name, user_cap, global_cap, faults, fault_budget) in runs {
        let sys = System {
            params: Params {
                user_cap,
                global_cap,
                classes: 2,
                max_queue: 4,
                max_user_queue: 2,
                flaw: None,
            },
            replicas: 3,
            clients: clients.clone(),
            faults,
            fault_budget,
            admin_reset: false,
            // Only a cut needs it; it changes nothing without one.
            stop_unrenewed: true,
            local_admission: None,
            local_flaw: None,
        };
        let started = Instant::now();
        let checker = sys.checker().threads(threads).spawn_bfs().join();
        let mut verdict = "all properties hold".to_string();
        for p in MUST_HOLD {
            if let Some(path) = checker.discovery(p) {
                ok = false;
                verdict = format!("VIOLATED {p}: {:?}", path.into_actions());
            }
        }
        println!(
            "{name}: {} clients, {} fault(s): {} states in {:.1} s: {verdict}",
            n_clients,
            fault_budget,
            checker.unique_state_count(),
            started.elapsed().as_secs_f64()
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
