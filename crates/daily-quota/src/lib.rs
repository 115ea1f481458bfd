//! A daily quota per key in PostgreSQL: `n` units a UTC day for each (scope, subject), spent
//! atomically and exactly however many processes spend at once, refunded on the day it was
//! spent on.
//!
//! - **Exact.** A spend adds one to today's count (or starts a new day at one) only while the
//!   count is below the key's limit, in one statement that locks the key's row; concurrent
//!   spends, in one process or many, never over-spend.
//! - **Group commit.** The spends that arrive while a statement is in flight go out together as
//!   one statement and one commit, so under load a spend costs a fraction of a commit; a lone
//!   spend goes out at once. Durability is unchanged unless asynchronous commit is chosen
//!   ([`StoreOptions::async_commit`]): then a database crash can lose the spends of its last
//!   3 × `wal_writer_delay` (600 ms at PostgreSQL's default), which only ever gives units back.
//! - **One clock.** The UTC day is the database's, the one clock all processes share.
//! - **Your table or its own.** [`Table::own`] is a table the store creates; [`Table::existing`]
//!   maps an existing one (user profiles, say), with optional per-row tiers and overrides.
//! - **A tower layer.** [`DailyQuota`] implements limiter-tower's `QuotaHook`: plug it into a
//!   `QuotaLayer`.
//!
//! Layout: `table.rs` (the layout and its statements), `store.rs` ([`QuotaStore`]: spend,
//! refund, usage), `batch.rs` (the group-commit queue), `hook.rs` ([`DailyQuota`]), `pool.rs`
//! ([`pool_options`]), `day.rs` (the UTC day), `error.rs`.

#![warn(missing_docs)]

mod batch;
mod day;
mod error;
mod hook;
mod pool;
mod store;
mod table;

pub use batch::{KEEP_CONNECTION, MAX_BATCH};
pub use day::until_next_utc_midnight;
pub use error::{QuotaError, TableError};
pub use hook::DailyQuota;
pub use pool::{PING_WHEN_IDLE_FOR, pool_options};
pub use store::{QuotaObserver, QuotaStore, REFUND_RETRY_FOR, Spend, StoreOptions, Ticket, Usage};
pub use table::Table;
