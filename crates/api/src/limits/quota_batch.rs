//! Group commit of quota spends: the spends that arrive while a statement is in flight are sent
//! together as one statement (one round trip, one transaction, one WAL flush), instead of one
//! statement and one commit each.
//!
//! One batcher task per replica (per [`super::quota::QuotaStore`] and its clones) owns an mpsc
//! queue. It waits for a first spend, takes whatever else is already queued (up to
//! [`MAX_BATCH`]) and runs them as one statement; spends arriving meanwhile form the next batch.
//! There is no timer: a lone spend goes out at once, so at low load a spend costs what it did as
//! a statement of its own, and under load the batch grows with the queue.
//!
//! The statement ([`SPEND_BATCH`]) keeps every spend exact:
//!
//! - It locks the profiles of the batch's users in `user_id` order (`SELECT … ORDER BY user_id
//!   FOR UPDATE`: the rows are locked after the sort), so two batches that share users, from
//!   this replica or another, wait for each other instead of deadlocking. Under READ COMMITTED a
//!   row lock that waited returns the row as the other transaction committed it, so the usage
//!   read is the current one.
//! - Spends of one user in one batch are counted together: with `k` spends and usage `base` of a
//!   limit `lim`, the row moves to `base + min(k, lim - base)`, and the spends in arrival order
//!   get the grants one by one, exactly as `k` sequential spends would.
//! - A user without a profile gets one (`INSERT … ON CONFLICT DO NOTHING`, in `user_id` order)
//!   and that user's spends run once more.
//!
//! Durability is unchanged: the batch commits with the session's `synchronous_commit` (on by
//! default), and no spend is answered before its commit. With `async_commit` the batch runs in a
//! transaction with `SET LOCAL synchronous_commit = off`: the commit returns before its WAL
//! flush, so a database crash can lose the last spends (the quota is then generous, never
//! strict); see the README's `FLEETGATE_QUOTA_ASYNC_COMMIT`.
//!
//! A batch whose statement fails for a reason of its own rows (a constraint, a deadlock with a
//! maintenance job) is split and each user's spends run alone, so one bad row fails only its own
//! spends. A batch that fails for want of the database (pool timeout, closed pool, I/O) answers
//! every spend in it with that error, as a spend of its own would have been answered.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use chrono::NaiveDate;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::quota::{QuotaError, Spend, Ticket, until_next_utc_midnight};

/// Most spends in one statement. Larger batches amortise more but hold their row locks longer;
/// at this size a batch is still one small statement.
pub const MAX_BATCH: usize = 128;

/// Spends queued beyond this make callers wait to enqueue (backpressure, not loss).
const QUEUE: usize = 4 * MAX_BATCH;

// SQL fragments shared with `quota.rs` (one static string per statement, see there).
macro_rules! limit_expr {
    () => {
        "COALESCE(p.daily_limit_override, \
         (SELECT t.lim FROM unnest($2::text[], $3::int4[]) AS t(name, lim) WHERE t.name = p.tier), $4)"
    };
}
macro_rules! today {
    () => {
        "((now() AT TIME ZONE 'UTC')::date)"
    };
}

/// One statement for a batch. `$1` holds one user id per spend, in arrival order (repeats
/// allowed); `$2`, `$3` the tier table; `$4` the free tier's limit. Returns one row per user that
/// has a profile: the usage before the batch (`base`, today's), the limit and today's date; the
/// rows of users below their limit are updated to `base + min(k, lim - base)`.
pub const SPEND_BATCH: &str = concat!(
    "WITH req AS (SELECT r.user_id, count(*)::int4 AS k FROM unnest($1::text[]) AS r(user_id) ",
    "GROUP BY r.user_id), ",
    "cur AS MATERIALIZED (SELECT p.user_id, CASE WHEN p.usage_day = ",
    today!(),
    " THEN p.queries_used ELSE 0 END AS base, ",
    limit_expr!(),
    " AS lim FROM user_profiles AS p WHERE p.user_id = ANY($1::text[]) ",
    "ORDER BY p.user_id FOR UPDATE OF p), ",
    "upd AS (UPDATE user_profiles AS p SET queries_used = c.base + LEAST(r.k, c.lim - c.base), ",
    "usage_day = ",
    today!(),
    ", updated_at = now() FROM cur AS c JOIN req AS r ON r.user_id = c.user_id ",
    "WHERE p.user_id = c.user_id AND c.base < c.lim RETURNING p.user_id) ",
    "SELECT c.user_id, c.base, c.lim, ",
    today!(),
    " AS day FROM cur AS c"
);

/// Profiles for first-time users, locked in the same order as [`SPEND_BATCH`] locks rows.
const CREATE_PROFILES: &str = "INSERT INTO user_profiles (user_id) \
     SELECT u FROM unnest($1::text[]) AS t(u) ORDER BY u ON CONFLICT (user_id) DO NOTHING";

/// What a batch statement needs: the pool and the limit parameters.
#[derive(Debug, Clone)]
pub(crate) struct SpendSql {
    pub pool: PgPool,
    /// The free tier's limit (changed at runtime through the store).
    pub free: std::sync::Arc<std::sync::atomic::AtomicI32>,
    pub tier_names: Vec<String>,
    pub tier_limits: Vec<i32>,
    pub async_commit: bool,
}

/// A queued spend and where its outcome goes.
#[derive(Debug)]
struct Job {
    user_id: String,
    reply: oneshot::Sender<Result<Spend, QuotaError>>,
}

/// The per-replica queue, started on first use (inside the runtime that serves the spends).
#[derive(Debug, Default)]
pub(crate) struct Batcher {
    tx: OnceLock<mpsc::Sender<Job>>,
}

impl Batcher {
    /// Spends one query of `user_id` through the batcher.
    pub(crate) async fn spend(&self, sql: &SpendSql, user_id: &str) -> Result<Spend, QuotaError> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(sql.clone(), rx));
            tx
        });
        let (reply, rx) = oneshot::channel();
        let job = Job {
            user_id: user_id.to_string(),
            reply,
        };
        match tx.send(job).await {
            Ok(()) => rx.await.unwrap_or_else(|_| {
                // The batcher went away with the spend (its runtime shut down): whether the
                // spend committed is unknown, so it is answered like a database failure.
                Err(QuotaError(sqlx::Error::WorkerCrashed))
            }),
            // The batcher's runtime is gone (a store used from another runtime): a batch of one,
            // here.
            Err(mpsc::error::SendError(job)) => {
                let (tx1, rx1) = oneshot::channel();
                settle(
                    sql,
                    vec![Job {
                        user_id: job.user_id,
                        reply: tx1,
                    }],
                )
                .await;
                rx1.await
                    .unwrap_or(Err(QuotaError(sqlx::Error::WorkerCrashed)))
            }
        }
    }
}

/// Runs `users` (one spend each, repeats allowed) as one batch, as the batcher does with a
/// queue's worth, and returns each spend's outcome in order.
pub(crate) async fn spend_batch(sql: &SpendSql, users: &[&str]) -> Vec<Result<Spend, QuotaError>> {
    let (jobs, replies): (Vec<Job>, Vec<_>) = users
        .iter()
        .map(|u| {
            let (reply, rx) = oneshot::channel();
            (
                Job {
                    user_id: (*u).to_string(),
                    reply,
                },
                rx,
            )
        })
        .unzip();
    settle(sql, jobs).await;
    let mut out = Vec::with_capacity(replies.len());
    for rx in replies {
        out.push(
            rx.await
                .unwrap_or(Err(QuotaError(sqlx::Error::WorkerCrashed))),
        );
    }
    out
}

/// The batcher task: runs until every sender (every clone of the store) is gone.
async fn run(sql: SpendSql, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A caller that gave up (client gone) before its batch started is not charged.
        batch.retain(|j: &Job| !j.reply.is_closed());
        if !batch.is_empty() {
            settle(&sql, std::mem::take(&mut batch)).await;
        }
    }
}

/// Runs `jobs` and answers each; splits by user when the statement failed for its rows.
async fn settle(sql: &SpendSql, jobs: Vec<Job>) {
    let users: Vec<&str> = jobs.iter().map(|j| j.user_id.as_str()).collect();
    match execute(sql, &users).await {
        Ok(outcomes) => {
            for (job, out) in jobs.into_iter().zip(outcomes) {
                let _ = job.reply.send(Ok(out));
            }
        }
        Err(e) if is_row_error(&e) && distinct(&users) > 1 => {
            // One user's row (or a lock conflict) failed the statement: each user alone, so the
            // others' spends still count.
            let mut groups: HashMap<String, Vec<Job>> = HashMap::new();
            for job in jobs {
                groups.entry(job.user_id.clone()).or_default().push(job);
            }
            for (_, group) in groups {
                Box::pin(settle(sql, group)).await;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, spends = jobs.len(), "quota batch failed");
            for job in jobs {
                let _ = job.reply.send(Err(QuotaError(copy_error(&e))));
            }
        }
    }
}

fn distinct(users: &[&str]) -> usize {
    users.iter().collect::<BTreeSet<_>>().len()
}

/// A failure of the statement itself (constraint, deadlock, serialization), as opposed to the
/// database being out of reach, where running it again would only wait again.
fn is_row_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(_))
}

/// The same failure for another spend of the batch (`sqlx::Error` is not `Clone`).
fn copy_error(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::WorkerCrashed => sqlx::Error::WorkerCrashed,
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// One row of [`SPEND_BATCH`].
#[derive(sqlx::FromRow)]
struct Row {
    user_id: String,
    base: i32,
    lim: i32,
    day: NaiveDate,
}

/// The outcome of each spend of `users` (one entry per spend, same order).
async fn execute(sql: &SpendSql, users: &[&str]) -> Result<Vec<Spend>, sqlx::Error> {
    let mut rows = statement(sql, users).await?;
    let missing: BTreeSet<&str> = users
        .iter()
        .copied()
        .filter(|u| !rows.contains_key(*u))
        .collect();
    if !missing.is_empty() {
        // First spends of new users: create their profiles, then spend for them alone (the other
        // users' spends are already committed). The insert waits for a concurrent one of the same
        // user, so the second statement sees the row whoever created it.
        let missing: Vec<&str> = missing.into_iter().collect();
        sqlx::query(CREATE_PROFILES)
            .bind(&missing)
            .execute(&sql.pool)
            .await?;
        let again: Vec<&str> = users
            .iter()
            .copied()
            .filter(|u| missing.binary_search(u).is_ok())
            .collect();
        rows.extend(statement(sql, &again).await?);
    }
    let retry_after = until_next_utc_midnight();
    let mut rank: HashMap<&str, i32> = HashMap::new();
    Ok(users
        .iter()
        .map(|u| {
            let j = rank.entry(*u).or_insert(0);
            *j += 1;
            match rows.get(*u) {
                // The j-th spend of this user in the batch: granted while base + j <= lim.
                Some(r) if i64::from(r.base) + i64::from(*j) <= i64::from(r.lim) => {
                    Spend::Spent(Ticket {
                        user_id: (*u).to_string(),
                        day: r.day,
                        remaining: u32::try_from(r.lim - r.base - *j).unwrap_or(0),
                        limit: u32::try_from(r.lim).unwrap_or(0),
                    })
                }
                Some(r) => Spend::Exhausted {
                    limit: u32::try_from(r.lim).unwrap_or(0),
                    retry_after,
                },
                // No profile even after creating it (deleted meanwhile): the free tier, nothing
                // counted.
                None => Spend::Exhausted {
                    limit: u32::try_from(sql.free.load(std::sync::atomic::Ordering::Relaxed))
                        .unwrap_or(0),
                    retry_after,
                },
            }
        })
        .collect())
}

/// Runs [`SPEND_BATCH`] once; rows by user.
async fn statement(sql: &SpendSql, users: &[&str]) -> Result<HashMap<String, Row>, sqlx::Error> {
    let q = sqlx::query_as::<_, Row>(SPEND_BATCH)
        .bind(users)
        .bind(&sql.tier_names)
        .bind(&sql.tier_limits)
        .bind(sql.free.load(std::sync::atomic::Ordering::Relaxed));
    let rows = if sql.async_commit {
        let mut tx = sql.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows
    } else {
        q.fetch_all(&sql.pool).await?
    };
    Ok(rows.into_iter().map(|r| (r.user_id.clone(), r)).collect())
}
