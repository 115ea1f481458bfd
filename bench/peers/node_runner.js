#!/usr/bin/env node
// Node peers for the side-by-side benchmarks, driven by bench/run.
// Prints one JSON line, same fields as crates/limiter-core/benches/scenarios.rs.
//
// node node_runner.js --scenario window|deny|lease|lease-try|handoff-holder|handoff-waiter
//     --concurrency N --secs S --redis URL --prefix P [--keys 10000] [--cap 20] [--n 200] [--retry 10]
//     [--autopipeline on|off]
//
// --autopipeline: ioredis's `enableAutoPipelining` (the documented way to batch concurrent calls
//   into one write); off is ioredis's default. Both are documented configurations of both peers and
//   neither is faster everywhere, so bench/run measures each peer with both.
// window, deny: rate-limiter-flexible RateLimiterRedis (fixed window: INCRBY + EXPIRE in one Lua
//   call).
//   deny uses inMemoryBlockOnConsumed = points (its documented in-memory block of keys over limit).
// lease, lease-try, handoff-*: redis-semaphore Semaphore (sorted set of holders, client clock),
//   acquire() polls every retryInterval ms (default 10) until a slot is free.
'use strict';

const Redis = require('ioredis');
const { RateLimiterRedis } = require('rate-limiter-flexible');
const { Semaphore } = require('redis-semaphore');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const a = {
  scenario: arg('--scenario', 'window'),
  c: Number(arg('--concurrency', 1)),
  secs: Number(arg('--secs', 3)),
  redis: arg('--redis', 'redis://127.0.0.1:6379'),
  prefix: arg('--prefix', 'bench'),
  keys: Number(arg('--keys', 10000)),
  cap: Number(arg('--cap', 20)),
  n: Number(arg('--n', 200)),
  retry: Number(arg('--retry', 10)),
  autopipeline: arg('--autopipeline', 'on'),
};
if (!['on', 'off'].includes(a.autopipeline)) throw new Error('--autopipeline on|off');
const variant = `autopipeline ${a.autopipeline}`;

const wallUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function pct(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.round((sorted.length - 1) * p)];
}

// Runs op(i) in `c` concurrent loops for `secs` after a 300 ms warm-up; latency in µs.
async function drive(op, extra = {}) {
  const warm = Date.now() + 300;
  let warmOps = 0;
  await Promise.all(Array.from({ length: a.c }, async (_, i) => {
    while (Date.now() < warm) { await op(i); warmOps++; }
  }));
  let counted = 0;
  const lats = [];
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(Math.round(a.secs * 1e9));
  await Promise.all(Array.from({ length: a.c }, async (_, i) => {
    const lat = [];
    for (;;) {
      const t = process.hrtime.bigint();
      if (t >= end) break;
      if (await op(i)) counted++;
      lat.push(Number(process.hrtime.bigint() - t) / 1000);
    }
    lats.push(lat);
  }));
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const all = Float64Array.from(lats.flat()).sort();
  console.log(JSON.stringify({
    runner: extra.runner, scenario: a.scenario, c: a.c, ops: all.length, warm_ops: warmOps, counted,
    secs: elapsed, ops_per_sec: all.length / elapsed, variant,
    p50_us: pct(all, 0.5), p90_us: pct(all, 0.9), p99_us: pct(all, 0.99), p999_us: pct(all, 0.999),
    ...extra,
  }));
}

async function window(redis) {
  const rl = new RateLimiterRedis({
    storeClient: redis, keyPrefix: `${a.prefix}:rlf`, points: 100, duration: 60,
  });
  await drive(async () => {
    const key = String(Math.floor(Math.random() * a.keys));
    try { await rl.consume(key); return true; } catch (e) {
      if (e instanceof Error) throw e;
      return false; // RateLimiterRes: denied
    }
  }, { runner: 'rate-limiter-flexible' });
}

async function deny(redis) {
  const rl = new RateLimiterRedis({
    storeClient: redis, keyPrefix: `${a.prefix}:rlf`, points: 5, duration: 60,
    inMemoryBlockOnConsumed: 5, // block in memory until the window ends once 5 are consumed
  });
  const ip = '203.0.113.7';
  for (let i = 0; i < 6; i++) await rl.consume(ip).catch(() => {});
  await drive(async () => {
    try { await rl.consume(ip); return false; } catch (e) {
      if (e instanceof Error) throw e;
      return true;
    }
  }, { runner: 'rate-limiter-flexible' });
}

async function lease(redis, tryOnly) {
  const opts = { lockTimeout: 15000, acquireTimeout: 30000, retryInterval: a.retry };
  const key = `${a.prefix}:sem`;
  await drive(async () => {
    const s = new Semaphore(redis, key, a.cap, opts);
    if (tryOnly) {
      if (!(await s.tryAcquire())) return false;
    } else {
      await s.acquire();
    }
    await s.release();
    return true;
  }, { runner: `redis-semaphore`, retry_ms: a.retry });
}

async function handoff(redis, holder) {
  const sync = new Redis(a.redis); // BLPOP blocks its connection: not the measured one
  const k = (s) => `${a.prefix}:sync:${s}`;
  const opts = { lockTimeout: 15000, acquireTimeout: 30000, retryInterval: a.retry };
  const key = `${a.prefix}:handoff`;
  const lat = [];
  for (let i = 0; i < a.n; i++) {
    const s = new Semaphore(redis, key, 1, opts);
    if (holder) {
      await s.acquire();
      await sync.rpush(k('held'), i);
      await sync.blpop(k('ready'), 30);
      await sleep(2 + Math.random() * 10);
      const t0 = wallUs();
      await s.release();
      await sync.rpush(k('released'), t0);
      // Without this the holder's next acquire() usually wins the slot back before the poller's
      // next attempt (no queue order), and the waiter starves.
      await sync.blpop(k('done'), 30);
    } else {
      await sync.blpop(k('held'), 30);
      // acquire() makes its first attempt at once (refused: the holder sleeps >= 2 ms), then polls.
      await sync.rpush(k('ready'), 1);
      await s.acquire();
      const t1 = wallUs();
      const [, t0] = await sync.blpop(k('released'), 30);
      lat.push(Math.max(0, t1 - Number(t0)));
      await s.release();
      await sync.rpush(k('done'), 1);
    }
  }
  sync.disconnect();
  if (!holder) {
    lat.sort((x, y) => x - y);
    console.log(JSON.stringify({
      runner: 'redis-semaphore', scenario: 'handoff', retry_ms: a.retry, n: lat.length, variant,
      p50_us: pct(lat, 0.5), p90_us: pct(lat, 0.9), p99_us: pct(lat, 0.99), max_us: lat[lat.length - 1],
    }));
  }
}

async function main() {
  const redis = new Redis(a.redis, { enableAutoPipelining: a.autopipeline === 'on' });
  switch (a.scenario) {
    case 'window': await window(redis); break;
    case 'deny': await deny(redis); break;
    case 'lease': await lease(redis, false); break;
    case 'lease-try': await lease(redis, true); break;
    case 'handoff-holder': await handoff(redis, true); break;
    case 'handoff-waiter': await handoff(redis, false); break;
    default: throw new Error(`unknown --scenario ${a.scenario}`);
  }
  redis.disconnect();
}

main().catch((e) => { console.error(e); process.exit(1); });
