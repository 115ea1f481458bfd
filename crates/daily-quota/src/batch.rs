//! Group commit: the spends that arrive while a statement is in flight go out together as one
//! statement (one round trip, one transaction, one WAL flush) instead of one statement and one
//! commit each.
//!
//! One batcher task per store (and its clones) owns an mpsc queue. It waits for a first spend,
//! takes whatever else is already queued (up to [`MAX_BATCH`]) and runs them as one statement;
//! spends arriving meanwhile form the next batch. There is no timer: a lone spend goes out at
//! once, so at low load a spend costs what a statement of its own costs, and under load the
//! batch grows with the queue.
//!
//! The batcher keeps its pool connection from one batch to the next while spends keep coming
//! and gives it back after `keep_connection` ([`KEEP_CONNECTION`] by default) without any: sqlx pings every connection that
//! returns to the pool, a round trip per statement that a busy batcher would pay for nothing.
//! A connection that failed is given back (the pool's ping then closes it) and the next batch
//! takes another.
//!
//! Every spend stays exact (see the statement in `table.rs`): rows are locked in key order, so
//! two batches that share keys, from this process or another, wait for each other instead of
//! deadlocking, and under READ COMMITTED a row lock that waited returns the row as the other
//! transaction committed it. The `k` spends of one key in a batch get the grants one by one in
//! arrival order, exactly as `k` sequential spends would. A key without a row gets one (`INSERT
//! … ON CONFLICT DO NOTHING`, in key order) and its spends run once more.
//!
//! A spend whose caller went away while its batch ran (the request was dropped) is given back:
//! its reply cannot be sent, so the batcher hands the ticket to the store's refund. A caller
//! that went away before its batch started is not charged at all.
//!
//! Durability is unchanged: the batch commits with the session's `synchronous_commit` (on by
//! default), and no spend is answered before its commit. In asynchronous-commit mode the batch
//! statement sets `synchronous_commit` off for its own transaction: the commit returns before
//! its WAL flush, so a database crash can lose the spends of the last moments (at most three
//! times `wal_writer_delay`, 600 ms by default); the quota is then generous, never strict.
//!
//! A batch whose statement fails for a reason of its own rows (a constraint, a deadlock with a
//! maintenance job) is split and each key's spends run alone, so one bad row fails only its own
//! spends. A batch that fails for want of the database (pool timeout, closed pool, I/O) answers
//! every spend in it with that error, as a spend of its own would have been answered.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::NaiveDate;
use sqlx::PgConnection;
use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;
use tokio::sync::{mpsc, oneshot};

use crate::day::until_next_utc_midnight;
use crate::error::QuotaError;
use crate::store::{Core, Spend, Ticket};

/// Most spends in one statement. Larger batches amortise more but hold their row locks longer;
/// at this size a batch is still one small statement.
pub const MAX_BATCH: usize = 128;

/// Spends queued beyond this make callers wait to enqueue (backpressure, not loss).
const QUEUE: usize = 4 * MAX_BATCH;

/// How long the batcher keeps its connection without a spend (see the module docs); given back,
/// it is pinged by the pool, and pinged again before use after a longer idle spell.
pub const KEEP_CONNECTION: Duration = Duration::from_millis(500);

/// One spend: which quota, whose, and the caller's limit.
#[derive(Debug, Clone)]
pub(crate) struct Want {
    pub scope: Arc<str>,
    pub subject: String,
    pub limit: i32,
}

/// A queued spend and where its outcome goes.
#[derive(Debug)]
struct Job {
    want: Want,
    reply: oneshot::Sender<Result<Spend, QuotaError>>,
}

/// Gives back the unit of a spend nobody received.
pub(crate) type Refunder = Arc<dyn Fn(Ticket) + Send + Sync>;

/// The per-store queue, started on first use (inside the runtime that serves the spends).
#[derive(Debug, Default)]
pub(crate) struct Batcher {
    tx: OnceLock<mpsc::Sender<Job>>,
}

impl Batcher {
    /// Spends through the batcher; `refunder` builds, on first use, what gives back the spends
    /// whose callers went away.
    pub(crate) async fn spend(
        &self,
        core: &Arc<Core>,
        want: Want,
        refunder: impl Fn() -> Refunder,
    ) -> Result<Spend, QuotaError> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(Arc::clone(core), rx, refunder()));
            tx
        });
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = tx.send(Job { want, reply }).await {
            // The batcher's runtime is gone (a store used from another runtime): a batch of one
            // in a task of this runtime, which gives its unit back like the batcher if the
            // caller goes away meanwhile.
            let core = Arc::clone(core);
            let refund = refunder();
            tokio::spawn(async move {
                for ticket in settle(&core, &mut None, vec![job]).await {
                    refund(ticket);
                }
            });
        }
        rx.await.unwrap_or_else(|_| {
            // The batcher went away with the spend (its runtime shut down): whether the spend
            // committed is unknown, so it is answered like a database failure.
            Err(QuotaError(sqlx::Error::WorkerCrashed))
        })
    }
}

/// Runs `wants` as one batch, as the batcher does with a queue's worth; outcomes in order.
pub(crate) async fn spend_batch(core: &Core, wants: Vec<Want>) -> Vec<Result<Spend, QuotaError>> {
    let (jobs, replies): (Vec<Job>, Vec<_>) = wants
        .into_iter()
        .map(|want| {
            let (reply, rx) = oneshot::channel();
            (Job { want, reply }, rx)
        })
        .unzip();
    // Every receiver is alive until read below: nothing can be orphaned.
    let _ = settle(core, &mut None, jobs).await;
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
async fn run(core: Arc<Core>, mut rx: mpsc::Receiver<Job>, refunder: Refunder) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut conn: Held = None;
    // A pool of one connection is the store's only way to its other statements (usage,
    // refunds): the batcher then gives it back after each batch.
    let keep = core.pool.options().get_max_connections() > 1;
    loop {
        let received = if conn.is_some() {
            match tokio::time::timeout(core.keep_connection, rx.recv_many(&mut batch, MAX_BATCH))
                .await
            {
                Ok(n) => n,
                Err(_) => {
                    conn = None;
                    rx.recv_many(&mut batch, MAX_BATCH).await
                }
            }
        } else {
            rx.recv_many(&mut batch, MAX_BATCH).await
        };
        if received == 0 {
            return;
        }
        // A caller that gave up (client gone) before its batch started is not charged.
        batch.retain(|j: &Job| !j.reply.is_closed());
        if !batch.is_empty() {
            for ticket in settle(&core, &mut conn, std::mem::take(&mut batch)).await {
                refunder(ticket);
            }
        }
        if !keep {
            conn = None;
        }
    }
}

/// The batcher's connection, kept between batches.
type Held = Option<PoolConnection<Postgres>>;

/// The held connection, taken from the pool if there is none.
async fn connection<'c>(
    core: &Core,
    conn: &'c mut Held,
) -> Result<&'c mut PgConnection, sqlx::Error> {
    let held = match conn {
        Some(c) => c,
        None => conn.insert(core.pool.acquire().await?),
    };
    Ok(&mut **held)
}

type Key = (Arc<str>, String);

fn key(w: &Want) -> Key {
    (Arc::clone(&w.scope), w.subject.clone())
}

/// Runs `jobs` and answers each; splits by key when the statement failed for its rows.
/// Returns the tickets of the spends whose callers went away meanwhile.
async fn settle(core: &Core, conn: &mut Held, jobs: Vec<Job>) -> Vec<Ticket> {
    let mut orphans = Vec::new();
    let wants: Vec<&Want> = jobs.iter().map(|j| &j.want).collect();
    let result = execute(core, conn, &wants).await;
    if result.as_ref().is_err_and(|e| !is_row_error(e)) {
        // The connection may be what failed: back to the pool, whose ping closes a broken one.
        *conn = None;
    }
    match result {
        Ok(outcomes) => {
            for (job, out) in jobs.into_iter().zip(outcomes) {
                if let Err(Ok(Spend::Spent(ticket))) = job.reply.send(Ok(out)) {
                    orphans.push(ticket);
                }
            }
        }
        Err(e) if is_row_error(&e) && distinct(&wants) > 1 => {
            // One key's row (or a lock conflict) failed the statement: each key alone, so the
            // others' spends still count.
            let mut groups: HashMap<Key, Vec<Job>> = HashMap::new();
            for job in jobs {
                groups.entry(key(&job.want)).or_default().push(job);
            }
            for (_, group) in groups {
                orphans.extend(Box::pin(settle(core, conn, group)).await);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, spends = jobs.len(), "quota batch failed");
            for job in jobs {
                let _ = job.reply.send(Err(QuotaError(copy_error(&e))));
            }
        }
    }
    orphans
}

fn distinct(wants: &[&Want]) -> usize {
    wants.iter().map(|w| key(w)).collect::<BTreeSet<_>>().len()
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

/// One row of the batch statement.
#[derive(sqlx::FromRow)]
struct Row {
    s: String,
    u: String,
    base: i32,
    lim: i32,
    day: NaiveDate,
}

/// The outcome of each spend of `wants` (same order).
async fn execute(core: &Core, conn: &mut Held, wants: &[&Want]) -> Result<Vec<Spend>, sqlx::Error> {
    let conn = connection(core, conn).await?;
    let mut rows = statement(core, conn, wants).await?;
    let missing: BTreeSet<(&str, &str)> = wants
        .iter()
        .map(|w| (&*w.scope, w.subject.as_str()))
        .filter(|(s, u)| !rows.contains_key(&(s.to_string(), u.to_string())))
        .collect();
    if !missing.is_empty() {
        // First spends of new keys: create their rows, then spend for them alone (the other
        // keys' spends are already committed). The insert waits for a concurrent one of the same
        // key, so the second statement sees the row whoever created it.
        let (scopes, subjects): (Vec<&str>, Vec<&str>) = missing.iter().copied().unzip();
        sqlx::query(core.sql.create.clone())
            .bind(&scopes)
            .bind(&subjects)
            .execute(&mut *conn)
            .await?;
        let again: Vec<&Want> = wants
            .iter()
            .copied()
            .filter(|w| missing.contains(&(&*w.scope, w.subject.as_str())))
            .collect();
        rows.extend(statement(core, conn, &again).await?);
    }
    let retry_after = until_next_utc_midnight();
    let mut rank: HashMap<(&str, &str), i32> = HashMap::new();
    Ok(wants
        .iter()
        .map(|w| {
            let j = rank.entry((&*w.scope, w.subject.as_str())).or_insert(0);
            *j += 1;
            match rows.get(&(w.scope.to_string(), w.subject.clone())) {
                // The j-th spend of this key in the batch: granted while base + j <= lim.
                Some(r) if i64::from(r.base) + i64::from(*j) <= i64::from(r.lim) => {
                    Spend::Spent(Ticket {
                        scope: w.scope.to_string(),
                        subject: w.subject.clone(),
                        day: r.day,
                        remaining: u32::try_from(r.lim - r.base - *j).unwrap_or(0),
                        limit: u32::try_from(r.lim).unwrap_or(0),
                    })
                }
                Some(r) => Spend::Exhausted {
                    limit: u32::try_from(r.lim).unwrap_or(0),
                    retry_after,
                },
                // No row even after creating it (deleted meanwhile): nothing counted.
                None => Spend::Exhausted {
                    limit: u32::try_from(w.limit).unwrap_or(0),
                    retry_after,
                },
            }
        })
        .collect())
}

/// Runs the batch statement once; rows by key.
async fn statement(
    core: &Core,
    conn: &mut PgConnection,
    wants: &[&Want],
) -> Result<HashMap<(String, String), Row>, sqlx::Error> {
    let scopes: Vec<&str> = wants.iter().map(|w| &*w.scope).collect();
    let subjects: Vec<&str> = wants.iter().map(|w| w.subject.as_str()).collect();
    let limits: Vec<i32> = wants.iter().map(|w| w.limit).collect();
    let spend = if core.async_commit {
        &core.sql.spend_async
    } else {
        &core.sql.spend
    };
    let rows = sqlx::query_as::<_, Row>(spend.clone())
        .bind(&scopes)
        .bind(&subjects)
        .bind(&limits)
        .bind(&core.tier_names)
        .bind(&core.tier_limits)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.s.clone(), r.u.clone()), r))
        .collect())
}
