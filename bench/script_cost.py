"""What admission's scripts cost Redis per grant, by how many requests each call carries.

    bench/.venv/bin/python bench/script_cost.py [--batch 1,4,16] [--grants 6000] [--rounds 3] \
        [--flat] [SOURCE ...]

A SOURCE is a directory of admission scripts (default: lua/) or a git revision, whose lua/ is
used. The scripts are loaded as a Functions library into a fresh redis-server, in the steady state
of `bench/scale`: a cap of 20 held, 980 users waiting (one waiter each, user cap 1), 30 replicas.
Each step releases K leases in one `admission_release` (its dispatch grants the K waiters first in
line) and enters their users again in one `admission_enter`; steps are pipelined, so Redis stays
busy, as under load. Printed per source and K, rounds alternating between sources: Redis's time
inside FCALL per grant (`INFO commandstats`, the scripts' own commands included) and the Redis
commands the scripts ran per grant. With 30 or more replicas each call carries about one request
(K = 1); with 3 replicas and 1,000 waiters, about four. `--flat`: a queue without per-user limits
(user cap 0: one global cap, the waiters' ids only in the class queue), the same waiters and steps.
"""
import argparse
import collections
import os
import subprocess
import sys

from scratch_redis import scratch_redis

SCRIPTS = ["admission_lib", "admission_enter", "admission_release", "admission_heartbeat"]
T = "{h}"
GLOBAL = T + ":lease:global"
# T, user cap, global cap, lease ttl ms, heartbeat ttl ms, classes
BASE = [T, "1", "20", "30000", "3000", "1"]
# The same without per-user limits.
BASE_FLAT = [T, "0", "20", "30000", "3000", "1"]
REPLICAS = 30
USERS = 1000


def sources_of(args):
    """(label, {script: code}) per source."""
    out = []
    for src in args or ["lua"]:
        code = {}
        for name in SCRIPTS:
            if os.path.isdir(src):
                with open(os.path.join(src, name + ".lua")) as f:
                    code[name] = f.read()
            else:
                code[name] = subprocess.run(
                    ["git", "show", f"{src}:lua/{name}.lua"],
                    check=True, capture_output=True, text=True).stdout
        out.append((src, code))
    return out


def library(code):
    lib = "#!lua name=script_cost\n" + code["admission_lib"] + "\n"
    for name in SCRIPTS[1:]:
        lib += (f"redis.register_function('{name}', function(KEYS, ARGV)\n"
                f"{code[name]}\nend)\n")
    return lib


class Fleet:
    """The queue as this harness drives it: who holds a lease, who waits, in order."""

    def __init__(self, r, flat):
        self.r, self.seq, self.flat = r, 0, flat
        self.base = BASE_FLAT if flat else BASE
        self.granted, self.queued = collections.deque(), collections.deque()

    def new_id(self, rep):
        self.seq += 1
        # Ends with the waiter's budget in ms (as enter_args' record ttl), as the queue needs.
        return f"r{rep}.{self.seq:016x}.600000"

    def enter_args(self, reqs):
        args = list(self.base)
        if self.flat:
            # One replica per call (the first request's); every id names its own, which the
            # dispatch pushes its grant to.
            args += [f"r{reqs[0][2]}", "5000"]
            for wid, _, _ in reqs:
                args += [wid, "0"]
            return args
        for wid, user, rep in reqs:
            args += [wid, f"{T}:lease:{user}", f"r{rep}", "0", "5000", "1", "600000"]
        return args

    def fill(self):
        for rep in range(REPLICAS):
            self.r.fcall("admission_heartbeat", 1, GLOBAL, *self.base, f"r{rep}")
        for u in range(USERS):
            req = (self.new_id(u % REPLICAS), f"u{u}", u % REPLICAS)
            res = self.r.fcall("admission_enter", 1, GLOBAL, *self.enter_args([req]))
            (self.granted if res[0] == 1 else self.queued).append(req)
        assert len(self.granted) == 20, len(self.granted)

    def steps(self, k, n):
        """n steps of k releases and k entries, pipelined; every reply checked."""
        p = self.r.pipeline(transaction=False)
        for i in range(n):
            rel = [self.granted.popleft() for _ in range(k)]
            args = list(self.base)
            for wid, user, _ in rel:
                args += [wid, f"{T}:lease:{user}"]
            p.fcall("admission_release", 1, GLOBAL, *args)
            for _ in range(k):
                self.granted.append(self.queued.popleft())
            again = [(self.new_id(rep), user, rep) for _, user, rep in rel]
            p.fcall("admission_enter", 1, GLOBAL, *self.enter_args(again))
            self.queued.extend(again)
            if i % 50 == 49 or i == n - 1:
                for j, res in enumerate(p.execute()):
                    if j % 2 == 0:
                        res = res if isinstance(res, list) else [res]
                        assert all(h == 1 for h in res), f"a release found no live lease: {res}"
                    else:
                        assert all(res[3 * q] == 0 for q in range(k)), f"not queued: {res}"


def measure(r, code, k, grants, flat):
    r.flushall()
    r.function_load(library(code), replace=True)
    fleet = Fleet(r, flat)
    fleet.fill()
    fleet.steps(k, max(1, 200 // k))
    r.config_resetstat()
    n = max(1, grants // k)
    fleet.steps(k, n)
    stats = r.info("commandstats")
    done = n * k
    fcall = stats["cmdstat_fcall"]["usec"] / done
    inner = sum(v["calls"] for name, v in stats.items()
                if name not in ("cmdstat_fcall", "cmdstat_config|resetstat", "cmdstat_info"))
    return fcall, inner / done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,4,16")
    ap.add_argument("--grants", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--flat", action="store_true", help="a queue without per-user limits")
    ap.add_argument("sources", nargs="*")
    a = ap.parse_args()
    sources = sources_of(a.sources)
    with scratch_redis() as (r, _):
        results = collections.defaultdict(list)
        for _ in range(a.rounds):
            for k in [int(x) for x in a.batch.split(",")]:
                for label, code in sources:
                    results[(label, k)].append(measure(r, code, k, a.grants, a.flat))
        print(f"{'source':<24} {'K':>3}  FCALL us per grant (each round)      commands per grant")
        for (label, k), runs in results.items():
            us = " ".join(f"{f:6.1f}" for f, _ in runs)
            print(f"{label:<24} {k:>3}  {us:<36} {runs[0][1]:.1f}")

if __name__ == "__main__":
    sys.exit(main())
