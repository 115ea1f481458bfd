"""Side-by-side benchmark driver. Run through `bench/run`, which installs the peers,
builds our runner and calls this with the venv's Python.

Starts a dedicated redis-server, runs every scenario with each runner in alternation (the order
rotates every round), several rounds, then writes bench/results/latest.json, PNG plots in
bench/results/ and the "Side by side with peers" section of BENCHMARKS.md.

Settings (environment): BENCH_ROUNDS (3), BENCH_SECS (3), BENCH_CONC ("1,16,64"),
BENCH_HANDOFFS (200), BENCH_SCENARIOS ("window,lease,lease-try,handoff,deny,http"); BENCH_OUT: write
the raw runs there instead of bench/results/ and BENCHMARKS.md (e.g. to compare two builds of ours,
BENCH_OURS_BIN naming each).
Scenario 5 (http) runs the api crate's `http_stack` bench binary (BENCH_HTTP_BIN), which serves
the chat route with and without its limiters and drives it with wrk.

Every peer runs at each of its documented client configurations (Node peers: ioredis
`enableAutoPipelining` on and off; `limits`: redis-py with the hiredis parser and with the
pure-Python one); each run records its `variant`, and the report takes the faster variant of each
peer as the anchor of every ratio.

Per run it also records a small profile: CPU seconds of the runner process (rusage) and of
redis-server (INFO cpu) per wall second, and Redis's own microseconds per operation (INFO
commandstats), which tells who is saturated when a target is missed.
"""

import datetime
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
PEERS = os.path.join(BENCH, "peers")
RESULTS = os.path.join(BENCH, "results")
OURS = os.environ["BENCH_OURS_BIN"]
HTTP_BIN = os.environ.get("BENCH_HTTP_BIN")  # crates/api/benches/http_stack.rs
PY = sys.executable
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECS = float(os.environ.get("BENCH_SECS", "3"))
CONC = [int(c) for c in os.environ.get("BENCH_CONC", "1,16,64").split(",")]
HANDOFFS = int(os.environ.get("BENCH_HANDOFFS", "200"))
SCENARIOS = os.environ.get("BENCH_SCENARIOS", "window,lease,lease-try,handoff,deny,http").split(",")
KEYS = 10_000
LEASE_CAP = 20  # the design's global cap: at c=16 nobody waits, at c=64 most calls queue/poll
WIDE_CAP = 1_000_000  # lease-try: a cap no task reaches, pure acquire+release cost


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--maxmemory", "2gb", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}"
        self.r = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                self.r.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def cpu(self):
        i = self.r.info("cpu")
        return i["used_cpu_user"] + i["used_cpu_sys"]


    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_proc(cmd, srv, timeout=120):
    """Runs one runner; returns its JSON line plus the profile fields."""
    srv.r.flushall()
    srv.r.config_resetstat()
    cpu0 = srv.cpu()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    wall = time.perf_counter() - t0
    cpu1 = srv.cpu()
    if p.returncode != 0:
        raise SystemExit(f"runner failed ({p.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    res = json.loads(line)
    res["redis_cores"] = (cpu1 - cpu0) / wall
    total = res.get("ops", 0) + res.get("warm_ops", 0)
    # All of Redis's CPU (scripts, parsing, network I/O) over every call the runner made.
    res["redis_us_per_op"] = (cpu1 - cpu0) * 1e6 / total if total else None
    # Time inside top-level script and function calls only (commands run by scripts are counted
    # inside them).
    res["script_us_per_op"] = script_usec(srv) / total if total else None
    res["wall"] = wall
    return res


def script_usec(srv):
    st = srv.r.info("commandstats")
    return sum(st.get(f"cmdstat_{k}", {}).get("usec", 0) for k in ("evalsha", "eval", "fcall"))


def child_cpu():
    r = os.times()
    return r.children_user + r.children_system


def ours(scn, c, srv, prefix, **kw):
    cmd = [OURS, "--scenario", scn, "--concurrency", str(c), "--secs", str(SECS), "--redis",
           srv.url, "--prefix", prefix, "--keys", str(KEYS)]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def node(scn, c, srv, prefix, **kw):
    cmd = ["node", os.path.join(PEERS, "node_runner.js"), "--scenario", scn, "--concurrency",
           str(c), "--secs", str(SECS), "--redis", srv.url, "--prefix", prefix, "--keys", str(KEYS)]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def limits(scn, strategy, c, srv, prefix, hiredis="on"):
    return [PY, os.path.join(PEERS, "limits_runner.py"), "--scenario", scn, "--strategy", strategy,
            "--concurrency", str(c), "--secs", str(SECS), "--redis", srv.url, "--prefix", prefix,
            "--keys", str(KEYS), "--hiredis", hiredis]


# Each peer's documented client configurations; "who:variant" names one in the rotations below.
AUTOPIPELINE = ["on", "off"]  # ioredis enableAutoPipelining (rate-limiter-flexible, redis-semaphore)
HIREDIS = ["on", "off"]  # redis-py's reply parser (limits)


def variants(who, values):
    return [f"{who}:{v}" for v in values]


def split(who):
    name, _, variant = who.partition(":")
    return name, variant


def measured(cmd, srv):
    cpu0 = child_cpu()
    res = run_proc(cmd, srv)
    res["runner_cores"] = (child_cpu() - cpu0) / res["wall"]
    return res


def redis_benchmark(c, srv, sha, expect_rps):
    """The ceiling: redis-benchmark EVALSHA of our own script, same keys, same concurrency."""
    n = int(max(20_000, expect_rps * SECS))
    srv.r.flushall()
    srv.r.config_resetstat()
    cpu0, cpuc0, t0 = srv.cpu(), child_cpu(), time.perf_counter()
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(srv.port), "-c", str(c), "-n", str(n),
         "-r", str(KEYS), "--csv", "EVALSHA", sha, "1", "bench:win:chat:{__rand_int__}", "100",
         "60000"], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    line = next(l for l in out.splitlines() if l.startswith('"EVALSHA'))
    f = [float(x.strip('"')) for x in line.split(",")[1:]]
    # "rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    cpu = srv.cpu() - cpu0
    return {"runner": "redis-benchmark", "scenario": "window", "c": c, "ops": n,
            "ops_per_sec": f[0], "p50_us": f[3] * 1000, "p90_us": None, "p99_us": f[5] * 1000,
            "p999_us": None, "redis_cores": cpu / wall,
            "runner_cores": (child_cpu() - cpuc0) / wall, "redis_us_per_op": cpu * 1e6 / n,
            "script_us_per_op": script_usec(srv) / n, "wall": wall}


def handoff_pair(holder_cmd, waiter_cmd, srv):
    srv.r.flushall()
    h = subprocess.Popen(holder_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        w = subprocess.run(waiter_cmd, capture_output=True, text=True, timeout=300)
    finally:
        try:
            h.wait(timeout=30)
        except subprocess.TimeoutExpired:
            h.kill()
    if w.returncode != 0:
        raise SystemExit(f"handoff waiter failed: {w.stderr[-2000:]}")
    return json.loads([l for l in w.stdout.splitlines() if l.startswith("{")][-1])


def rotate(items, k):
    k %= len(items)
    return items[k:] + items[:k]


def main():
    os.makedirs(RESULTS, exist_ok=True)
    srv = Server()

    def stop(*_):
        srv.stop()
        sys.exit(130)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        results = run_all(srv)
    finally:
        srv.stop()
    out = os.environ.get("BENCH_OUT")
    if out:
        # A partial or comparison run: raw runs only, BENCHMARKS.md left as it is.
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {out}")
        return
    from report import write_all  # noqa: E402  (matplotlib only needed here)
    write_all(results, ROOT)


def run_all(srv):
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    runs = []
    uid = [0]

    def prefix():
        uid[0] += 1
        return f"b{uid[0]}"

    def log(res):
        runs.append(res)
        name = res["runner"] + (f" [{res['variant']}]" if res.get("variant") else "")
        print(f"  {res.get('scenario'):9} c={res.get('c', '-'):<3} {name:40} "
              f"{res.get('ops_per_sec') or 0:>10.0f}/s p50 {res.get('p50_us') or 0:>8.1f} µs "
              f"p99 {res.get('p99_us') or 0:>9.1f} µs", flush=True)

    sha = subprocess.run([OURS, "--scenario", "script-sha"], capture_output=True, text=True,
                         check=True).stdout.strip()
    src = subprocess.run([OURS, "--scenario", "script-source"], capture_output=True, text=True,
                         check=True).stdout
    if srv.r.script_load(src) != sha:
        raise SystemExit("script SHA mismatch")

    if "window" in SCENARIOS:
        print("scenario 1+2: window decisions, ceiling", flush=True)
        for c in CONC:
            for rnd in range(ROUNDS):
                order = rotate(["ours", *variants("rlf", AUTOPIPELINE),
                                *variants("limits-moving", HIREDIS),
                                *variants("limits-fixed", HIREDIS), "redis-benchmark"], rnd)
                for who in order:
                    name, v = split(who)
                    if who == "ours":
                        r = measured(ours("window", c, srv, "bench"), srv)
                    elif name == "rlf":
                        r = measured(node("window", c, srv, prefix(), autopipeline=v), srv)
                    elif name.startswith("limits"):
                        r = measured(limits("window", name.split("-")[1], c, srv, prefix(), v),
                                     srv)
                    else:
                        expect = max([x["ops_per_sec"] for x in runs if x["runner"] == "ours"
                                      and x["scenario"] == "window" and x["c"] == c] or [30_000])
                        srv.r.script_load(src)
                        r = redis_benchmark(c, srv, sha, expect)
                    r["round"] = rnd
                    log(r)

    if "lease" in SCENARIOS:
        print(f"scenario 3a: lease acquire+release, cap {LEASE_CAP} (waiting when taken)",
              flush=True)
        for c in CONC:
            for rnd in range(ROUNDS):
                for who in rotate(["ours", "ours-flat", "ours-poll",
                                   *variants("sem", AUTOPIPELINE)], rnd):
                    if who == "ours-poll":
                        cmd = ours("lease-poll", c, srv, prefix(), cap=LEASE_CAP, retry=10)
                    elif who == "ours":
                        cmd = ours("lease", c, srv, prefix(), cap=LEASE_CAP)
                    elif who == "ours-flat":
                        cmd = ours("lease-flat", c, srv, prefix(), cap=LEASE_CAP)
                    else:
                        cmd = node("lease", c, srv, prefix(), cap=LEASE_CAP,
                                   autopipeline=split(who)[1])
                    r = measured(cmd, srv)
                    if who in ("ours-poll", "ours-flat"):
                        r["runner"], r["scenario"] = who, "lease"
                    r["round"] = rnd
                    log(r)

    if "lease-try" in SCENARIOS:
        print("scenario 3b: lease try-acquire+release, cap never reached", flush=True)
        for c in CONC:
            for rnd in range(ROUNDS):
                for who in rotate(["ours", *variants("sem", AUTOPIPELINE)], rnd):
                    if who == "ours":
                        cmd = ours("lease-try", c, srv, prefix(), cap=WIDE_CAP)
                    else:
                        cmd = node("lease-try", c, srv, prefix(), cap=WIDE_CAP,
                                   autopipeline=split(who)[1])
                    r = measured(cmd, srv)
                    r["round"] = rnd
                    log(r)

    if "handoff" in SCENARIOS:
        print(f"scenario 3c: hand-off release → next waiter in another process ({HANDOFFS} each)",
              flush=True)
        for rnd in range(ROUNDS):
            for who in rotate(["ours", *variants("sem10", AUTOPIPELINE),
                               *variants("sem1", AUTOPIPELINE)], rnd):
                p = prefix()
                name, v = split(who)
                if who == "ours":
                    mk = lambda role: ours(role, 1, srv, p, n=HANDOFFS)  # noqa: E731
                else:
                    retry = 10 if name == "sem10" else 1
                    mk = lambda role: node(role, 1, srv, p, n=HANDOFFS, retry=retry,  # noqa: E731
                                           autopipeline=v)
                r = handoff_pair(mk("handoff-holder"), mk("handoff-waiter"), srv)
                if who != "ours":
                    r["runner"] = f"redis-semaphore (retry {r['retry_ms']} ms)"
                r["round"] = rnd
                log(r)

    if "deny" in SCENARIOS:
        print("scenario 4: denials for a client already over its limit", flush=True)
        for c in CONC:
            for rnd in range(ROUNDS):
                for who in rotate(["ours", *variants("rlf", AUTOPIPELINE),
                                   *variants("limits-moving", HIREDIS)], rnd):
                    name, v = split(who)
                    if who == "ours":
                        cmd = ours("deny", c, srv, prefix())
                    elif name == "rlf":
                        cmd = node("deny", c, srv, prefix(), autopipeline=v)
                    else:
                        cmd = limits("deny", "moving", c, srv, prefix(), v)
                    r = measured(cmd, srv)
                    r["round"] = rnd
                    log(r)

    http = {"status": "skipped"}
    if "http" in SCENARIOS and HTTP_BIN:
        print("scenario 5: HTTP chat route, limiter stack vs limiters off (wrk)", flush=True)
        srv.r.flushall()
        p = subprocess.run([HTTP_BIN, "--redis", srv.url, "--secs", str(max(1, round(SECS))),
                            "--rounds", str(ROUNDS), "--conc", ",".join(map(str, CONC))],
                           capture_output=True, text=True, timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"http bench failed ({p.returncode}):\n{p.stderr[-3000:]}")
        for line in p.stdout.splitlines():
            if line.startswith("{"):
                log(json.loads(line))
        http = {"status": "measured"}

    finished = datetime.datetime.now(datetime.timezone.utc)
    return {"started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "settings": {"rounds": ROUNDS, "secs": SECS, "concurrency": CONC,
                         "handoffs": HANDOFFS, "keys": KEYS, "lease_cap": LEASE_CAP},
            "load_before": load_before, "load_after": os.getloadavg(),
            "machine": machine(), "script_sha": sha, "runs": runs, "http": http}


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def machine():
    lock = json.load(open(os.path.join(PEERS, "package-lock.json")))
    pk = lock.get("packages", {})
    ver = lambda n: pk.get(f"node_modules/{n}", {}).get("version", "?")  # noqa: E731
    import importlib.metadata as md
    return {
        "nproc": sh("nproc"),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
        "memory": sh("free -g | awk '/Mem:/{print $2\" GiB total, \"$7\" GiB available\"}'"),
        "kernel": platform.release(),
        "redis_server": re.sub(r" sha=.*", "", sh("redis-server --version")),
        "node": sh("node --version"),
        "python": platform.python_version(),
        "rustc": sh("rustc --version"),
        "peers": {"rate-limiter-flexible": ver("rate-limiter-flexible"),
                  "ioredis": ver("ioredis"), "redis-semaphore": ver("redis-semaphore"),
                  "limits": md.version("limits"), "redis (py)": md.version("redis"),
                  "hiredis": md.version("hiredis")},
    }


if __name__ == "__main__":
    sys.path.insert(0, BENCH)
    random.seed()
    main()
