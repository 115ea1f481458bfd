//! Adversarial tests: each attack class of SECURITY.md tried against a real `fleetgate serve`
//! process (its own `upstream-sim`, a fresh PostgreSQL database, the machine's Redis under a
//! unique prefix), with outside observers: the simulator's counters and recorded prompts, rows in
//! PostgreSQL, the process's open file descriptors, its log file, `pg_stat_user_functions`.
//!
//! One file per attack class: `free_answers`, `slow_clients`, `forwarded_for`, `llm_breaker`,
//! `retrieved_text`, `weak_config`, `unbounded_work`, `small_leaks`. Tests run one at a time
//! (timeouts are measured), each bounded by deadlines, never by sleeps that must be long enough.
#![allow(clippy::unwrap_used)]

#[path = "../fleet/harness/mod.rs"]
#[allow(unused_imports)]
mod harness;
mod support;

mod forwarded_for;
mod free_answers;
mod llm_breaker;
mod retrieved_text;
mod slow_clients;
mod small_leaks;
mod unbounded_work;
mod weak_config;
