//! Load: many users (one JWT each, `sub` = user id) from many client IPs (`X-Forwarded-For`,
//! which the replicas believe from 127.0.0.1), each a worker sending chats one after another
//! until told to stop. The workers play the load balancer too: round robin over the replicas,
//! and a connection that cannot be opened (a replica stopped or restarting) is tried on the next
//! one, as nginx's `proxy_next_upstream error` does; the request never reached a server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::fleet::JWT_SECRET;

/// A JWT for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    api::jwt::sign_hs256(
        JWT_SECRET.as_bytes(),
        &serde_json::json!({"sub": user, "exp": exp, "aud": "authenticated"}),
    )
}

/// A distinct client address for user number `n`.
pub fn ip(n: usize) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// What one request got.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub user: String,
    /// Replica index it was answered by (or failed on).
    pub replica: usize,
    pub started: Instant,
    pub finished: Instant,
    /// HTTP status; 0 when no response came (see `error`).
    pub status: u16,
    /// Problem `code` of an error response.
    pub code: String,
    pub retry_after: bool,
    /// Transport error, when no response came.
    pub error: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status == 200
    }

    /// A failure the client is told how to handle: an HTTP error with `Retry-After`.
    pub fn retryable(&self) -> bool {
        self.status != 0 && self.retry_after
    }
}

/// Sends one chat as `user` from address `ip` to `base`.
pub async fn chat(
    client: &reqwest::Client,
    base: &str,
    replica: usize,
    user: &str,
    ip: &str,
) -> Result<Outcome, reqwest::Error> {
    let started = Instant::now();
    let r = client
        .post(format!("{base}/api/chat"))
        .bearer_auth(token(user))
        .header("x-forwarded-for", ip)
        .json(&serde_json::json!({"message": "Does metformin reduce cardiovascular risk?", "useRAG": false}))
        .send()
        .await?;
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    let body = r.text().await.unwrap_or_default();
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(String::from))
        .unwrap_or_default();
    Ok(Outcome {
        user: user.to_string(),
        replica,
        started,
        finished: Instant::now(),
        status,
        code,
        retry_after,
        error: None,
    })
}

/// How to load a fleet.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Base URLs of the replicas, in round-robin order.
    pub bases: Vec<String>,
    /// User ids, one worker each (IP: `ip(offset + index)`).
    pub users: Vec<String>,
    pub ip_offset: usize,
    /// Try the next replica when a connection cannot be opened.
    pub failover: bool,
}

/// Running workers; [`Load::stop`] returns every outcome.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    pub fn start(client: &reqwest::Client, opts: LoadOptions) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let bases = Arc::new(opts.bases);
        let workers = opts
            .users
            .into_iter()
            .enumerate()
            .map(|(n, user)| {
                let (client, stop, next, bases) =
                    (client.clone(), stop.clone(), next.clone(), bases.clone());
                let ip = ip(opts.ip_offset + n);
                let failover = opts.failover;
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let o = send_balanced(&client, &bases, &next, &user, &ip, failover).await;
                        // A refused request waits a little before the next, as a client told
                        // Retry-After would (shortened: the tests are about what happens next).
                        if !o.ok() {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        out.push(o);
                    }
                    out
                })
            })
            .collect();
        Load { stop, workers }
    }

    /// Asks every worker to stop after its current request and returns all outcomes.
    pub async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for w in self.workers {
            all.extend(w.await.expect("load worker"));
        }
        all
    }
}

/// One request through the client-side balancer: round robin; on a connection that cannot be
/// opened, the next replica (each at most once), then a short pause and another round (a whole
/// fleet restarting is not expected to last).
async fn send_balanced(
    client: &reqwest::Client,
    bases: &[String],
    next: &AtomicUsize,
    user: &str,
    ip: &str,
    failover: bool,
) -> Outcome {
    let started = Instant::now();
    let mut last_err = String::new();
    let mut replica = 0;
    for attempt in 0..bases.len() * 20 {
        replica = next.fetch_add(1, Ordering::Relaxed) % bases.len();
        match chat(client, &bases[replica], replica, user, ip).await {
            Ok(mut o) => {
                o.started = started;
                return o;
            }
            Err(e) if failover && e.is_connect() => {
                last_err = e.to_string();
                if attempt % bases.len() == bases.len() - 1 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err(e) => {
                last_err = format!("{e:?}");
                break;
            }
        }
    }
    Outcome {
        user: user.to_string(),
        replica,
        started,
        finished: Instant::now(),
        status: 0,
        code: String::new(),
        retry_after: false,
        error: Some(last_err),
    }
}

/// Counts of outcomes by (status, code), for messages.
pub fn summary(outcomes: &[Outcome]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for o in outcomes {
        let key = match &o.error {
            Some(e) => format!("transport: {}", e.chars().take(120).collect::<String>()),
            None if o.code.is_empty() => o.status.to_string(),
            None => format!("{} {}", o.status, o.code),
        };
        *m.entry(key).or_default() += 1;
    }
    m
}
