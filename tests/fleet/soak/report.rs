//! The soak's Markdown report and its JSON series file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::series::{LATENCY_BUCKET, SAMPLE_EVERY, Sample, samples_json};
use super::{Fault, HEARTBEAT_MS, LEASE_MS, LLM_MS, USERS};
use crate::harness::load::Outcome;

/// A fault: when it began and ended (s since the load started), and how long after its end every
/// replica was well again (`None`: not within a minute).
pub struct FaultRecord {
    pub at_s: f64,
    pub until_s: f64,
    pub fault: Fault,
    pub recovered: Option<Duration>,
}

/// Everything the run measured.
pub struct Run {
    pub minutes: f64,
    pub fault_every: Duration,
    pub total: Duration,
    pub llm_max: u64,
    pub outcomes_summary: BTreeMap<String, usize>,
    pub requests: usize,
    pub unanswered: usize,
    pub cut: usize,
    pub slots_left: Option<u64>,
    pub left: Value,
    pub keys_before: u64,
    pub keys_at_end: u64,
    pub keys_after: u64,
    pub keys_settled_after: Duration,
    /// Keys present once settled that were not there before the load.
    pub keys_new: Vec<String>,
    pub samples: Vec<Sample>,
    pub faults: Vec<FaultRecord>,
    /// Per 5-minute (1-minute for short runs) bucket: (from s, to s, p99 ms, answered).
    pub p99_buckets: Vec<(u64, u64, Option<u128>, usize)>,
    /// Per [`LATENCY_BUCKET`], see `series::latency_buckets`.
    pub latency: Vec<Value>,
    pub load_before: Option<f64>,
    pub load_after: Option<f64>,
}

/// What a replica's outcome is called in the summary; a transport error is a connection lost.
pub fn outcome_key(o: &Outcome) -> String {
    match (o.status, o.code.as_str()) {
        (0, _) => "connection lost".into(),
        (s, "") => s.to_string(),
        (s, code) => format!("{s} {code}"),
    }
}

/// (min, max, largest distance from the median in % of the median) of the values present.
fn flatness(values: impl Iterator<Item = Option<u64>>) -> Option<(u64, u64, f64)> {
    let mut v: Vec<u64> = values.flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let median = v[v.len() / 2] as f64;
    let (min, max) = (v[0], v[v.len() - 1]);
    let dev = (median - min as f64).max(max as f64 - median) * 100.0 / median.max(1.0);
    Some((min, max, dev))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "held" } else { "**missed**" }
}

impl Run {
    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut r = String::new();
        let w = &mut r;
        let _ = writeln!(
            w,
            "Soak: {} min, a fault every {:.0} s, {USERS} users on 3 replicas, LLM {LLM_MS} ms, \
             lease TTL {LEASE_MS} ms, heartbeat TTL {HEARTBEAT_MS} ms; machine load average \
             (1 min) {} at the start, {} at the end.\n",
            self.minutes,
            self.fault_every.as_secs_f64(),
            fmt_load(self.load_before),
            fmt_load(self.load_after),
        );
        let from = self.total.as_secs_f64() / 6.0;
        let steady: Vec<&Sample> = self.samples.iter().filter(|s| s.at_s >= from).collect();
        let keys_back = self.keys_after <= self.keys_before;
        let _ = writeln!(w, "Goals:\n");
        let _ = writeln!(
            w,
            "- cap never exceeded: {} — LLM calls at once, most over the run **{}** (cap 20); \
             the largest per-sample maximum {}",
            verdict(self.llm_max <= 20),
            self.llm_max,
            self.samples
                .iter()
                .filter_map(|s| s.llm_max)
                .max()
                .map_or("-".into(), |m| m.to_string())
        );
        let _ = writeln!(
            w,
            "- no slot leaked: {} — slots in use once the load stopped: {:?} (queue {})",
            verdict(self.slots_left == Some(0)),
            self.slots_left,
            self.left
        );
        let _ = writeln!(
            w,
            "- keys back to baseline: {} — {} before the load, {} at its end, {} {:.0} s after \
             it stopped; keys then that were not there before: {:?}",
            verdict(keys_back),
            self.keys_before,
            self.keys_at_end,
            self.keys_after,
            self.keys_settled_after.as_secs_f64(),
            self.keys_new
        );
        let _ = writeln!(
            w,
            "- flat within ±10 % of the median from {from:.0} s to the end ({} samples every \
             {} s):",
            steady.len(),
            SAMPLE_EVERY.as_secs()
        );
        for i in 0..3 {
            let note = if i == 0 {
                "never restarted"
            } else {
                "restarted by the kill faults"
            };
            if let Some((min, max, dev)) = flatness(steady.iter().map(|s| s.rss_kb[i])) {
                let _ = writeln!(
                    w,
                    "  - replica {i} RSS: {} — {min}–{max} kB, at most {dev:.1} % from the \
                     median ({note})",
                    verdict(dev <= 10.0)
                );
            }
        }
        if let Some((min, max, dev)) = flatness(steady.iter().map(|s| s.used_memory)) {
            let _ = writeln!(
                w,
                "  - Redis used_memory: {} — {min}–{max} B, at most {dev:.1} % from the median \
                 (emptied by each Redis restart)",
                verdict(dev <= 10.0)
            );
        }
        if let Some((min, max, _)) = flatness(steady.iter().map(|s| s.keys)) {
            let _ = writeln!(w, "  - Redis keys {min}–{max}");
        }
        let _ = writeln!(
            w,
            "- every answer a success or a refusal with Retry-After: {} — {} requests {:?}; \
             neither: {}; connection lost (in flight on a killed replica): {}",
            verdict(self.unanswered == 0),
            self.requests,
            self.outcomes_summary,
            self.unanswered,
            self.cut
        );
        let _ = writeln!(
            w,
            "\nFaults (start, kind, every replica shared again with Redis and PostgreSQL up, \
             after the fault ended; about 5 s means no replica was seen otherwise in the 5 s \
             watched first):\n"
        );
        for f in &self.faults {
            let rec = f.recovered.map_or("not within 60 s".into(), |d| {
                format!("{:.2} s", d.as_secs_f64())
            });
            let _ = writeln!(w, "- {:.0} s {:?}: {rec}", f.at_s, f.fault);
        }
        let _ = writeln!(
            w,
            "\np99 latency of answered requests (by start time):\n\n| from | to | p99 | answered |\n|---|---|---|---|"
        );
        for (lo, hi, p99, n) in &self.p99_buckets {
            let p = p99.map_or("-".into(), |p| format!("{p} ms"));
            let _ = writeln!(w, "| {lo} s | {hi} s | {p} | {n} |");
        }
        r
    }

    /// The series file: the run's settings, the samples, the latency buckets and the faults.
    pub fn series_json(&self) -> Value {
        json!({
            "meta": {
                "minutes": self.minutes,
                "fault_every_s": self.fault_every.as_secs_f64(),
                "sample_every_s": SAMPLE_EVERY.as_secs_f64(),
                "latency_bucket_s": LATENCY_BUCKET.as_secs_f64(),
                "users": USERS,
                "replicas": 3,
                "cap": 20,
                "llm_ms": LLM_MS,
                "lease_ttl_ms": LEASE_MS,
                "heartbeat_ttl_ms": HEARTBEAT_MS,
                "llm_max": self.llm_max,
                "keys_before": self.keys_before,
                "keys_after": self.keys_after,
                "slots_left": self.slots_left,
                "load_before": self.load_before,
                "load_after": self.load_after,
            },
            "samples": samples_json(&self.samples),
            "latency": self.latency,
            "p99_buckets": self.p99_buckets.iter().map(|(lo, hi, p, n)| json!({
                "from_s": lo, "to_s": hi, "p99_ms": p, "answered": n
            })).collect::<Vec<_>>(),
            "faults": self.faults.iter().map(|f| json!({
                "t": f.at_s,
                "until": f.until_s,
                "kind": format!("{:?}", f.fault),
                "recovered_s": f.recovered.map(|d| d.as_secs_f64()),
            })).collect::<Vec<_>>(),
        })
    }
}

fn fmt_load(l: Option<f64>) -> String {
    l.map_or("-".into(), |l| format!("{l:.2}"))
}
