"""Where an admission script call's time goes in Redis, piece by piece.

    bench/.venv/bin/python bench/call_cost.py [--calls 3000] [--rounds 3]

Loads lua/admission_lib.lua into a fresh redis-server as a Functions library, with probe
functions beside it, and times each (`INFO commandstats`, best of the rounds): an empty `FCALL`;
`begin` alone (every admission call starts with it); each command the way the scripts send it,
on keys shaped as in a busy queue (20 per call, so the call's own cost is spread thin); and the
Lua operations a request costs. What a grant costs by how many requests a call carries is
bench/script_cost.py's; this tells what a call is made of.
"""
import argparse
import os
import sys

from scratch_redis import scratch_redis

T = "{h}"
GLOBAL = T + ":lease:global"
ARGV = [T, "0", "20", "30000", "3000", "1", "r1", "5000"]
# A waiter id as the replicas make them (`<replica>.<random>.<budget ms>`), arrival seqs in µs and
# expiries in ms of Redis time.
ID = "0123456789abcdef." + "0" * 31 + "1.600000"
SEQ, EXPIRY = "1765000000000001", "1765000030000"
REPEAT = 20

# name -> Lua statement, run REPEAT times per call.
COMMANDS = {
    "TIME": "redis.call('TIME')",
    "GET (missing)": f"redis.call('GET', '{T}:peak:1')",
    "ZCARD": f"redis.call('ZCARD', '{T}:fq:0')",
    "ZMSCORE (missing key)": f"redis.call('ZMSCORE', '{T}:fl', '{ID}')",
    "ZSCORE": f"redis.call('ZSCORE', '{T}:replicas', '0123456789abcdef')",
    "ZCOUNT": f"redis.call('ZCOUNT', GLOBAL, '(1765000000000', '+inf')",
    "ZADD": f"redis.call('ZADD', '{T}:fq:0', '{SEQ}', '{ID}')",
    "ZREM (missing member)": f"redis.call('ZREM', '{T}:fq:0', 'x')",
    "ZRANGE 0 0 WITHSCORES": f"redis.call('ZRANGE', '{T}:fq:0', '0', '0', 'WITHSCORES')",
    "ZRANGE 0 0": f"redis.call('ZRANGE', '{T}:fq:0', '0', '0')",
    "PEXPIRE GT": f"redis.call('PEXPIRE', '{T}:fq:0', '600000', 'GT')",
    "SET PX GET": f"redis.call('SET', '{T}:fence', '{SEQ}', 'PX', '86400000', 'GET')",
    "HSET": f"redis.call('HSET', '{T}:grants:r1', '{ID}', 'g {ID} {SEQ} {EXPIRY}')",
    "HDEL (missing field)": f"redis.call('HDEL', '{T}:grants:r1', 'x')",
    "PUBLISH (no subscriber)": f"redis.call('PUBLISH', '{T}:ch:r1', 'g {ID} {SEQ} {EXPIRY}')",
}
LUA = {
    "string.match, unanchored": f"string.match('{ID}', '%.(%d+)$')",
    "string.match, anchored": f"string.match('{ID}', '^([^.]+)%.[^.]+%.(%d+)$')",
    "tonumber": f"tonumber('{SEQ}')",
    "string.format('%d')": f"string.format('%d', {SEQ})",
    "concat of three": f"ID .. ' ' .. '{SEQ}'",
    "new table": "{}",
}


def library():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "lua", "admission_lib.lua")) as f:
        lib = "#!lua name=call_cost\n" + f.read() + "\n"
    lib += f"local GLOBAL, ID = '{GLOBAL}', '{ID}'\n"
    lib += "redis.register_function('p_empty', function(KEYS, ARGV) return 0 end)\n"
    lib += ("redis.register_function('p_begin', function(KEYS, ARGV) begin(KEYS, ARGV) "
            "return 0 end)\n")
    probes = {}
    for i, (name, stmt) in enumerate(list(COMMANDS.items()) + list(LUA.items())):
        fn = f"p{i}"
        probes[name] = fn
        body = stmt if name in COMMANDS else f"local x = {stmt}"
        lib += (f"redis.register_function('{fn}', function(KEYS, ARGV) "
                f"for i = 1, {REPEAT} do {body} end return 0 end)\n")
    return lib, probes


def busy_queue(r):
    """Keys as a queue of 44 waiters and 20 leases leaves them (listpacks, like the real ones)."""
    r.zadd(T + ":fq:0", {f"0123456789abcdef.{i:032x}.600000": int(SEQ) + i for i in range(44)})
    r.pexpire(T + ":fq:0", 600000)
    r.zadd(GLOBAL, {f"0123456789abcdef.{i + 100:032x}.600000": 1965000000000 for i in range(20)})
    r.zadd(T + ":replicas", {"0123456789abcdef": 1965000000000})
    r.hset(T + ":grants:r1", "a", "b")


def time_fn(r, fn, calls, rounds):
    """µs per call of function `fn`, best of `rounds`."""
    best = float("inf")
    for _ in range(rounds):
        r.config_resetstat()
        p = r.pipeline(transaction=False)
        for i in range(calls):
            p.fcall(fn, 1, GLOBAL, *ARGV)
            if i % 500 == 499:
                p.execute()
        p.execute()
        best = min(best, r.info("commandstats")["cmdstat_fcall"]["usec"] / calls)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    lib, probes = library()
    with scratch_redis() as (r, _):
        r.function_load(lib, replace=True)
        busy_queue(r)
        empty = time_fn(r, "p_empty", a.calls, a.rounds)
        print(f"{'an empty FCALL (1 key, 8 args)':<34} {empty:6.2f} us per call")
        begin = time_fn(r, "p_begin", a.calls, a.rounds) - empty
        print(f"{'begin (every admission call)':<34} {begin:6.2f} us per call")
        for title, table in (("command from Lua (redis.call and its reply included)", COMMANDS),
                             ("Lua operation", LUA)):
            print(f"-- per {title}")
            for name in table:
                us = (time_fn(r, probes[name], a.calls, a.rounds) - empty) / REPEAT
                print(f"{name:<34} {us:6.2f} us")


if __name__ == "__main__":
    sys.exit(main())
