//! The outbound wrapper against a real HTTP upstream on loopback (a tiny server that answers per
//! a script and records when each request reached it) and the machine's Redis for pacing and
//! breakers.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use breaker_store::{
    Attempt, BreakerPolicy, Breakers, CallError, Outbound, OutboundConfig, RetryPolicy,
    ServiceOutbound, StatusClass, classify_status, parse_retry_after,
};
use common::*;
use limiter_core::Pacer;
use testkit::{redis_url, unique_prefix};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A fake upstream: for each path, the responses to give in order (status, Retry-After); the
/// last one repeats. Records the arrival time of every request.
#[derive(Clone)]
struct Upstream {
    addr: std::net::SocketAddr,
    arrivals: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Upstream {
    async fn start(script: HashMap<String, Vec<(u16, Option<&'static str>)>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        let script = Arc::new(script);
        tokio::spawn(async move {
            let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (seen, script, counts) = (seen.clone(), script.clone(), counts.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut len = 0;
                    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf[len..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => len += n,
                        }
                    }
                    let at = Instant::now();
                    let head = String::from_utf8_lossy(&buf[..len]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    seen.lock().unwrap().push((path.clone(), at));
                    let n = {
                        let mut c = counts.lock().unwrap();
                        let e = c.entry(path.clone()).or_insert(0);
                        *e += 1;
                        *e - 1
                    };
                    let plan = &script[&path];
                    let (status, retry_after) = plan[n.min(plan.len() - 1)];
                    let extra = retry_after
                        .map(|r| format!("Retry-After: {r}\r\n"))
                        .unwrap_or_default();
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok"
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        Upstream { addr, arrivals }
    }

    /// One GET, classified the way an upstream client would.
    async fn get(&self, path: &str) -> Attempt<u16, String> {
        let mut s = match TcpStream::connect(self.addr).await {
            Ok(s) => s,
            Err(e) => {
                return Attempt::Failure {
                    error: e.to_string(),
                    retry_after: None,
                };
            }
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: upstream\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        let status: u16 = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
        let retry_after = resp
            .lines()
            .find_map(|l| l.strip_prefix("Retry-After: "))
            .and_then(parse_retry_after);
        match classify_status(status) {
            StatusClass::Success => Attempt::Success(status),
            StatusClass::Rejected => Attempt::Rejected(format!("status {status}")),
            StatusClass::Failure => Attempt::Failure {
                error: format!("status {status}"),
                retry_after,
            },
        }
    }

    fn arrivals(&self) -> Vec<(String, Instant)> {
        let mut v = self.arrivals.lock().unwrap().clone();
        v.sort_by_key(|(_, t)| *t);
        v
    }
}

fn lenient_policy() -> BreakerPolicy {
    BreakerPolicy {
        failure_threshold: 100,
        ..BreakerPolicy::default()
    }
}

fn outbound(b: &Breakers, rate: f64, retry: RetryPolicy) -> Outbound {
    let pacer = Pacer::new(b.redis().clone(), SERVICE, rate, 1).unwrap();
    Outbound::new(
        b.clone(),
        OutboundConfig {
            retry,
            ..OutboundConfig::default()
        },
    )
    .with_service(
        SERVICE,
        ServiceOutbound {
            pacer: Some(pacer),
            ..ServiceOutbound::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_503_then_200_succeeds_on_the_third_attempt_spaced_by_backoff() {
    let up = Upstream::start(HashMap::from([(
        "/a".to_string(),
        vec![(503, None), (503, None), (200, None)],
    )]))
    .await;
    let prefix = unique_prefix("out-retry");
    let rs = replicas(&redis_url(), &prefix, 1, &config(lenient_policy()));
    let retry = RetryPolicy {
        base: Duration::from_millis(300),
        full_jitter: false,
        ..RetryPolicy::default()
    };
    let out = outbound(&rs[0], 4.0, retry);
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let res = out
        .call(SERVICE, true, |n| {
            seen.lock().unwrap().push(n);
            let up = up.clone();
            async move { up.get("/a").await }
        })
        .await;
    assert_eq!(res.unwrap(), 200);
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2, 3]);
    let t: Vec<Instant> = up.arrivals().into_iter().map(|(_, t)| t).collect();
    assert_eq!(t.len(), 3, "the upstream saw exactly 3 requests");
    // Backoff 300 ms then 600 ms (no jitter here), each a lower bound.
    assert!(
        t[1] - t[0] >= Duration::from_millis(300),
        "{:?}",
        t[1] - t[0]
    );
    assert!(
        t[2] - t[1] >= Duration::from_millis(600),
        "{:?}",
        t[2] - t[1]
    );
    let s = snapshot_when(&rs[0], |s| s.calls_in_window == 3).await;
    assert_eq!(
        (s.calls_in_window, s.failures_in_window),
        (3, 2),
        "every attempt counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_from_three_replicas_never_exceed_the_pace() {
    let plan = vec![(503, None), (503, None), (200, None)];
    let up = Upstream::start(HashMap::from([
        ("/r0".to_string(), plan.clone()),
        ("/r1".to_string(), plan.clone()),
        ("/r2".to_string(), plan),
    ]))
    .await;
    let prefix = unique_prefix("out-pace");
    let rs = replicas(&redis_url(), &prefix, 3, &config(lenient_policy()));
    let retry = RetryPolicy {
        base: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let rate = 5.0;
    let mut tasks = Vec::new();
    for (i, b) in rs.iter().enumerate() {
        let out = outbound(b, rate, retry.clone());
        let up = up.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/r{i}");
            out.call(SERVICE, true, |_| {
                let (up, path) = (up.clone(), path.clone());
                async move { up.get(&path).await }
            })
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    let t: Vec<Instant> = up.arrivals().into_iter().map(|(_, t)| t).collect();
    assert_eq!(t.len(), 9);
    // Slots are 200 ms apart fleet-wide; arrivals may lag their slot by scheduling, which can
    // only shrink a gap by that lag (a few ms on loopback).
    let interval = Duration::from_millis(200);
    for w in t.windows(2) {
        assert!(
            w[1] - w[0] >= interval - Duration::from_millis(10),
            "{:?}",
            w[1] - w[0]
        );
    }
    // Never more than `rate` requests in any 1 s window (less the same arrival-lag tolerance:
    // slots 0 ms and 1000 ms apart may arrive 999 ms apart).
    for (i, start) in t.iter().enumerate() {
        let window = Duration::from_millis(990);
        let n = t[i..].iter().take_while(|x| **x - *start < window).count();
        assert!(n <= 5, "{n} requests within 1 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_as_the_minimum_wait() {
    let up = Upstream::start(HashMap::from([(
        "/ra".to_string(),
        vec![(429, Some("1")), (200, None)],
    )]))
    .await;
    let prefix = unique_prefix("out-ra");
    let rs = replicas(&redis_url(), &prefix, 1, &config(lenient_policy()));
    let out = outbound(&rs[0], 10.0, RetryPolicy::default());
    let res = out
        .call(SERVICE, true, |_| {
            let up = up.clone();
            async move { up.get("/ra").await }
        })
        .await;
    assert_eq!(res.unwrap(), 200);
    let t: Vec<Instant> = up.arrivals().into_iter().map(|(_, t)| t).collect();
    assert_eq!(t.len(), 2);
    assert!(t[1] - t[0] >= Duration::from_secs(1), "{:?}", t[1] - t[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_calls_are_not_retried_and_4xx_is_passed_through() {
    let up = Upstream::start(HashMap::from([
        ("/post".to_string(), vec![(503, None), (200, None)]),
        ("/missing".to_string(), vec![(404, None)]),
    ]))
    .await;
    let prefix = unique_prefix("out-once");
    let rs = replicas(&redis_url(), &prefix, 1, &config(lenient_policy()));
    let out = outbound(&rs[0], 50.0, RetryPolicy::default());
    let res = out
        .call(SERVICE, false, |_| {
            let up = up.clone();
            async move { up.get("/post").await }
        })
        .await;
    assert!(
        matches!(res, Err(CallError::Upstream { attempts: 1, .. })),
        "{res:?}"
    );
    let res = out
        .call(SERVICE, true, |_| {
            let up = up.clone();
            async move { up.get("/missing").await }
        })
        .await;
    assert!(matches!(res, Err(CallError::Rejected { .. })), "{res:?}");
    assert_eq!(up.arrivals().len(), 2);
    let s = snapshot_when(&rs[0], |s| s.calls_in_window == 2).await;
    assert_eq!((s.calls_in_window, s.failures_in_window), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_failures_and_retried() {
    let prefix = unique_prefix("out-timeout");
    let rs = replicas(&redis_url(), &prefix, 1, &config(lenient_policy()));
    let out = Outbound::new(
        rs[0].clone(),
        OutboundConfig {
            timeout: Duration::from_millis(50),
            retry: RetryPolicy {
                base: Duration::from_millis(10),
                ..RetryPolicy::default()
            },
            ..OutboundConfig::default()
        },
    );
    let res: Result<(), CallError<()>> = out
        .call(SERVICE, true, |_| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Attempt::Success(())
        })
        .await;
    assert!(
        matches!(res, Err(CallError::Timeout { attempts: 3, .. })),
        "{res:?}"
    );
    let s = rs[0].snapshot(SERVICE).await.unwrap();
    assert_eq!(s.failures_in_window, 3);
}
