"""Renders the soak's time series (bench/results/soak-series.json) as PNG plots next to it.

    bench/.venv/bin/python bench/soak_plot.py [soak-series.json]

Three figures, faults drawn as shaded spans with their kind on top:
  soak-cap.png      LLM calls at once at the simulator: the most at any instant between two samples,
                    and the count when sampled, against the cap
  soak-memory.png   each replica's RSS, Redis used_memory and key count, with the ±10 % band around
                    the median from the first sixth of the run on (the goal's window)
  soak-latency.png  p50 and p99 latency of answered requests per latency bucket, the p99 per
                    5-minute bucket as steps, and refusals / lost connections per bucket
"""

import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

FAULT_COLORS = {"KillReplica": "#d62728", "RedisRestart": "#9467bd", "Partition": "#ff7f0e",
                "PostgresRestart": "#2ca02c"}
FAULT_LABELS = {"KillReplica": "kill", "RedisRestart": "Redis", "Partition": "partition",
                "PostgresRestart": "PG"}


def minutes(ts):
    return [t / 60 for t in ts]


def mark_faults(ax, faults, label=False):
    for f in faults:
        lo, hi = f["t"] / 60, max(f["until"], f["t"] + 1) / 60
        ax.axvspan(lo, hi, color=FAULT_COLORS.get(f["kind"], "grey"), alpha=0.25, lw=0)
        if label:
            ax.annotate(FAULT_LABELS.get(f["kind"], f["kind"]), (lo, 1.01),
                        xycoords=("data", "axes fraction"), fontsize=7, rotation=60,
                        va="bottom", ha="left", color=FAULT_COLORS.get(f["kind"], "grey"))


def steady_band(ax, ts, ys, start_s, color):
    vals = [y for t, y in zip(ts, ys) if t >= start_s and y is not None]
    if not vals:
        return
    m = statistics.median(vals)
    ax.axhspan(m * 0.9, m * 1.1, color=color, alpha=0.08, lw=0)
    ax.axvline(start_s / 60, color="grey", ls=":", lw=0.8)


def save(fig, outdir, name):
    fig.tight_layout()
    path = os.path.join(outdir, name)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"soak_plot: wrote {path}")


def main(path):
    with open(path) as f:
        s = json.load(f)
    meta, samples, faults = s["meta"], s["samples"], s["faults"]
    outdir = os.path.dirname(os.path.abspath(path))
    ts = [x["t"] for x in samples]
    steady_from = meta["minutes"] * 60 / 6
    title = (f"soak: {meta['minutes']:g} min, {meta['users']} users, 3 replicas, a fault every "
             f"{meta['fault_every_s']:g} s")

    # The cap.
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.step(minutes(ts), [x["llm_max"] for x in samples], where="pre", lw=1.5,
            label=f"most at once since the previous sample (every {meta['sample_every_s']:g} s)")
    ax.plot(minutes(ts), [x["llm_in_flight"] for x in samples], ".", ms=2, color="#7f7f7f",
            label="at the sample")
    ax.axhline(meta["cap"], color="#d62728", ls="--", lw=1, label=f"cap {meta['cap']}")
    mark_faults(ax, faults, label=True)
    ax.set_ylim(0, meta["cap"] * 1.3)
    ax.set_xlabel("minutes")
    ax.set_ylabel("LLM calls at once")
    ax.set_title(f"{title}: LLM calls in flight at the simulator (most over the run "
                 f"{meta['llm_max']})", fontsize=10, pad=22)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    save(fig, outdir, "soak-cap.png")

    # Memory and keys.
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    for i in range(meta["replicas"]):
        ys = [x["rss_kb"][i] / 1024 if x["rss_kb"][i] is not None else None for x in samples]
        a1.plot(minutes(ts), [y if y is not None else float("nan") for y in ys], lw=1,
                color=colors[i], label=f"replica {i}" + (" (never restarted)" if i == 0 else ""))
        if i == 0:
            steady_band(a1, ts, ys, steady_from, colors[i])
    a1.set_ylabel("RSS MiB")
    a1.set_ylim(bottom=0)
    a1.legend(fontsize=7, loc="lower right")
    a1.set_title(f"{title}: memory (band: ±10 % of the median from minute "
                 f"{steady_from / 60:.1f} on)", fontsize=10, pad=22)
    um = [x["used_memory"] / 1e6 if x["used_memory"] is not None else None for x in samples]
    a2.plot(minutes(ts), [y if y is not None else float("nan") for y in um], lw=1,
            color="#d62728")
    steady_band(a2, ts, um, steady_from, "#d62728")
    a2.set_ylabel("Redis used_memory MB")
    a2.set_ylim(bottom=0)
    keys = [x["keys"] if x["keys"] is not None else float("nan") for x in samples]
    a3.plot(minutes(ts), keys, lw=1, color="#9467bd")
    a3.axhline(meta["keys_before"], color="black", ls="--", lw=0.8,
               label=f"before the load ({meta['keys_before']})")
    a3.set_ylabel("Redis keys")
    a3.set_xlabel("minutes")
    a3.legend(fontsize=7, loc="lower right")
    for ax in (a1, a2, a3):
        mark_faults(ax, faults, label=ax is a1)
        ax.grid(alpha=0.3)
    save(fig, outdir, "soak-memory.png")

    # Latency.
    lat = s["latency"]
    lt = [b["t"] + meta["latency_bucket_s"] / 2 for b in lat]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True,
                                 gridspec_kw={"height_ratios": [2, 1]})
    nan = float("nan")
    a1.plot(minutes(lt), [b["p50_ms"] if b["p50_ms"] is not None else nan for b in lat], lw=1,
            label=f"p50 per {meta['latency_bucket_s']:g} s")
    a1.plot(minutes(lt), [b["p99_ms"] if b["p99_ms"] is not None else nan for b in lat], lw=1,
            label=f"p99 per {meta['latency_bucket_s']:g} s")
    for b in s["p99_buckets"]:
        if b["p99_ms"] is not None:
            a1.hlines(b["p99_ms"], b["from_s"] / 60, b["to_s"] / 60, color="black", lw=1.5)
    if s["p99_buckets"]:
        b0 = s["p99_buckets"][0]
        a1.plot([], [], color="black", lw=1.5,
                label=f"p99 per {(b0['to_s'] - b0['from_s']) / 60:g}-minute bucket")
    # Log scale: a few refusals after the whole queue wait would flatten the rest.
    a1.set_yscale("log")
    a1.set_ylabel("latency ms (answered, log)")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    a1.yaxis.set_major_formatter(plain)
    a1.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    a1.legend(fontsize=7, loc="upper right")
    a1.set_title(f"{title}: latency by request start", fontsize=10, pad=22)
    w = meta["latency_bucket_s"] / 60
    a2.bar(minutes([b["t"] for b in lat]), [b["refused"] for b in lat], width=w, align="edge",
           color="#ff7f0e", label="refused (503 with Retry-After)")
    a2.bar(minutes([b["t"] for b in lat]), [b["lost"] for b in lat], width=w, align="edge",
           bottom=[b["refused"] for b in lat], color="#d62728",
           label="connection lost (replica killed)")
    a2.set_ylabel("requests")
    a2.set_xlabel("minutes")
    a2.legend(fontsize=7, loc="upper right")
    for ax in (a1, a2):
        mark_faults(ax, faults, label=ax is a1)
        ax.grid(alpha=0.3)
    save(fig, outdir, "soak-latency.png")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else
         os.path.join(os.path.dirname(__file__), "results", "soak-series.json"))
