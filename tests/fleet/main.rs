//! Fleet tests: real processes. Each test starts its own Redis (a `redis-server` on a free port,
//! or a 3-master Redis Cluster), `upstream-sim` with slow LLM answers, and three `fleetgate
//! serve` replicas on free ports, migrated against a fresh database; then loads them from many
//! users and IPs over loopback and injects a fault. The simulator's `/stats` is the independent
//! observer of concurrency: what actually reached the LLM, overall and per user.
//!
//! Tests run one at a time ([`harness::serial`]); every process is killed when its test ends,
//! also on a panic. Logs of a failed test are kept and their directory printed.
//!
//! Layout: `harness/` (binaries, processes, simulator, PostgreSQL, fleet, load), then one file per
//! scenario.
#![allow(clippy::unwrap_used)]

mod harness;

mod global_cap;
mod partition;
mod partition_idle;
mod pause;
mod postgres_outage;
mod priority;
mod rag_pacing;
mod redis_outage;
mod replica_kill;
mod rolling_restart;
mod runtime_limits;
mod sentinel;
mod skew;
mod soak;
