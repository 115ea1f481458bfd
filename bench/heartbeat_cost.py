"""What one replica's admission heartbeat costs Redis under queued load.

    cargo bench -p limiter-core --bench scenarios --no-run     # prints the runner's path
    bench/.venv/bin/python bench/heartbeat_cost.py RUNNER [RUNNER ...]

Each runner (limiter-core's `scenarios` bench binary, of any revision) runs `lease` at 64
callers, cap 20 (callers wait), for 6 s against a fresh redis-server whose slow log records
every call. Printed per runner: pairs/s, the heartbeats' own execution times in µs (Redis's
measure), the longest call and how many calls took over 1 ms. Runners alternate, twice.
"""
import json
import subprocess
import sys

from scratch_redis import scratch_redis


def run(r, url, runner, secs=6):
    r.flushall()
    r.config_set("slowlog-log-slower-than", 0)
    r.config_set("slowlog-max-len", 1_000_000)
    r.slowlog_reset()
    out = subprocess.run(
        [runner, "--scenario", "lease", "--concurrency", "64", "--secs", str(secs),
         "--redis", url, "--prefix", "hb", "--keys", "10000", "--cap", "20"],
        capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    log = r.slowlog_get(1_000_000)
    r.config_set("slowlog-log-slower-than", 10_000)
    hb = sorted(e["duration"] for e in log if b"admission_heartbeat" in e["command"][:40])
    calls = [e["duration"] for e in log]
    return res, hb, calls


def main():
    with scratch_redis() as (r, port):
        url = f"redis://127.0.0.1:{port}"
        print("| runner | pairs/s | heartbeats (µs each) | longest call µs | calls over 1 ms |")
        print("|---|---|---|---|---|")
        for _ in range(2):
            for runner in sys.argv[1:]:
                res, hb, calls = run(r, url, runner)
                print(f"| {runner} | {res['ops_per_sec']:.0f} | {', '.join(map(str, hb))} "
                      f"| {max(calls)} | {sum(1 for c in calls if c > 1000)} |")

if __name__ == "__main__":
    main()
