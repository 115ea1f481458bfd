//! The deeper run of the model checker (a bench command, not a CI test): three replicas, more
//! clients, caps up to 3, two faults per run. Prints each configuration's state count, time and
//! verdict; exits non-zero if a property that must hold has a counterexample.
//!
//! `cargo run --release -p admission-model --bin deep-check [-- --clients N --budget N --threads N
//! --degraded]` (`--degraded`: only the degraded-mode configurations)

use std::process::ExitCode;
use std::time::Instant;

use admission_model::system::{ClientSpec, Faults, System};
use admission_model::{LocalLimit, Params};
use stateright::{Checker, Model};

const CAP: &str = "in flight at the upstream <= global cap";
const BOUND: &str = "in flight at the upstream <= global cap + what a cut replica may run";

/// Properties that hold in every configuration run here but those marked with a finding (the
/// others, a cut without stopping unrenewed requests and a failover, are shown by tests/).
const MUST_HOLD: [&str; 4] = [
    CAP,
    "in flight per user <= user cap",
    "strict priority, FIFO in a class",
    "with no more faults, every waiter is answered and no slot is lost",
];

/// One configuration: its caps (user, global), faults and their budget, degraded mode's local
/// limit (`None`: a cut replica admits nothing), the outage policy, and the property expected to
/// have a counterexample (a known finding).
#[derive(Clone, Copy)]
struct Run {
    name: &'static str,
    caps: (usize, usize),
    faults: Faults,
    budget: u8,
    local: Option<LocalLimit>,
    safety: bool,
    finding: Option<&'static str>,
}

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
    let cut = Faults {
        cut: true,
        ..Faults::default()
    };
    let cut_or_crash = Faults { crash: true, ..cut };
    let held = Some(LocalLimit::Held);
    let outage = Some(LocalLimit::Outage);
    let base = Run {
        name: "",
        caps: (1, 2),
        faults: Faults::default(),
        budget: 0,
        local: None,
        safety: true,
        finding: None,
    };
    // Degraded mode: one replica cut (a partition of any length) while the others reach Redis.
    let runs = [
        Run {
            name: "caps 1/2, no faults",
            ..base
        },
        Run {
            name: "caps 2/3, no faults",
            caps: (2, 3),
            ..base
        },
        Run {
            name: "caps 1/2, crash/lost message/restart/record expiry",
            faults: all,
            budget,
            ..base
        },
        Run {
            name: "caps 2/3, crash/lost message/restart/record expiry",
            caps: (2, 3),
            faults: all,
            budget,
            ..base
        },
        Run {
            name: "caps 1/2, cut (requests stopped with their lease) or crash",
            faults: cut_or_crash,
            budget,
            ..base
        },
        Run {
            name: "caps 2/3, degraded: cut or crash, local limit = what it held (the service's safety rule), safety",
            caps: (2, 3),
            faults: cut_or_crash,
            budget,
            local: held,
            ..base
        },
        Run {
            name: "caps 2/3, degraded: cut, the availability rule's limit under safety",
            caps: (2, 3),
            faults: cut,
            budget: 1,
            local: outage,
            finding: Some(CAP),
            ..base
        },
        Run {
            name: "caps 2/3, degraded: cut, the availability rule's limit, availability",
            caps: (2, 3),
            faults: cut,
            budget: 1,
            local: outage,
            safety: false,
            finding: Some(CAP),
        },
    ];
    let mut ok = true;
    // `--degraded`: only the degraded-mode configurations.
    let degraded_only = std::env::args().any(|a| a == "--degraded");
    for run in runs {
        if degraded_only && run.local.is_none() {
            continue;
        }
        let Run {
            name,
            caps: (user_cap, global_cap),
            faults,
            budget: fault_budget,
            local,
            safety,
            finding,
        } = run;
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
            stop_unrenewed: safety,
            local_admission: local,
            local_flaw: None,
        };
        let started = Instant::now();
        let checker = sys.checker().threads(threads).spawn_bfs().join();
        let mut verdict = "all properties hold".to_string();
        for p in MUST_HOLD.into_iter().chain([BOUND]) {
            match (checker.discovery(p), finding == Some(p)) {
                (Some(path), true) => {
                    verdict = format!("as expected, {p} fails: {:?}", path.into_actions());
                }
                (None, true) => {
                    ok = false;
                    verdict = format!("EXPECTED a counterexample to {p}, none found");
                }
                (Some(path), false) => {
                    ok = false;
                    verdict = format!("VIOLATED {p}: {:?}", path.into_actions());
                }
                (None, false) => {}
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
