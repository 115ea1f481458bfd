//! Lockstep: seeded random operation sequences run against the real admission scripts on a real
//! Redis (own key prefix) and against the model's `Store`; after every step the replies, the
//! messages pushed and the whole observable state must agree. A script change the model does not
//! mirror fails here.
//!
//! A queue without per-user limits (user cap 0 to the scripts) runs against the model with caps
//! no user reaches: the same replies, messages, global scope, class queues and records, from a
//! layout with no user dimension.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use admission_model::{
    Entered, Flaw, Id, Left, Msg, Params, Published, Replica, Store, User, Waiter,
};
use limiter_core::scripts::{
    ADMISSION_ADOPT, ADMISSION_ENTER, ADMISSION_HEARTBEAT, ADMISSION_LEAVE, ADMISSION_RECLAIM,
    ADMISSION_RELEASE, ADMISSION_RENEW, ADMISSION_RESET, ADMISSION_STATS, LuaScript,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Commands;

const USERS: u8 = 3;
const REPLICAS: u8 = 2;
/// Long enough that nothing expires by the clock during a run: expiry is a step of its own,
/// done by moving the score into the past (which is what the clock would do).
const TTL_MS: u64 = 600_000;
const STEPS: usize = 160;

/// One random step.
#[derive(Debug, Clone)]
enum Op {
    Enter {
        id: Id,
        user: User,
        replica: Replica,
        class: u8,
    },
    Release(Id),
    Renew(Id),
    Leave(Id),
    Heartbeat(Replica),
    Stats,
    Reclaim,
    Reset,
    AdoptAll(Vec<Id>),
    AdoptChecked {
        id: Id,
        user: User,
        replica: Replica,
    },
    ExpireLease(Id),
    ExpireReplica(Replica),
    ExpireRecord(Id),
    RestartEmpty,
}

struct Real<'a> {
    con: redis::Connection,
    /// Subscribed to every replica's channel for the whole run (dropping it unsubscribes).
    sub: redis::PubSub<'a>,
    t: String,
    base: Vec<String>,
    /// Applied to every script's source before it runs (a deliberate bug), if any.
    mutation: Option<(&'static str, &'static str)>,
    /// No per-user limits: the scripts are given user cap 0.
    flat: bool,
    /// The arrival seq given to the next waiter whose budget is made to run out: below every
    /// real seq and every earlier such one, and far enough in the past for any budget.
    expired_seq: u64,
}

/// Ends with the waiter's budget in ms, as the queue needs.
fn lease_id(id: Id, replica: Replica) -> String {
    format!("r{replica}.w{id}.{TTL_MS}")
}

fn id_of(s: &str) -> Id {
    s.split(".w")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad id {s}"))
}

impl Real<'_> {
    fn user_key(&self, u: User) -> String {
        format!("{}:lease:u{u}", self.t)
    }

    fn eval<T: redis::FromRedisValue>(&mut self, s: &LuaScript, extra: &[String]) -> T {
        let mut cmd = redis::cmd("EVAL");
        let source = match self.mutation {
            Some((from, to)) => s.source().replacen(from, to, 1),
            None => s.source().to_string(),
        };
        cmd.arg(source)
            .arg(1)
            .arg(format!("{}:lease:global", self.t));
        cmd.arg(&self.base).arg(extra);
        cmd.query(&mut self.con)
            .unwrap_or_else(|e| panic!("{}: {e}", s.name()))
    }

    /// Every message pushed since the last call, in order: a marker published after the step
    /// arrives after them (one connection's messages are delivered in order).
    fn published(&mut self) -> Vec<Published> {
        let marker = format!("{}:ch:marker", self.t);
        let _: i64 = self.con.publish(&marker, "m").unwrap();
        let ps = &mut self.sub;
        let mut got = Vec::new();
        loop {
            let m = ps.get_message().expect("pub/sub message within 10 s");
            let channel = m.get_channel_name().to_string();
            if channel == marker {
                return got;
            }
            let body: String = m.get_payload().unwrap();
            let replica: Replica = channel.rsplit(":ch:r").next().unwrap().parse().unwrap();
            // One message carries a dispatch's grants for a replica.
            for line in body.split('\n') {
                let mut parts = line.split(' ');
                let kind = parts.next().unwrap();
                let id = id_of(parts.next().unwrap());
                got.push((
                    replica,
                    if kind == "g" {
                        Msg::Grant(id)
                    } else {
                        Msg::Reset(id)
                    },
                ));
            }
        }
    }

    /// Deletes every key of this run (what a Redis restarted empty would have lost).
    fn wipe(&mut self) {
        let keys: Vec<String> = self
            .con
            .scan_match::<_, String>(format!("{}*", self.t))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = self.con.del(keys).unwrap();
        }
    }

    fn zset(&mut self, key: &str) -> Vec<(String, f64)> {
        self.con.zrange_withscores(key, 0, -1).unwrap()
    }

    fn queue_key(&self, class: u8) -> String {
        let head = if self.flat { "fq" } else { "q2" };
        format!("{}:{head}:{class}", self.t)
    }

    /// A waiter's record is its queue entry while its budget lasts (its id carries the budget,
    /// counted from the entry's seq); a leave's mark is an entry of `T:fl` until its score (ms).
    /// Either score is Redis time (µs or ms) while live, and at most `expired_seq` once made to
    /// run out (see expire_budget).
    fn has_record(&mut self, id: &str, classes: u8) -> bool {
        let mut keys = vec![format!("{}:fl", self.t)];
        keys.extend((0..classes).map(|c| self.queue_key(c)));
        keys.iter().any(|k| {
            let score: Option<f64> = self.con.zscore(k, id).unwrap();
            score.is_some_and(|s| s > 1e10)
        })
    }
}

/// The model's state as the Redis keys would show it, and Redis's, side by side.
fn compare(
    real: &mut Real,
    m: &Store,
    p: &Params,
    ids: &BTreeMap<Id, (User, Replica, u8)>,
    ctx: &str,
) {
    let live = |score: f64| score > 1.0;
    // Global scope and holders.
    let global: BTreeMap<Id, bool> = real
        .zset(&format!("{}:lease:global", real.t))
        .into_iter()
        .map(|(k, s)| (id_of(&k), live(s)))
        .collect();
    let want: BTreeMap<Id, bool> = m
        .leases
        .iter()
        .filter(|(_, l)| l.in_global)
        .map(|(i, l)| (*i, l.live))
        .collect();
    assert_eq!(global, want, "{ctx}: global leases (id -> live)");
    if !real.flat {
        compare_users(real, m, p, ctx);
    }
    for c in 0..p.classes {
        let key = real.queue_key(c);
        let got: Vec<Id> = real.zset(&key).iter().map(|(k, _)| id_of(k)).collect();
        let want: Vec<Id> = m.queues[usize::from(c)].iter().map(|w| w.id).collect();
        assert_eq!(got, want, "{ctx}: queue of class {c}");
    }
    // Waiter records.
    for (&id, &(_, r, _)) in ids {
        let exists = real.has_record(&lease_id(id, r), p.classes);
        assert_eq!(
            exists,
            m.records.contains(&id),
            "{ctx}: record of waiter {id}"
        );
    }
    // Registry and recorded grants.
    let reg: BTreeMap<Replica, bool> = real
        .zset(&format!("{}:replicas", real.t))
        .into_iter()
        .map(|(k, s)| (k.trim_start_matches('r').parse().unwrap(), live(s)))
        .collect();
    assert_eq!(reg, m.replicas, "{ctx}: registry");
    for r in 0..REPLICAS {
        let got: BTreeSet<Id> = real
            .con
            .hkeys::<_, Vec<String>>(format!("{}:grants:r{r}", real.t))
            .unwrap()
            .iter()
            .map(|k| id_of(k))
            .collect();
        let want = m.grants.get(&r).cloned().unwrap_or_default();
        assert_eq!(got, want, "{ctx}: grants recorded for replica {r}");
    }
}

/// The per-user layout: holders, user scopes, per-user queues and ready sets.
fn compare_users(real: &mut Real, m: &Store, p: &Params, ctx: &str) {
    let live = |score: f64| score > 1.0;
    let holders: BTreeMap<String, String> =
        real.con.hgetall(format!("{}:holders", real.t)).unwrap();
    let holders: BTreeMap<Id, String> = holders.into_iter().map(|(k, v)| (id_of(&k), v)).collect();
    let want: BTreeMap<Id, String> = m
        .leases
        .iter()
        .filter(|(_, l)| l.in_global)
        .map(|(i, l)| (*i, real.user_key(l.user)))
        .collect();
    assert_eq!(holders, want, "{ctx}: holders");
    for u in 0..USERS {
        let key = real.user_key(u);
        let got: BTreeMap<Id, bool> = real
            .zset(&key)
            .into_iter()
            .map(|(k, s)| (id_of(&k), live(s)))
            .collect();
        let want: BTreeMap<Id, bool> = m
            .leases
            .iter()
            .filter(|(_, l)| l.in_user && l.user == u)
            .map(|(i, l)| (*i, l.live))
            .collect();
        assert_eq!(got, want, "{ctx}: leases of user {u}");
    }
    // Queues per user, in order; the ready sets when no expired lease awaits reclaiming (they
    // are a cache refreshed when leases are reclaimed).
    let expired_pending = m.leases.values().any(|l| !l.live);
    for c in 0..p.classes {
        for u in 0..USERS {
            let got: Vec<Id> = real
                .zset(&format!("{}:uq2:{c}:u{u}", real.t))
                .iter()
                .map(|(k, _)| id_of(k))
                .collect();
            let want: Vec<Id> = m.queues[usize::from(c)]
                .iter()
                .filter(|w| w.user == u)
                .map(|w| w.id)
                .collect();
            assert_eq!(got, want, "{ctx}: queue of class {c}, user {u}");
        }
        if !expired_pending && p.flaw.is_none() {
            let got: BTreeSet<String> = real
                .con
                .zrange(format!("{}:ready2:{c}", real.t), 0, -1)
                .unwrap();
            let want: BTreeSet<String> = m.queues[usize::from(c)]
                .iter()
                .filter(|w| m.user_in_use(w.user) < p.user_cap)
                .map(|w| format!("u{}", w.user))
                .collect();
            assert_eq!(got, want, "{ctx}: ready users of class {c}");
        }
    }
}

fn random_op(
    rng: &mut StdRng,
    next: &mut Id,
    ids: &BTreeMap<Id, (User, Replica, u8)>,
    p: &Params,
) -> Op {
    let known: Vec<Id> = ids.keys().copied().collect();
    let pick = |rng: &mut StdRng| known[rng.random_range(0..known.len())];
    let roll = rng.random_range(0..100);
    if known.is_empty() || roll < 30 {
        *next += 1;
        return Op::Enter {
            id: *next,
            user: rng.random_range(0..USERS),
            replica: rng.random_range(0..REPLICAS),
            class: rng.random_range(0..p.classes),
        };
    }
    match roll {
        30..48 => Op::Release(pick(rng)),
        48..53 => Op::Renew(pick(rng)),
        53..62 => Op::Leave(pick(rng)),
        62..70 => Op::Heartbeat(rng.random_range(0..REPLICAS)),
        70..72 => Op::Stats,
        72..74 => Op::Reclaim,
        // A reset finds users with waiters through the ready sets and the holders map; the flaw's
        // lease, left in its user's scope alone, can hold a user at its cap unseen by both.
        74 if p.flaw.is_some() => Op::Stats,
        74 => Op::Reset,
        75..78 => Op::AdoptAll((0..rng.random_range(1..3)).map(|_| pick(rng)).collect()),
        78..81 => {
            *next += 1;
            Op::AdoptChecked {
                id: *next,
                user: rng.random_range(0..USERS),
                replica: rng.random_range(0..REPLICAS),
            }
        }
        // With the flaw, a lease left in its user's scope expires there unseen by the ready sets
        // (nothing reclaims it), which the model does not mirror: no expiry then.
        81..89 if p.flaw.is_some() => Op::Stats,
        81..89 => Op::ExpireLease(pick(rng)),
        89..93 => Op::ExpireReplica(rng.random_range(0..REPLICAS)),
        93..98 => Op::ExpireRecord(pick(rng)),
        _ => Op::RestartEmpty,
    }
}

fn step(
    real: &mut Real,
    m: &mut Store,
    p: &Params,
    op: &Op,
    ids: &mut BTreeMap<Id, (User, Replica, u8)>,
    ctx: &str,
) -> Vec<Published> {
    let mut out = Vec::new();
    let s = |v: usize| v.to_string();
    match op {
        Op::Enter {
            id,
            user,
            replica,
            class,
        } => {
            ids.insert(*id, (*user, *replica, *class));
            let args = [
                lease_id(*id, *replica),
                real.user_key(*user),
                format!("r{replica}"),
                class.to_string(),
                s(p.max_queue),
                s(p.max_user_queue),
                s(usize::try_from(TTL_MS).unwrap()),
            ];
            let flat_args = [
                format!("r{replica}"),
                s(p.max_queue),
                lease_id(*id, *replica),
                class.to_string(),
            ];
            let got: Vec<i64> = if real.flat {
                real.eval(&ADMISSION_ENTER, &flat_args)
            } else {
                real.eval(&ADMISSION_ENTER, &args)
            };
            let want = m.enter(
                p,
                Waiter {
                    id: *id,
                    user: *user,
                    replica: *replica,
                },
                *class,
                &mut out,
            );
            let got = match got[0] {
                1 => Entered::Granted,
                0 => Entered::Queued(usize::try_from(got[1]).unwrap()),
                -1 => Entered::Full,
                -2 => Entered::UserFull,
                _ => Entered::Withdrawn,
            };
            assert_eq!(got, want, "{ctx}: enter reply");
        }
        Op::Release(id) => {
            let (u, r, _) = ids[id];
            let got: Vec<i64> =
                real.eval(&ADMISSION_RELEASE, &[lease_id(*id, r), real.user_key(u)]);
            let want = m.release(p, *id, &mut out);
            assert_eq!(got, [i64::from(want)], "{ctx}: release reply");
        }
        Op::Renew(id) => {
            let (u, r, _) = ids[id];
            let got: Vec<i64> = real.eval(&ADMISSION_RENEW, &[lease_id(*id, r), real.user_key(u)]);
            assert_eq!(got[0] == 1, m.renew(p, *id), "{ctx}: renew reply");
        }
        Op::Leave(id) => {
            let (u, r, c) = ids[id];
            let got: i64 = real.eval(
                &ADMISSION_LEAVE,
                &[
                    lease_id(*id, r),
                    real.user_key(u),
                    c.to_string(),
                    format!("r{r}"),
                ],
            );
            let want = match m.leave(p, *id, c, r, &mut out) {
                Left::Left => 0,
                Left::WasGranted => 1,
                Left::Unknown => 2,
            };
            assert_eq!(got, want, "{ctx}: leave reply");
        }
        Op::Heartbeat(r) => {
            // Every waiter seen so far is watched: queued ones have a position, the others 0.
            let mut args = vec![format!("r{r}")];
            for (id, (_, wr, c)) in ids.iter() {
                args.push(lease_id(*id, *wr));
                args.push(c.to_string());
            }
            let (grants, positions, live, _): (Vec<String>, Vec<i64>, i64, i64) =
                real.eval(&ADMISSION_HEARTBEAT, &args);
            let got: BTreeSet<Id> = grants
                .iter()
                .map(|g| id_of(g.split(' ').next().unwrap()))
                .collect();
            let want = m.heartbeat(p, *r, &mut out);
            assert_eq!(got, want, "{ctx}: heartbeat grants");
            let want: Vec<i64> = ids
                .iter()
                .map(|(id, (_, _, c))| i64::try_from(m.position(*id, usize::from(*c))).unwrap())
                .collect();
            assert_eq!(positions, want, "{ctx}: watched positions");
            assert_eq!(
                usize::try_from(live).unwrap(),
                m.replicas.len(),
                "{ctx}: live replicas"
            );
        }
        Op::Stats => {
            let got: Vec<i64> = real.eval(&ADMISSION_STATS, &[]);
            let (q, used, reps) = m.stats();
            let want: Vec<i64> = q
                .iter()
                .chain([&used, &reps])
                .map(|v| i64::try_from(*v).unwrap())
                .collect();
            assert_eq!(got, want, "{ctx}: stats");
        }
        Op::Reclaim => {
            let got: i64 = real.eval(&ADMISSION_RECLAIM, &[]);
            assert_eq!(
                usize::try_from(got).unwrap(),
                m.reclaim_dead(p, &mut out),
                "{ctx}: reclaim reply"
            );
        }
        Op::Reset => {
            let got: i64 = real.eval(&ADMISSION_RESET, &[]);
            assert_eq!(
                usize::try_from(got).unwrap(),
                m.reset(&mut out),
                "{ctx}: reset reply"
            );
        }
        Op::AdoptAll(list) => {
            let mut args = vec!["all".to_string()];
            let mut pairs = Vec::new();
            for id in list {
                let (u, r, _) = ids[id];
                args.push(lease_id(*id, r));
                args.push(real.user_key(u));
                pairs.push((*id, u, r));
            }
            let got: Vec<i64> = real.eval(&ADMISSION_ADOPT, &args);
            assert_eq!(
                usize::try_from(got[1]).unwrap(),
                m.adopt_all(&pairs),
                "{ctx}: adopt all reply"
            );
        }
        Op::AdoptChecked { id, user, replica } => {
            ids.insert(*id, (*user, *replica, 0));
            let args = [
                "checked".to_string(),
                lease_id(*id, *replica),
                real.user_key(*user),
            ];
            let got: Vec<i64> = real.eval(&ADMISSION_ADOPT, &args);
            let want = m.adopt_checked(p, *id, *user, *replica, &mut out);
            assert_eq!(got[1] == 1, want, "{ctx}: adopt checked reply");
        }
        Op::ExpireLease(id) => {
            let (u, r, _) = ids[id];
            let member = lease_id(*id, r);
            // XX: only a lease that is there can expire.
            let g = format!("{}:lease:global", real.t);
            let uk = real.user_key(u);
            let _: () = redis::pipe()
                .cmd("ZADD")
                .arg(&g)
                .arg("XX")
                .arg(1)
                .arg(&member)
                .ignore()
                .cmd("ZADD")
                .arg(&uk)
                .arg("XX")
                .arg(1)
                .arg(&member)
                .ignore()
                .query(&mut real.con)
                .unwrap();
            m.expire_lease(*id);
        }
        Op::ExpireReplica(r) => {
            let _: i64 = redis::cmd("ZADD")
                .arg(format!("{}:replicas", real.t))
                .arg("XX")
                .arg(1)
                .arg(format!("r{r}"))
                .query(&mut real.con)
                .unwrap();
            m.expire_replica(*r);
        }
        Op::ExpireRecord(id) => {
            expire_budget(real, m, *id, ids[id]);
            m.expire_record(*id);
        }
        Op::RestartEmpty => {
            real.wipe();
            *m = Store::new(p);
        }
    }
    out
}

/// A waiter's budget runs out, or a leave's mark expires. Redis time cannot be moved, so the
/// waiter's arrival is: its seq goes below every other (a budget counts from the arrival), which
/// puts it first in its queues; the model's queue is reordered the same way. That state is one
/// time could reach too: a waiter queued before all others whose budget runs out first.
fn expire_budget(
    real: &mut Real,
    m: &mut Store,
    id: Id,
    (user, replica, class): (User, Replica, u8),
) {
    let member = lease_id(id, replica);
    let _: i64 = redis::cmd("ZADD")
        .arg(format!("{}:fl", real.t))
        .arg("XX")
        .arg(1)
        .arg(&member)
        .query(&mut real.con)
        .unwrap();
    let queue = &mut m.queues[usize::from(class)];
    let Some(i) = queue.iter().position(|w| w.id == id) else {
        return;
    };
    let w = queue.remove(i);
    queue.insert(0, w);
    real.expired_seq -= 1;
    let seq = real.expired_seq;
    let mut keys = vec![real.queue_key(class)];
    if !real.flat {
        keys.push(format!("{}:uq2:{class}:u{user}", real.t));
    }
    for key in keys {
        let _: i64 = redis::cmd("ZADD")
            .arg(key)
            .arg("XX")
            .arg(seq)
            .arg(&member)
            .query(&mut real.con)
            .unwrap();
    }
    if !real.flat {
        // A ready user's score is its first waiter's seq, which this one is now.
        let _: i64 = redis::cmd("ZADD")
            .arg(format!("{}:ready2:{class}", real.t))
            .arg("XX")
            .arg(seq)
            .arg(format!("u{user}"))
            .query(&mut real.con)
            .unwrap();
    }
}

fn run(seed: u64, p: &Params, mutation: Option<(&'static str, &'static str)>, flat: bool) {
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let t = format!("{}:{{adm}}", testkit::unique_prefix("lockstep"));
    let mut sub_con = client.get_connection().unwrap();
    let mut sub = sub_con.as_pubsub();
    sub.psubscribe(format!("{t}:ch:*")).unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let base = vec![
        t.clone(),
        if flat { 0 } else { p.user_cap }.to_string(),
        p.global_cap.to_string(),
        TTL_MS.to_string(),
        TTL_MS.to_string(),
        p.classes.to_string(),
    ];
    let mut real = Real {
        con: client.get_connection().unwrap(),
        sub,
        t,
        base,
        mutation,
        flat,
        expired_seq: 1_000_000_000,
    };
    let mut model = Store::new(p);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ids = BTreeMap::new();
    let mut next: Id = 0;
    let mut trace = Vec::new();
    for i in 0..STEPS {
        if usize::from(next) > 240 {
            break;
        }
        let op = random_op(&mut rng, &mut next, &ids, p);
        trace.push(format!("{op:?}"));
        let ctx = format!(
            "seed {seed}, step {i} {op:?} (after {:?})",
            &trace[trace.len().saturating_sub(6)..trace.len() - 1]
        );
        let mut want = step(&mut real, &mut model, p, &op, &mut ids, &ctx);
        let mut got = real.published();
        // A dispatch's grants go in one message per replica: each replica's own stay in order.
        want.sort_by_key(|(r, _)| *r);
        got.sort_by_key(|(r, _)| *r);
        assert_eq!(got, want, "{ctx}: messages pushed");
        compare(&mut real, &model, p, &ids, &ctx);
    }
    real.wipe();
}

fn params(seed: u64, flaw: Option<Flaw>) -> Params {
    Params {
        user_cap: 1 + usize::try_from(seed % 2).unwrap(),
        global_cap: 2 + usize::try_from(seed % 3).unwrap(),
        classes: 1 + u8::try_from(seed % 3).unwrap(),
        max_queue: 6,
        max_user_queue: 3,
        flaw,
    }
}

#[test]
fn model_and_scripts_agree_step_by_step() {
    for seed in 0..30 {
        run(seed, &params(seed, None), None, false);
    }
}

/// No per-user limits: the model with caps no user reaches (3 users, 240 ids at most).
#[test]
fn model_and_scripts_without_per_user_limits_agree_step_by_step() {
    for seed in 0..30 {
        let p = Params {
            user_cap: 1000,
            max_user_queue: 1000,
            ..params(seed, None)
        };
        run(seed, &p, None, true);
    }
}

/// `Flaw::ReleaseForgetsUserCount` is the model of a script bug: a release (any drop of a lease)
/// that leaves it in its user's scope. With that bug put into the real scripts, the flawed model
/// agrees with them step by step, so what the checker finds on the flaw (tests/check.rs) is what
/// the broken script would do.
#[test]
fn the_flaw_the_checker_finds_is_the_broken_script() {
    let (good, broken) = (
        "redis.call('ZREM', user_key, id)\n  removed(user_key)",
        "removed(user_key)",
    );
    assert!(
        ADMISSION_RELEASE.source().contains(good),
        "drop_user_lease changed: update this test"
    );
    for seed in 0..8 {
        run(
            seed,
            &params(seed, Some(Flaw::ReleaseForgetsUserCount)),
            Some((good, broken)),
            false,
        );
    }
}
