//! Where the counts live, and the statements over it.
//!
//! One row per key holds the day it counts and the units used on that day; a spend on a new day
//! starts the row again at one. A key is a *scope* (which quota: a route, a product) and a
//! *subject* (who: a user). A table without a scope column holds one quota: its scope is always
//! the empty string. The limit of a key is its row's own override if the table has one, else its
//! tier's limit from the store's tier table if the table has a tier column, else the limit the
//! caller passes with the spend.
//!
//! Column names are built into the statements once, when the store is made; they must be plain
//! identifiers ([`TableError`] otherwise), so no name can change a statement's meaning.

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use crate::day::TODAY;
use crate::error::TableError;

/// The layout of the table that keeps the counts.
///
/// ```
/// use daily_quota::Table;
///
/// // A table of the store's own (created by `QuotaStore::create_table`).
/// let own = Table::own("api_daily_usage")?;
/// // An existing table of user profiles: one quota per user, tiers and overrides in the row.
/// let profiles = Table::existing("user_profiles", "user_id", "usage_day", "queries_used")?
///     .tier_column("tier")?
///     .override_column("daily_limit_override")?
///     .touched_column("updated_at")?;
/// # let _ = (own, profiles);
/// # Ok::<(), daily_quota::TableError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    name: String,
    /// Which quota; `None`: the table holds one.
    scope: Option<String>,
    subject: String,
    day: String,
    used: String,
    tier: Option<String>,
    limit_override: Option<String>,
    /// Set to `now()` on every change (an audit column of the table's owner).
    touched: Option<String>,
    /// Created and purged of stale rows by the store.
    owned: bool,
}

fn ident(s: &str) -> Result<String, TableError> {
    let ok = s.len() <= 63
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(TableError(s.to_string()))
    }
}

impl Table {
    /// A table of the store's own, named `name`: columns `scope`, `subject`, `day`, `used`.
    /// [`crate::QuotaStore::create_table`] creates it, and
    /// [`crate::QuotaStore::purge_stale`] deletes rows no refund can reach any more.
    pub fn own(name: &str) -> Result<Table, TableError> {
        Ok(Table {
            name: ident(name)?,
            scope: Some("scope".into()),
            subject: "subject".into(),
            day: "day".into(),
            used: "used".into(),
            tier: None,
            limit_override: None,
            touched: None,
            owned: true,
        })
    }

    /// An existing table `name`, one quota per `subject` (its primary key or a unique column),
    /// `day` a `date` and `used` an `integer`. Rows of new subjects are inserted with only the
    /// subject set, so the other columns need defaults (`used` 0).
    pub fn existing(name: &str, subject: &str, day: &str, used: &str) -> Result<Table, TableError> {
        Ok(Table {
            name: ident(name)?,
            scope: None,
            subject: ident(subject)?,
            day: ident(day)?,
            used: ident(used)?,
            tier: None,
            limit_override: None,
            touched: None,
            owned: false,
        })
    }

    /// The row's tier (`text`), looked up in the store's tier table.
    pub fn tier_column(mut self, column: &str) -> Result<Table, TableError> {
        self.tier = Some(ident(column)?);
        Ok(self)
    }

    /// The row's own limit (`integer`, `NULL` for none), before its tier's.
    pub fn override_column(mut self, column: &str) -> Result<Table, TableError> {
        self.limit_override = Some(ident(column)?);
        Ok(self)
    }

    /// A `timestamptz` column set to `now()` on every change.
    pub fn touched_column(mut self, column: &str) -> Result<Table, TableError> {
        self.touched = Some(ident(column)?);
        Ok(self)
    }

    pub(crate) fn is_owned(&self) -> bool {
        self.owned
    }

    /// The scope of row alias `p` (or of the bare table with `p` empty).
    fn scope_of(&self, p: &str) -> String {
        match &self.scope {
            Some(c) if p.is_empty() => c.clone(),
            Some(c) => format!("{p}.{c}"),
            None => "''::text".into(),
        }
    }

    /// The limit of row `p`; `fallback` is the caller's limit, `$4`/`$5` the tier table.
    fn limit_of(&self, fallback: &str) -> String {
        let over = self
            .limit_override
            .as_ref()
            .map_or("NULL::int4".to_string(), |c| format!("p.{c}"));
        let tier = self
            .tier
            .as_ref()
            .map_or("NULL::text".to_string(), |c| format!("p.{c}"));
        format!(
            "COALESCE({over}, (SELECT t.lim FROM unnest($4::text[], $5::int4[]) AS t(name, lim) \
             WHERE t.name = {tier}), {fallback})"
        )
    }

    fn touch(&self) -> String {
        self.touched
            .as_ref()
            .map_or(String::new(), |c| format!(", {c} = now()"))
    }

    pub(crate) fn statements(&self) -> Statements {
        let (t, u, d, n) = (&self.name, &self.subject, &self.day, &self.used);
        let sp = self.scope_of("p");
        let touch = self.touch();
        // One statement per batch. `$1`, `$2`: scope and subject of each spend, in arrival order
        // (repeats allowed); `$3` each spend's caller limit; `$4`, `$5` the tier table. Rows are
        // locked in key order so batches sharing keys queue instead of deadlocking; each key's
        // row moves to `base + min(k, lim - base)` for its `k` spends. One row out per key that
        // has a row: usage before the batch (today's), limit, today.
        // `{relax}` is where the asynchronous variant turns the WAL flush off for this
        // statement's own transaction: `req` is never empty and is materialised once.
        let spend_with = |relax: &str| {
            format!(
                "WITH req AS (SELECT r.s, r.u, count(*)::int4 AS k, min(r.lim)::int4 AS dflt \
             FROM unnest($1::text[], $2::text[], $3::int4[]) AS r(s, u, lim){relax} \
             GROUP BY r.s, r.u), \
             cur AS MATERIALIZED (SELECT {sp} AS s, p.{u} AS u, \
             CASE WHEN p.{d} = {TODAY} THEN p.{n} ELSE 0 END AS base, {lim} AS lim \
             FROM {t} AS p JOIN req AS q ON q.s = {sp} AND q.u = p.{u} \
             ORDER BY 1, 2 FOR UPDATE OF p), \
             upd AS (UPDATE {t} AS p SET {n} = c.base + LEAST(r.k, c.lim - c.base), \
             {d} = {TODAY}{touch} FROM cur AS c JOIN req AS r ON r.s = c.s AND r.u = c.u \
             WHERE {sp} = c.s AND p.{u} = c.u AND c.base < c.lim RETURNING 1) \
             SELECT c.s, c.u, c.base, c.lim, {TODAY} AS day FROM cur AS c",
                lim = self.limit_of("q.dflt"),
            )
        };
        let spend = spend_with("");
        // `set_config(…, true)` lasts until the end of the statement's implicit transaction,
        // whose commit reads it: one round trip, where `BEGIN; SET LOCAL …; …; COMMIT` takes
        // four.
        let spend_async =
            spend_with(" WHERE set_config('synchronous_commit', 'off', true) = 'off'");
        // Rows for first-time keys (`$1`, `$2` distinct), in the order the batch locks rows.
        let create = match &self.scope {
            Some(s) => format!(
                "INSERT INTO {t} ({s}, {u}) SELECT k.s, k.u FROM unnest($1::text[], $2::text[]) \
                 AS k(s, u) ORDER BY 1, 2 ON CONFLICT ({s}, {u}) DO NOTHING"
            ),
            None => format!(
                "INSERT INTO {t} ({u}) SELECT k.u FROM unnest($1::text[], $2::text[]) AS k(s, u) \
                 ORDER BY 1 ON CONFLICT ({u}) DO NOTHING"
            ),
        };
        let s = self.scope_of("");
        // Only on the day spent on, never below zero: a refund after midnight cannot eat into
        // the new day.
        let refund = format!(
            "UPDATE {t} SET {n} = {n} - 1{touch} \
             WHERE {s} = $1 AND {u} = $2 AND {d} = $3 AND {n} > 0"
        );
        let usage = format!(
            "SELECT CASE WHEN p.{d} = {TODAY} THEN p.{n} ELSE 0 END AS used, {lim} AS lim \
             FROM {t} AS p WHERE {sp} = $1 AND p.{u} = $2",
            lim = self.limit_of("$3"),
        );
        let create_table = format!(
            "CREATE TABLE IF NOT EXISTS {t} (scope text NOT NULL, subject text NOT NULL, \
             day date NOT NULL DEFAULT {TODAY}, used integer NOT NULL DEFAULT 0 CHECK (used >= 0), \
             PRIMARY KEY (scope, subject))"
        );
        // A late refund looks one day back at most.
        let purge = format!("DELETE FROM {t} WHERE {d} < {TODAY} - 1");
        Statements {
            spend: sql(spend),
            spend_async: sql(spend_async),
            create: sql(create),
            refund: sql(refund),
            usage: sql(usage),
            create_table: sql(create_table),
            purge: sql(purge),
            lock_name: t.clone(),
        }
    }
}

fn sql(s: String) -> SqlStr {
    // Built from checked identifiers and constant text only.
    AssertSqlSafe(std::sync::Arc::<str>::from(s)).into_sql_str()
}

/// The statements of one table, built once.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub spend: SqlStr,
    /// `spend` committed without waiting for its WAL flush.
    pub spend_async: SqlStr,
    pub create: SqlStr,
    pub refund: SqlStr,
    pub usage: SqlStr,
    pub create_table: SqlStr,
    pub purge: SqlStr,
    /// Names the advisory lock that serialises creating the table.
    pub lock_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_accepted() {
        assert!(Table::own("quota_2").is_ok());
        for bad in ["", "2x", "a b", "a;drop", "A", "x\"y", &"a".repeat(64)] {
            assert_eq!(Table::own(bad), Err(TableError(bad.to_string())), "{bad}");
        }
        let t = Table::existing("p", "u", "d", "n").and_then(|t| t.tier_column("t-1"));
        assert!(t.is_err());
    }
}
