"""Turns the driver's runs into bench/results/latest.json, PNG plots and the BENCHMARKS.md section.

Can be re-run alone on a saved result: `bench/.venv/bin/python bench/report.py [latest.json]`.
"""

import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sections import splice  # noqa: E402

HEADING = "## Side by side with peers"

GUARANTEES = {
    "ours": "exact sliding window: ≤ N admissions in any 60 s span; denials not counted; Redis clock",
    "rate-limiter-flexible": "fixed window (INCRBY+EXPIRE in one Lua call, Redis TTL): up to 2N "
                             "within 60 s across a boundary; denied calls are counted too",
    "limits-moving": "exact moving window (list log, one Lua call), but timestamps from each "
                     "client's clock (`time.time()`): replicas with skewed clocks disagree",
    "limits-fixed": "fixed window (INCR+EXPIRE): up to 2N across a boundary",
    "redis-benchmark": "our exact window script, EVALSHA from C, one request in flight per connection",
}


HTTP_VARIANTS = ["off", "no-quota", "full", "full-async-commit"]
HTTP_WHAT = {
    "off": "`POST /api/chat` without limiters (bench-only router, `api::bench_support`)",
    "no-quota": "per-IP window + admission slot (Redis), no quota spend",
    "full": "the service's router: per-IP window + quota spend (PostgreSQL) + admission slot",
    "full-async-commit": "the same with `FLEETGATE_QUOTA_ASYNC_COMMIT=true` (each batch of quota "
                         "spends commits with `synchronous_commit` off for its own transaction, "
                         "not waiting for its WAL flush)",
}


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def agg(runs, scenario, runner, c=None, variant=None):
    rs = [r for r in runs if r.get("scenario") == scenario and r["runner"] == runner
          and (c is None or r.get("c") == c)
          and (variant is None or r.get("variant") == variant)]
    if not rs:
        return None
    ops = [r.get("ops_per_sec") for r in rs if r.get("ops_per_sec") is not None]
    out = {"n": len(rs), "ops": med(ops), "ops_min": min(ops) if ops else None,
           "ops_max": max(ops) if ops else None}
    for k in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us", "runner_cores", "redis_cores",
              "redis_us_per_op", "script_us_per_op"]:
        out[k] = med([r.get(k) for r in rs])
    p99 = [r.get("p99_us") for r in rs if r.get("p99_us") is not None]
    out["p99_min"], out["p99_max"] = (min(p99), max(p99)) if p99 else (None, None)
    return out


def variants_of(runs, scenario, runner):
    return sorted({r["variant"] for r in runs if r.get("scenario") == scenario
                   and r["runner"] == runner and r.get("variant")})


def anchor(runs, scenario, runner, c, table, lower_is_better=False):
    """The peer's faster configuration: its aggregate, labelled with its variant; every variant's
    aggregate goes to `table[runner]` for the configurations table."""
    vs = variants_of(runs, scenario, runner)
    if not vs:
        return agg(runs, scenario, runner, c)
    per = {v: agg(runs, scenario, runner, c, v) for v in vs}
    per = {v: a for v, a in per.items() if a}
    if not per:
        return None
    key = "p99_us" if lower_is_better else "ops"
    best = (min if lower_is_better else max)(per, key=lambda v: per[v][key] or 0)
    for v, a in per.items():
        a["variant"] = v
        a["anchor"] = v == best
    table[runner] = per
    return per[best]


def summarize(res):
    runs = res["runs"]
    conc = res["settings"]["concurrency"]
    s = {"variants": {}}
    for scenario, runners in [
        ("window", ["ours", "rate-limiter-flexible", "limits-moving", "limits-fixed",
                    "redis-benchmark"]),
        ("lease", ["ours", "ours-flat", "ours-poll", "redis-semaphore"]),
        ("lease-try", ["ours", "redis-semaphore"]),
        ("deny", ["ours", "rate-limiter-flexible", "limits-moving"]),
    ]:
        s[scenario] = {}
        s["variants"][scenario] = {}
        for c in conc:
            vt = s["variants"][scenario][str(c)] = {}
            s[scenario][str(c)] = {r: anchor(runs, scenario, r, c, vt) for r in runners}
    s["http"] = {str(c): {v: agg(runs, "http", f"http-{v}", c) for v in HTTP_VARIANTS}
                 for c in conc}
    s["bare_commit"] = agg(runs, "http-commit", "bare-commit")
    vt = s["variants"]["handoff"] = {}
    s["handoff"] = {r: anchor(runs, "handoff", r, None, vt, lower_is_better=True) for r in
                    ["ours", "redis-semaphore (retry 10 ms)", "redis-semaphore (retry 1 ms)"]}
    return s


def fnum(x, d=0):
    if x is None:
        return "—"
    if abs(x) >= 100 or d == 0:
        return f"{x:,.0f}"
    return f"{x:.{d}f}"


def fus(x):
    if x is None:
        return "—"
    if x < 10:
        return f"{x:.2f}"
    return f"{x:,.0f}"


def vl(a):
    """` (variant)` of a peer's aggregate, empty for ours."""
    return f" ({a['variant']})" if a and a.get("variant") else ""


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fr(x):
    if x is None:
        return "—"
    if x >= 0.1:
        return f"{x:.2f}×"
    return f"{x:.3f}×" if x >= 0.001 else "< 0.001×"


def plots(res, s, outdir):
    conc = res["settings"]["concurrency"]
    cmax = str(max(conc))
    colors = {"ours": "#1f77b4", "rate-limiter-flexible": "#ff7f0e", "limits-moving": "#2ca02c",
              "limits-fixed": "#98df8a", "redis-benchmark": "#7f7f7f", "redis-semaphore": "#d62728",
              "redis-semaphore (retry 10 ms)": "#d62728", "redis-semaphore (retry 1 ms)": "#ff9896",
              "ours-poll": "#17becf", "ours-flat": "#9467bd", "off": "#7f7f7f", "no-quota": "#1f77b4", "full": "#d62728",
              "full-async-commit": "#ff7f0e"}
    files = []

    def throughput(ax, scen, runners, title, ylabel):
        for r in runners:
            ys = [s[scen][str(c)].get(r) for c in conc]
            if not any(ys):
                continue
            y = [a["ops"] if a else float("nan") for a in ys]
            lo = [a["ops"] - a["ops_min"] if a else 0 for a in ys]
            hi = [a["ops_max"] - a["ops"] if a else 0 for a in ys]
            ax.errorbar([str(c) for c in conc], y, yerr=[lo, hi], marker="o", capsize=3,
                        label=r, color=colors.get(r))
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("concurrency")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)

    def percentiles(ax, aggs, title, keys=("p50_us", "p90_us", "p99_us", "p999_us")):
        names = [n for n, a in aggs.items() if a]
        width = 0.8 / max(len(names), 1)
        lows = [aggs[n].get(k) for n in names for k in keys if aggs[n].get(k)]
        for i, n in enumerate(names):
            a = aggs[n]
            vals = [a.get(k) or float("nan") for k in keys]
            ax.bar([j + i * width for j in range(len(keys))], vals, width, label=n,
                   color=colors.get(n))
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(keys))])
        ax.set_xticklabels([k.replace("_us", "").replace("p999", "p99.9") for k in keys])
        ax.set_yscale("log")
        if lows:
            ax.set_ylim(bottom=min(lows) / 2)  # the shortest bar stays visible
        ax.set_ylabel("latency µs (log)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=7)

    def save(fig, name):
        path = os.path.join(outdir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        files.append(name)

    if any(s["window"][cmax].values()):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        throughput(a1, "window", list(s["window"][cmax].keys()),
                   "1+2. window decisions/s (10,000 keys)", "decisions/s (log)")
        percentiles(a2, s["window"][cmax], f"latency percentiles at c={cmax}")
        save(fig, "window.png")
    if any(s["lease"][cmax].values()):
        fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4.2))
        throughput(a1, "lease", ["ours", "ours-flat", "ours-poll", "redis-semaphore"],
                   f"3a. acquire+release pairs/s, cap {res['settings']['lease_cap']}", "pairs/s (log)")
        throughput(a2, "lease-try", ["ours", "redis-semaphore"],
                   "3b. try-acquire+release pairs/s, cap not reached", "pairs/s (log)")
        percentiles(a3, s["lease"][cmax], f"3a. latency at c={cmax}")
        save(fig, "lease.png")
    if any(s["handoff"].values()):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        percentiles(ax, s["handoff"], "3c. hand-off: release → next waiter (other process)",
                    keys=("p50_us", "p90_us", "p99_us", "max_us"))
        save(fig, "handoff.png")
    if any(s["http"][cmax].values()):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, key in zip(axes, ("p50_us", "p99_us")):
            for v in HTTP_VARIANTS:
                ys = [s["http"][str(c)].get(v) for c in conc]
                if not any(ys):
                    continue
                ax.plot([str(c) for c in conc], [a[key] / 1000 if a else float("nan") for a in ys],
                        marker="o", label=v, color=colors.get(v))
            ax.set_yscale("log")
            ax.set_title(f"5. POST /api/chat (wrk) {key.replace('_us', '')} latency", fontsize=10)
            ax.set_xlabel("connections")
            ax.set_ylabel("ms (log)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        save(fig, "http.png")
    if any(s["deny"][cmax].values()):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        throughput(a1, "deny", list(s["deny"][cmax].keys()),
                   "4. denials/s, one client over its limit", "denials/s (log)")
        percentiles(a2, s["deny"][cmax], f"latency percentiles at c={cmax}")
        save(fig, "deny.png")
    return files


def targets(s, conc):
    c = str(64 if 64 in conc else max(conc))
    w = s["window"][c]
    rows = []

    def row(name, value, goal, ok):
        rows.append((name, value, goal, "—" if ok is None else ("met" if ok else "**missed**")))

    o, f = w.get("ours"), w.get("rate-limiter-flexible")
    if o and f:
        r = ratio(o["ops"], f["ops"])
        row(f"window decisions/s ours / rate-limiter-flexible{vl(f)}, c={c}", fr(r), "≥ 1.50×",
            r >= 1.5)
        r = ratio(o["p99_us"], f["p99_us"])
        row(f"window p99 ours / rate-limiter-flexible{vl(f)}, c={c}", fr(r), "≤ 0.50×", r <= 0.5)
    lm = w.get("limits-moving")
    if o and lm:
        r = ratio(o["ops"], lm["ops"])
        row(f"window decisions/s ours / limits (moving window){vl(lm)}, c={c}", fr(r), "far ahead",
            None)
    rb = w.get("redis-benchmark")
    if o and rb:
        r = ratio(o["ops"], rb["ops"])
        row(f"window decisions/s ours / redis-benchmark EVALSHA, c={c}", fr(r), "≥ 1.00×", r >= 1.0)
    l = s["lease"][c]
    for who, what in (("ours", "Admission, queued"),
                      ("ours-flat", "Admission without per-user limits, queued"),
                      ("ours-poll", "LeaseManager, polled")):
        sem = l.get("redis-semaphore")
        if l.get(who) and sem:
            r = ratio(l[who]["ops"], sem["ops"])
            row(f"lease pairs/s ours ({what}) / redis-semaphore{vl(sem)}, c={c} (cap 20, waiting)",
                fr(r), "≥ 1.50×", r >= 1.5)
            r = ratio(l[who]["p99_us"], sem["p99_us"])
            row(f"lease p99 ours ({what}) / redis-semaphore{vl(sem)}, c={c}", fr(r), "≤ 0.10×",
                r <= 0.1)
    lt = s["lease-try"][c]
    sem = lt.get("redis-semaphore")
    if lt.get("ours") and sem:
        r = ratio(lt["ours"]["ops"], sem["ops"])
        row(f"lease pairs/s ours / redis-semaphore{vl(sem)}, c={c} (cap not reached)", fr(r),
            "(≥ 1.50×)", r >= 1.5)
        r = ratio(lt["ours"]["p99_us"], sem["p99_us"])
        row(f"lease p99 ours / redis-semaphore{vl(sem)}, c={c} (cap not reached)", fr(r),
            "(≤ 0.10×)", r <= 0.1)
    h = s["handoff"].get("ours")
    if h:
        row("hand-off p99, ours", f"{h['p99_us'] / 1000:.2f} ms", "≤ 1 ms", h["p99_us"] <= 1000)
    # The full stack's req/s at 64 connections against the ~2.3k it made when this goal was set
    # (the quota committing each spend on its own).
    full64 = s["http"].get("64", {}).get("full")
    if full64 and full64.get("ops"):
        r = full64["ops"] / 2300
        row("HTTP full stack req/s at 64 connections / the 2.3k before group commit",
            f"{r:.2f}× ({full64['ops']:,.0f} req/s)", "≥ 3×", r >= 3)
    # Judged with one connection: with more, the added p50 also holds the wait for the CPU that
    # the checks' throughput cost causes on this 2-core machine (the table shows every C).
    hc = str(min(conc))
    h = s["http"][hc]
    off = h.get("off")
    for v in ("full", "full-async-commit", "no-quota"):
        if off and h.get(v):
            d = (h[v]["p50_us"] - off["p50_us"]) / 1000
            if v == "no-quota":
                row(f"HTTP added p50, {v} vs off, {hc} connection", f"{d:.2f} ms", "≤ 0.5 ms",
                    d <= 0.5)
            elif s.get("bare_commit"):
                # The quota's goal adds the p50 of a bare commit, timed in the same run.
                commit = s["bare_commit"]["p50_us"] / 1000
                row(f"HTTP added p50, {v} vs off, {hc} connection", f"{d:.2f} ms",
                    f"≤ 0.5 ms + a bare commit's p50 ({commit:.2f} ms) = {0.5 + commit:.2f} ms",
                    d <= 0.5 + commit)
            else:
                row(f"HTTP added p50, {v} vs off, {hc} connection", f"{d:.2f} ms",
                    "≤ 0.5 ms + a bare commit's p50 (not timed in this run)", None)
    return rows


def markdown(res, s, files):
    m = res["machine"]
    st = res["settings"]
    conc = st["concurrency"]
    L = [HEADING, ""]
    L.append(f"Command: `bench/run` (from the repo root). Run of {res['started']} → "
             f"{res['finished']} UTC: {st['rounds']} rounds × {st['secs']:g} s per runner and "
             f"concurrency, {st['handoffs']} hand-offs per round. Settings: `BENCH_ROUNDS`, "
             "`BENCH_SECS`, `BENCH_CONC`, `BENCH_HANDOFFS`, `BENCH_SCENARIOS`. Raw runs and "
             "medians: `bench/results/latest.json`.")
    L.append("")
    L.append(f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, Linux {m['kernel']}; "
             f"{m['redis_server']}; node {m['node']}, Python {m['python']}, {m['rustc']}. "
             "Peers: " + ", ".join(f"{k} {v}" for k, v in m["peers"].items()) + ". "
             f"Load average before {res['load_before'][0]:.2f}, after {res['load_after'][0]:.2f} "
             "(1 min): the machine is shared with other agents compiling, so absolute figures "
             "move from run to run; only same-run ratios count.")
    L.append("")
    L.append("How: one dedicated `redis-server` started by the command (no persistence), "
             "`FLUSHALL` before every run. Every runner is its own process (ours: "
             "`target/release/deps/scenarios-*`, built by `cargo bench -p limiter-core --bench "
             "scenarios --no-run`, args `--scenario window|lease|lease-poll|lease-try|deny|"
             "handoff-holder|handoff-waiter --concurrency N --secs S --redis URL --prefix P`; Node: "
             "`bench/peers/node_runner.js`; Python: `bench/peers/limits_runner.py`), with a 300 ms "
             "warm-up, C concurrent loops each timing every call; the order of runners rotates "
             "every round. Ours: one multiplexed connection per process (concurrent calls pipeline "
             "on it), multi-thread tokio. rate-limiter-flexible and redis-semaphore: ioredis, "
             "each run twice, with `enableAutoPipelining` on and off (its default); limits: its "
             "asyncio API with the redis-py client, C asyncio tasks, each run twice, with the "
             "hiredis reply parser and with the pure-Python one. Every peer is compared at its "
             "faster configuration (the one named next to it; per scenario and concurrency, by "
             "median throughput, for the hand-off by p99); both configurations are in the "
             "table below. Figures are medians over rounds; spread = min–max over rounds. "
             "Profile columns: CPU cores used by the runner process and by redis-server over the "
             "process's life (rusage, `INFO cpu`); Redis CPU µs per operation (all of "
             "redis-server's CPU, network I/O included, over every call the runner made, warm-up "
             "included); µs per operation inside top-level EVAL/EVALSHA/FCALL (`INFO commandstats`). "
             "`bench/profile WHO SCENARIO C` samples both processes with perf for one runner.")
    L.append("")
    L.append("### Targets (same run)")
    L.append("")
    L.append("| target | measured | goal | |")
    L.append("|---|---|---|---|")
    for r in targets(s, conc):
        L.append("| " + " | ".join(r) + " |")
    L.append("")
    vrows = []
    for scen, per_c in s.get("variants", {}).items():
        if scen == "handoff":
            per_c = {"1": per_c}
        for c, peers in per_c.items():
            for peer, per in peers.items():
                for v, a in per.items():
                    vrows.append(f"| {scen} | {c} | {peer} | {v} | {fnum(a['ops'])} | "
                                 f"{fus(a['p99_us'])} | {'anchor' if a.get('anchor') else ''} |")
    if vrows:
        L.append("### Peer configurations (same run)")
        L.append("")
        L.append("Each peer at each of its documented client configurations; the faster is the "
                 "anchor of every ratio in this section (hand-off: the lower p99).")
        L.append("")
        L.append("| scenario | c | peer | configuration | ops/s (median) | p99 µs | |")
        L.append("|---|---|---|---|---|---|---|")
        L.extend(vrows)
        L.append("")

    def table(scen, title, unit, peers_for_ratio):
        L.append(f"### {title}")
        L.append("")
        L.append(f"| c | runner | {unit}/s (median, spread) | p50 µs | p99 µs (spread) | "
                 "runner cores | redis cores | Redis CPU µs/op | in scripts µs/op | ours/peer "
                 "throughput | ours/peer p99 |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for c in conc:
            row = s[scen][str(c)]
            o = row.get("ours")
            for name, a in row.items():
                if not a:
                    continue
                rt = rp = ""
                if name != "ours" and o and name in peers_for_ratio:
                    rt = fr(ratio(o["ops"], a["ops"]))
                    rp = fr(ratio(o["p99_us"], a["p99_us"]))
                L.append(f"| {c} | {name}{vl(a)} | {fnum(a['ops'])} ({fnum(a['ops_min'])}–"
                         f"{fnum(a['ops_max'])}) | {fus(a['p50_us'])} | {fus(a['p99_us'])} "
                         f"({fus(a['p99_min'])}–{fus(a['p99_max'])}) | "
                         f"{fnum(a['runner_cores'], 2)} | {fnum(a['redis_cores'], 2)} | "
                         f"{fnum(a['redis_us_per_op'], 1)} | {fnum(a['script_us_per_op'], 1)} | "
                         f"{rt} | {rp} |")
        L.append("")

    if any(s["window"][str(conc[-1])].values()):
        table("window", "1+2. Per-key window decisions (10,000 keys, limit 100 per 60 s) and the "
              "redis-benchmark ceiling", "decisions",
              ["rate-limiter-flexible", "limits-moving", "limits-fixed", "redis-benchmark"])
        L.append("What each guarantees:")
        L.append("")
        for k, v in GUARANTEES.items():
            L.append(f"- {k}: {v}.")
        L.append("")
        L.append("redis-benchmark runs `EVALSHA <our sliding_window.lua> 1 bench:win:chat:"
                 "{__rand_int__} 100 60000` with `-r 10000 -c C` (C connections, one request in "
                 "flight on each; its p99 is from its own histogram, in ms resolution; runner "
                 "cores are redis-benchmark's).")
        L.append("")
    if any(s["lease"][str(conc[-1])].values()):
        table("lease", f"3a. Lease acquire+release pairs, cap {st['lease_cap']} (callers wait "
              "when all slots are taken)", "pairs", ["redis-semaphore"])
        L.append("Ours: `Admission::admit` (user cap 2 and global cap in one script; a waiter "
                 "queues in the fleet-wide priority queue and is handed the slot by pub/sub) + "
                 "`Permit::release`, one user per task. redis-semaphore: `new Semaphore(redis, "
                 "key, cap, {retryInterval: 10})`, `acquire()` (polls every 10 ms while full) + "
                 "`release()`: one global scope only, no per-user cap, no queue order. "
                 "ours-flat: the same `Admission` on a queue without per-user limits (user cap 0 "
                 "and max queued per user 0: redis-semaphore's one global scope, still served in "
                 "priority then arrival order, fenced, with grants pushed). "
                 "ours-poll: `LeaseManager` (our TTL semaphore without a queue, the like-for-like "
                 "peer of redis-semaphore): `try_acquire` of a user scope (cap 2) and the global "
                 "scope, sleeping 10 ms after a refusal like redis-semaphore's poll, + release.")
        L.append("")
    if any(s["lease-try"][str(conc[-1])].values()):
        table("lease-try", "3b. Lease try-acquire+release pairs, cap never reached",
              "pairs", ["redis-semaphore"])
        L.append("Ours: `LeaseManager::try_acquire` of a user scope (cap 2) and a global scope "
                 "at once + `Lease::release`. redis-semaphore: `tryAcquire()` + `release()` on "
                 "one global semaphore.")
        L.append("")
    if any(s["handoff"].values()):
        L.append("### 3c. Hand-off: release in one process → the next waiter's grant in another")
        L.append("")
        L.append("| runner | hand-offs (rounds) | p50 µs | p90 µs | p99 µs (spread) | max µs | "
                 "ours/peer p99 |")
        L.append("|---|---|---|---|---|---|---|")
        o = s["handoff"].get("ours")
        for name, a in s["handoff"].items():
            if not a:
                continue
            rp = fr(ratio(o["p99_us"], a["p99_us"])) if o and name != "ours" else ""
            L.append(f"| {name}{vl(a)} | {st['handoffs']} × {a['n']} | {fus(a['p50_us'])} | "
                     f"{fus(a['p90_us'])} | {fus(a['p99_us'])} ({fus(a['p99_min'])}–"
                     f"{fus(a['p99_max'])}) | {fus(a['max_us'])} | {rp} |")
        L.append("")
        L.append("Two processes of the same runner: the holder keeps the only slot (cap 1), the "
                 "waiter queues (ours: `admit_watched` until its position is > 0; "
                 "redis-semaphore: `acquire()`, which tries at once and then polls), the holder "
                 "sleeps a random 2–12 ms (so the release falls at a random phase of the peer's "
                 "poll), stamps the wall clock and releases; the waiter stamps the wall clock "
                 "when its acquire returns (Rust `SystemTime`, Node `performance.timeOrigin + "
                 "performance.now()`: same machine clock). Holder and waiter keep in step "
                 "through Redis lists (BLPOP on a separate connection), never on the measured "
                 "path. The median over rounds of each percentile is shown.")
        L.append("")
    if any(s["deny"][str(conc[-1])].values()):
        table("deny", "4. Denials for one client already over its limit (5 per 60 s)",
              "denials", ["rate-limiter-flexible", "limits-moving"])
        L.append("Ours: `CachedWindow` (a denial from Redis is remembered until its retry_after; "
                 "later calls for that client are denied from memory). rate-limiter-flexible: "
                 "`inMemoryBlockOnConsumed: 5` (its documented in-memory block, until the window "
                 "ends). limits: no local cache — every denial is a Redis round trip.")
        L.append("")
    if any(any(v.values()) for v in s["http"].values()):
        L.append("### 5. HTTP: the chat route with its limiter stack vs without")
        L.append("")
        L.append("| connections | variant | req/s (median, spread) | p50 µs | p90 µs | p99 µs "
                 "(spread) | added p50 µs | added p99 µs |")
        L.append("|---|---|---|---|---|---|---|---|")
        for c in conc:
            row = s["http"][str(c)]
            off = row.get("off")
            for v in HTTP_VARIANTS:
                a = row.get(v)
                if not a:
                    continue
                d50 = d99 = ""
                if off and v != "off":
                    d50 = fnum(a["p50_us"] - off["p50_us"])
                    d99 = fnum(a["p99_us"] - off["p99_us"])
                L.append(f"| {c} | {v} | {fnum(a['ops'])} ({fnum(a['ops_min'])}–"
                         f"{fnum(a['ops_max'])}) | {fus(a['p50_us'])} | {fus(a['p90_us'])} | "
                         f"{fus(a['p99_us'])} ({fus(a['p99_min'])}–{fus(a['p99_max'])}) | "
                         f"{d50} | {d99} |")
        L.append("")
        L.append("Variants (one process, `cargo bench -p api --bench http_stack`, four routers of "
                 "one service on loopback ports, echo pipeline, same outer layers: request id, "
                 "client IP, request counters, JWT auth):")
        L.append("")
        for v in HTTP_VARIANTS:
            L.append(f"- `{v}`: {HTTP_WHAT[v]}.")
        L.append("")
        L.append("Load: `wrk -t min(C,2) -c C --latency` with a Lua script sending "
                 "`{\"message\":\"q\"}` with one of 1000 users' tokens and a random "
                 "`X-Forwarded-For` client (trusted from 127.0.0.1) per request; caps, windows and "
                 "quota so high that nothing is refused or queued (the cost of the checks, not of "
                 "waiting). wrk, the server (2 tokio workers), Redis and PostgreSQL share the "
                 "2 cores. Added latency = the variant's median p50 (p99) minus `off`'s, same run.")
        L.append("")

    if files:
        L.append("### Plots")
        L.append("")
        for f in files:
            L.append(f"![{f}](bench/results/{f})")
        L.append("")
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes.md")
    if os.path.exists(notes):
        L.append(open(notes).read().strip())
        L.append("")
    return "\n".join(L)


def write_all(res, root):
    outdir = os.path.join(root, "bench", "results")
    os.makedirs(outdir, exist_ok=True)
    s = summarize(res)
    res["summary"] = s
    with open(os.path.join(outdir, "latest.json"), "w") as f:
        json.dump(res, f, indent=1)
    files = plots(res, s, outdir)
    splice(os.path.join(root, "BENCHMARKS.md"), HEADING, markdown(res, s, files))
    print(f"wrote bench/results/latest.json, {', '.join(files)}, BENCHMARKS.md section")


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "bench", "results",
                                                              "latest.json")
    write_all(json.load(open(path)), root)
