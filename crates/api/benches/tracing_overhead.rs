//! Requests/s of the chat route with OTLP trace export on vs off (target: under
//! 10 % lost). Each mode is a real `fleetgate serve` process (echo pipeline, every layer,
//! the machine's Redis and PostgreSQL); "on" exports every span by OTLP/HTTP to a receiver in
//! this process that decodes each batch, as a collector would. Modes alternate for several
//! rounds under the same closed-loop load; medians and the spread are printed.
//!
//! `cargo bench -p api --bench tracing_overhead -- [--rounds 5] [--secs 8] [--conc 16]`
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An OTLP/HTTP receiver that decodes every batch and counts the spans.
async fn receiver(spans: Arc<AtomicU64>) -> String {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message;
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let spans = Arc::clone(&spans);
            async move {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                let n: usize = req
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum();
                spans.fetch_add(n as u64, Ordering::Relaxed);
                ExportTraceServiceResponse::default().encode_to_vec()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1/traces")
}

fn serve(db_url: &str, port: u16, otlp: Option<&str>, round: u64) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    c.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FLEETGATE_DATABASE_URL", db_url)
        .env(
            "FLEETGATE_REDIS_PREFIX",
            format!("bench-otel-{}-{round}", std::process::id()),
        )
        .env("FLEETGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLEETGATE_JWT_SECRET", SECRET)
        .env("FLEETGATE_PIPELINE", "echo")
        .env("FLEETGATE_CHAT_PER_IP_PER_MIN", "1000000")
        .env("FLEETGATE_FREE_DAILY_QUERIES", "100000000")
        .env("FLEETGATE_MAX_CONCURRENT_GLOBAL", "1000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(e) = otlp {
        c.env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .env("OTEL_SERVICE_NAME", "fleetgate-bench");
    }
    c.spawn().unwrap()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Closed-loop load: `conc` workers, each its own user, for `secs`; returns answered req/s.
async fn load(c: &reqwest::Client, url: &str, conc: u64, secs: u64, tag: &str) -> f64 {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..conc {
        let token = api::auth::jwt::sign_hs256(
            SECRET.as_bytes(),
            &serde_json::json!({"sub": format!("bench-{tag}-{w}"), "exp": exp}),
        );
        let (c, url, done) = (c.clone(), url.to_string(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let r = c
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"message": "q"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = arg("--rounds", 5);
    let secs = arg("--secs", 8);
    let conc = arg("--conc", 16);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let admin = std::env::var("FLEETGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("fg_bench_otel_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let db_url = format!("{base}/{db}");
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .arg("migrate")
        .env("FLEETGATE_DATABASE_URL", &db_url)
        .output()
        .unwrap();
    assert!(out.status.success());

    let spans = Arc::new(AtomicU64::new(0));
    let endpoint = receiver(Arc::clone(&spans)).await;
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for export in [false, true] {
            let port = free_port();
            let child = serve(&db_url, port, export.then_some(endpoint.as_str()), round);
            let base = format!("http://127.0.0.1:{port}");
            let mut ready = false;
            for _ in 0..200 {
                if c.get(format!("{base}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
                {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(ready);
            let url = format!("{base}/api/chat");
            let tag = format!("{round}-{export}");
            load(&c, &url, conc, 1, &format!("warm-{tag}")).await;
            let before = spans.load(Ordering::Relaxed);
            let rps = load(&c, &url, conc, secs, &tag).await;
            stop(child);
            let exported = spans.load(Ordering::Relaxed) - before;
            println!(
                "round {round} export={:<5} {rps:>7.0} req/s  spans received {exported}",
                export
            );
            if export {
                assert!(exported > 0, "the exporting replica sent spans");
                on.push(rps);
            } else {
                off.push(rps);
            }
        }
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0}-{hi:.0}")
    };
    let (s_off, s_on) = (spread(&off), spread(&on));
    let (m_off, m_on) = (median(&mut off), median(&mut on));
    println!(
        "\nchat req/s at c={conc}, {secs} s x {rounds} rounds: export off {m_off:.0} ({s_off}), \
         on {m_on:.0} ({s_on}); lost {:.1} %",
        (1.0 - m_on / m_off) * 100.0
    );
    let _ = conn
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {db} WITH (FORCE)"
        )))
        .await;
}
