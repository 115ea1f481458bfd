//! The health of one replica: the report (`report.rs`), how it is made (`check.rs`), the cache
//! public callers share (`cache.rs`), and the request counters its error rate comes from
//! (`stats.rs`).

pub mod cache;
pub mod check;
pub mod report;
pub mod stats;

pub use cache::HealthCache;
pub use report::HealthReport;
