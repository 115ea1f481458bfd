"""Python peer for the side-by-side benchmarks, driven by bench/run.

Prints one JSON line, same fields as crates/limiter-core/benches/scenarios.rs.

python limits_runner.py --scenario window|deny --strategy moving|fixed [--hiredis on|off]
    --concurrency N --secs S --redis URL --prefix P [--keys 10000]

`limits` with its asyncio API (limits.aio) and the redis-py asyncio client
(implementation="redispy"; its default async client is coredis, not installed here):
concurrency N = N asyncio tasks on one event loop sharing the storage's connection pool.
- moving: MovingWindowRateLimiter, an exact moving window (a Redis list log per key, Lua).
- fixed: FixedWindowRateLimiter (INCR + EXPIRE).
deny: `limits` has no local cache of keys over their limit: every denial is a Redis call.
--hiredis: redis-py's reply parser. `on` is redis-py's default when the `hiredis` package is
installed (the compiled parser, `_AsyncHiredisParser`); `off` passes the pure-Python parser
(`_AsyncRESP2Parser`) as the connection's `parser_class`, which `limits` forwards to
`redis.asyncio.Redis.from_url`. Both are documented configurations; bench/run measures both.
"""

import argparse
import asyncio
import json
import random
import time

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser
from redis.utils import HIREDIS_AVAILABLE


def pct(s, p):
    return s[round((len(s) - 1) * p)] if s else 0


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="window")
    ap.add_argument("--strategy", default="moving")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--secs", type=float, default=3)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--prefix", default="bench")
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--hiredis", choices=["on", "off"], default="on")
    a = ap.parse_args()
    if a.hiredis == "on" and not HIREDIS_AVAILABLE:
        raise SystemExit("--hiredis on: the hiredis package is not installed")
    parser = _AsyncHiredisParser if a.hiredis == "on" else _AsyncRESP2Parser

    uri = "async+" + a.redis
    storage = RedisStorage(uri, implementation="redispy", key_prefix=a.prefix + ":limits",
                           max_connections=max(a.concurrency, 2), parser_class=parser)
    cls = MovingWindowRateLimiter if a.strategy == "moving" else FixedWindowRateLimiter
    limiter = cls(storage)

    if a.scenario == "window":
        item = RateLimitItemPerMinute(100)

        async def op():
            return await limiter.hit(item, str(random.randrange(a.keys)))
    elif a.scenario == "deny":
        item = RateLimitItemPerMinute(5)
        ip = "203.0.113.7"
        for _ in range(6):
            await limiter.hit(item, ip)

        async def op():
            return not await limiter.hit(item, ip)
    else:
        raise SystemExit(f"unknown --scenario {a.scenario}")

    warm = time.monotonic() + 0.3
    warm_ops = [0]

    async def warmup():
        while time.monotonic() < warm:
            await op()
            warm_ops[0] += 1

    await asyncio.gather(*(warmup() for _ in range(a.concurrency)))

    lats, counted = [], [0]
    t0 = time.perf_counter()
    end = t0 + a.secs

    async def loop():
        lat = []
        while True:
            t = time.perf_counter()
            if t >= end:
                break
            if await op():
                counted[0] += 1
            lat.append((time.perf_counter() - t) * 1e6)
        lats.append(lat)

    await asyncio.gather(*(loop() for _ in range(a.concurrency)))
    elapsed = time.perf_counter() - t0
    allv = sorted(x for lat in lats for x in lat)
    print(json.dumps({
        "runner": f"limits-{a.strategy}", "variant": f"hiredis {a.hiredis}",
        "scenario": a.scenario, "c": a.concurrency,
        "ops": len(allv), "warm_ops": warm_ops[0], "counted": counted[0], "secs": elapsed,
        "ops_per_sec": len(allv) / elapsed, "p50_us": pct(allv, 0.5), "p90_us": pct(allv, 0.9),
        "p99_us": pct(allv, 0.99), "p999_us": pct(allv, 0.999),
    }))


if __name__ == "__main__":
    asyncio.run(main())
