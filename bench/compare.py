"""Before/after driver. Run through `bench/compare`, which builds both revisions' runners.

Runs our own runners of two builds against one dedicated redis-server, alternating builds within
every round (the order flips each round) so both see the same machine noise, then writes
bench/results/compare-latest.json and the "Before and after" section of BENCHMARKS.md.

Environment: COMPARE_BEFORE_BIN / COMPARE_AFTER_BIN (limiter-core `scenarios` bench binaries),
COMPARE_BEFORE_HTTP / COMPARE_AFTER_HTTP (api `http_stack` bench binaries, optional),
COMPARE_BEFORE_REV / COMPARE_AFTER_REV (labels), and driver.py's BENCH_ROUNDS, BENCH_SECS,
BENCH_CONC, BENCH_HANDOFFS.
"""

import datetime
import json
import os
import statistics
import subprocess
import sys

os.environ.setdefault("BENCH_OURS_BIN", os.environ["COMPARE_AFTER_BIN"])
import driver  # noqa: E402  (reads its settings from the environment at import)
from sections import splice  # noqa: E402

BUILDS = ["before", "after"]
BIN = {b: os.environ[f"COMPARE_{b.upper()}_BIN"] for b in BUILDS}
HTTP = {b: os.environ.get(f"COMPARE_{b.upper()}_HTTP") for b in BUILDS}
REV = {b: os.environ.get(f"COMPARE_{b.upper()}_REV", b) for b in BUILDS}
SECTION = "## Before and after the library split"


def cmd(build, scn, c, srv, prefix, **kw):
    out = [BIN[build], "--scenario", scn, "--concurrency", str(c), "--secs", str(driver.SECS),
           "--redis", srv.url, "--prefix", prefix, "--keys", str(driver.KEYS)]
    for k, v in kw.items():
        out += [f"--{k}", str(v)]
    return out


def order(rnd):
    return BUILDS if rnd % 2 == 0 else BUILDS[::-1]


def run(srv):
    runs, uid = [], [0]

    def prefix():
        uid[0] += 1
        return f"cmp{uid[0]}"

    def log(build, res, rnd):
        res.update(build=build, round=rnd)
        runs.append(res)
        print(f"  {res['scenario']:8} c={res.get('c', 1):<3} {build:6} "
              f"{res.get('ops_per_sec') or 0:>10.0f}/s p50 {res.get('p50_us') or 0:>8.1f} µs "
              f"p99 {res.get('p99_us') or 0:>9.1f} µs", flush=True)

    for c in driver.CONC:
        for rnd in range(driver.ROUNDS):
            for b in order(rnd):
                log(b, driver.measured(cmd(b, "window", c, srv, prefix()), srv), rnd)
            for b in order(rnd):
                r = driver.measured(cmd(b, "lease", c, srv, prefix(), cap=driver.LEASE_CAP), srv)
                log(b, r, rnd)
    for rnd in range(driver.ROUNDS):
        for b in order(rnd):
            p = prefix()
            mk = lambda role: cmd(b, role, 1, srv, p, n=driver.HANDOFFS)  # noqa: E731
            r = driver.handoff_pair(mk("handoff-holder"), mk("handoff-waiter"), srv)
            r["scenario"], r["c"] = "handoff", 1
            log(b, r, rnd)
    if all(HTTP.values()):
        # Each build's http_stack serves its own routers; alternate whole runs of one round.
        for rnd in range(driver.ROUNDS):
            for b in order(rnd):
                srv.r.flushall()
                p = subprocess.run([HTTP[b], "--redis", srv.url, "--secs",
                                    str(max(1, round(driver.SECS))), "--rounds", "1", "--conc",
                                    ",".join(map(str, driver.CONC))],
                                   capture_output=True, text=True, timeout=3600)
                if p.returncode != 0:
                    raise SystemExit(f"http bench ({b}) failed:\n{p.stderr[-3000:]}")
                for line in p.stdout.splitlines():
                    if line.startswith("{"):
                        r = json.loads(line)
                        r["scenario"] = r["runner"]  # http-off, http-no-quota, http-full, …
                        log(b, r, rnd)
    return runs


def median(runs, build, scn, c, field):
    xs = [r[field] for r in runs if r["build"] == build and r["scenario"] == scn
          and r.get("c", 1) == c and r.get(field) is not None]
    return statistics.median(xs) if xs else None


def table(runs):
    keys = sorted({(r["scenario"], r.get("c", 1)) for r in runs},
                  key=lambda k: (not k[0].startswith(("window", "lease", "handoff")), k))
    rows = ["| scenario | c | before ops/s | after ops/s | after/before | before p99 µs | "
            "after p99 µs | after/before |", "|---|---|---|---|---|---|---|---|"]
    for scn, c in keys:
        ob, oa = (median(runs, b, scn, c, "ops_per_sec") for b in BUILDS)
        pb, pa = (median(runs, b, scn, c, "p99_us") for b in BUILDS)
        ratio = lambda a, b: f"{a / b:.2f}×" if a and b else "–"  # noqa: E731
        num = lambda x: f"{x:,.0f}" if x is not None else "–"  # noqa: E731
        rows.append(f"| {scn} | {c} | {num(ob)} | {num(oa)} | {ratio(oa, ob)} | {num(pb)} | "
                    f"{num(pa)} | {ratio(pa, pb)} |")
    return "\n".join(rows)


def write(report):
    os.makedirs(driver.RESULTS, exist_ok=True)
    with open(os.path.join(driver.RESULTS, "compare-latest.json"), "w") as f:
        json.dump(report, f, indent=1)
    s = report["settings"]
    body = (f"{SECTION}\n\n"
            f"Generated by `bench/compare {REV['before']}` on {report['started'][:16]} UTC "
            f"(load average {report['load_before'][0]:.1f} before, {report['load_after'][0]:.1f} "
            f"after; {s['rounds']} rounds × {s['secs']} s, builds alternating within each round; "
            f"medians). Before: `{REV['before']}`; after: `{REV['after']}`. Same dedicated "
            f"redis-server, same runners' command lines; `lease` is cap {driver.LEASE_CAP} with "
            f"callers waiting, `handoff` is {s['handoffs']} hand-offs between two processes, "
            f"`http-*` are the api's wrk routers (off = no limiters, full = every layer).\n\n"
            f"{table(report['runs'])}\n")
    splice(os.path.join(driver.ROOT, "BENCHMARKS.md"), SECTION, body)
    print(table(report["runs"]))


def main():
    srv = driver.Server()
    try:
        started = datetime.datetime.now(datetime.timezone.utc)
        load_before = os.getloadavg()
        runs = run(srv)
        write({"started": started.isoformat(timespec="seconds"),
               "finished": datetime.datetime.now(datetime.timezone.utc)
               .isoformat(timespec="seconds"),
               "load_before": load_before, "load_after": os.getloadavg(),
               "revisions": REV,
               "settings": {"rounds": driver.ROUNDS, "secs": driver.SECS,
                            "concurrency": driver.CONC, "handoffs": driver.HANDOFFS},
               "runs": runs})
    finally:
        srv.stop()


if __name__ == "__main__":
    sys.path.insert(0, driver.BENCH)
    main()
