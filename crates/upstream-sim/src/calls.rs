//! The log of LLM calls, one record per request: its end user (the `user` field), when it
//! started being answered and when it ended, in ms since the simulator started. From it a test
//! reads how many calls ran at once at any instant of any period, for any set of users: the
//! exact maximum over an outage, say, rather than what polling every 50 ms happened to see.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// One LLM call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmCall {
    /// The request's `user` field.
    pub user: String,
    /// When its body was parsed (ms since the simulator started).
    pub start_ms: u64,
    /// When its answer (or stream) ended or the client left; `None` while it runs.
    pub end_ms: Option<u64>,
}

/// The most recent calls, oldest first, bounded; each has a sequence number to close it by.
#[derive(Debug, Default)]
pub(crate) struct CallLog {
    calls: VecDeque<(u64, LlmCall)>,
    next: u64,
}

impl CallLog {
    /// Records a call starting now; returns its number.
    pub(crate) fn start(&mut self, user: &str, at_ms: u64, capacity: usize) -> u64 {
        if self.calls.len() >= capacity {
            self.calls.pop_front();
        }
        let seq = self.next;
        self.next += 1;
        self.calls.push_back((
            seq,
            LlmCall {
                user: user.to_string(),
                start_ms: at_ms,
                end_ms: None,
            },
        ));
        seq
    }

    /// Records the end of call `seq` (if it is still in the log).
    pub(crate) fn end(&mut self, seq: u64, at_ms: u64) {
        // Calls end roughly in order: search from the newest.
        if let Some((_, c)) = self.calls.iter_mut().rev().find(|(s, _)| *s == seq) {
            c.end_ms = Some(at_ms);
        }
    }

    /// Forgets the calls that have ended (a stats reset); running ones stay.
    pub(crate) fn reset(&mut self) {
        self.calls.retain(|(_, c)| c.end_ms.is_none());
    }

    pub(crate) fn snapshot(&self) -> Vec<LlmCall> {
        self.calls.iter().map(|(_, c)| c.clone()).collect()
    }
}

/// The most calls running at once at any instant of `[from_ms, to_ms]`, counting the calls
/// `keep` accepts. A call runs over `[start_ms, end_ms)`: one ending at the instant another
/// starts does not overlap it.
pub fn max_concurrent(
    calls: &[LlmCall],
    from_ms: u64,
    to_ms: u64,
    keep: impl Fn(&LlmCall) -> bool,
) -> usize {
    // The count in force when the period begins, then every count it changes to within it.
    let mut in_force = 0;
    let mut max = 0;
    for (t, n) in concurrency_steps(calls, keep) {
        if t <= from_ms {
            in_force = n;
        } else if t <= to_ms {
            max = max.max(n);
        }
    }
    in_force.max(max)
}

/// The first instant at or after `from_ms` at which `n` calls that `keep` accepts ran at once.
pub fn first_reached(
    calls: &[LlmCall],
    n: usize,
    from_ms: u64,
    keep: impl Fn(&LlmCall) -> bool,
) -> Option<u64> {
    let steps = concurrency_steps(calls, keep);
    let at_start = steps
        .iter()
        .take_while(|(t, _)| *t <= from_ms)
        .last()
        .map_or(0, |(_, c)| *c);
    if at_start >= n {
        return Some(from_ms);
    }
    steps
        .into_iter()
        .find(|(t, c)| *t > from_ms && *c >= n)
        .map(|(t, _)| t)
}

/// (instant, calls running from then on), one entry per instant at which the count changes.
fn concurrency_steps(calls: &[LlmCall], keep: impl Fn(&LlmCall) -> bool) -> Vec<(u64, usize)> {
    // Ends sort before starts at the same instant (false < true).
    let mut events: Vec<(u64, bool)> = calls
        .iter()
        .filter(|c| keep(c))
        .flat_map(|c| std::iter::once((c.start_ms, true)).chain(c.end_ms.map(|e| (e, false))))
        .collect();
    events.sort_unstable();
    let mut steps: Vec<(u64, usize)> = Vec::new();
    let mut running = 0usize;
    for (t, is_start) in events {
        running = if is_start {
            running + 1
        } else {
            running.saturating_sub(1)
        };
        match steps.last_mut() {
            Some((last, n)) if *last == t => *n = running,
            _ => steps.push((t, running)),
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(user: &str, start_ms: u64, end_ms: Option<u64>) -> LlmCall {
        LlmCall {
            user: user.into(),
            start_ms,
            end_ms,
        }
    }

    #[test]
    fn concurrency_in_a_period() {
        let calls = [
            call("a", 0, Some(100)),
            call("b", 50, Some(150)),
            call("c", 100, Some(300)), // starts as `a` ends: no overlap with it
            call("a", 200, None),      // still running
        ];
        let all = |_: &LlmCall| true;
        assert_eq!(max_concurrent(&calls, 0, 1000, all), 2);
        // Only the period counts, including what runs when it begins.
        assert_eq!(max_concurrent(&calls, 120, 180, all), 2);
        assert_eq!(max_concurrent(&calls, 160, 190, all), 1);
        assert_eq!(max_concurrent(&calls, 400, 500, all), 1);
        assert_eq!(max_concurrent(&calls, 0, 1000, |c| c.user == "a"), 1);
        assert_eq!(first_reached(&calls, 2, 0, all), Some(50));
        assert_eq!(first_reached(&calls, 2, 60, all), Some(60));
        assert_eq!(first_reached(&calls, 2, 160, all), Some(200));
        assert_eq!(first_reached(&calls, 3, 0, all), None);
    }

    #[test]
    fn the_log_is_bounded_and_a_reset_keeps_running_calls() {
        let mut log = CallLog::default();
        let a = log.start("a", 0, 2);
        let b = log.start("b", 1, 2);
        log.end(a, 5);
        let c = log.start("c", 6, 2); // `a` falls out
        assert_eq!(log.snapshot().len(), 2);
        log.end(b, 7);
        log.reset();
        let left = log.snapshot();
        assert_eq!(left, vec![call("c", 6, None)]);
        log.end(c, 9);
        assert_eq!(log.snapshot()[0].end_ms, Some(9));
    }
}
