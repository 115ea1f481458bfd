//! The `fleetgate` binary: configuration errors name the variable and exit non-zero; `migrate`
//! applies the migrations; `serve` stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn fleetgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

/// `fleetgate migrate` against `db_url`; panics with its stderr on failure.
fn migrate_db(db_url: &str) {
    let out = fleetgate()
        .arg("migrate")
        .env("FLEETGATE_DATABASE_URL", db_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `fleetgate serve` on `port` with the echo pipeline, the test Redis under `prefix`, `db_url`.
fn serve_echo(db_url: &str, prefix: &str, port: u16) -> Command {
    let mut c = fleetgate();
    c.arg("serve")
        .env("FLEETGATE_DATABASE_URL", db_url)
        .env("FLEETGATE_REDIS_URL", testkit::redis_url())
        .env("FLEETGATE_REDIS_PREFIX", prefix)
        .env("FLEETGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLEETGATE_JWT_SECRET", JWT_SECRET)
        .env("FLEETGATE_PIPELINE", "echo");
    c
}

/// Polls `/readyz` until the served binary is ready (10 s at most).
async fn wait_ready(c: &reqwest::Client, url: &str) {
    for _ in 0..100 {
        if c.get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server did not come up");
}

/// SIGTERM, then waits (15 s at most) for the process to drain and exit 0.
async fn sigterm_and_wait(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "exited after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn missing_secret_and_bad_values_name_the_variable() {
    let out = fleetgate().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FLEETGATE_JWT_SECRET"), "{err}");

    let out = fleetgate()
        .arg("serve")
        .env("FLEETGATE_JWT_SECRET", "s3cret-value-never-printed")
        .env("FLEETGATE_QUEUE_TIMEOUT_MS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FLEETGATE_QUEUE_TIMEOUT_MS"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");

    let out = fleetgate()
        .arg("serve")
        .env("FLEETGATE_CONFIG", "/nonexistent/fleetgate.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLEETGATE_CONFIG"));

    let out = fleetgate().arg("bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_then_serve_then_sigterm() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("cli");
    migrate_db(&db.url);
    let port = testkit::free_port();
    let mut child = serve_echo(&db.url, &prefix, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = client();
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&c, &url).await;
    let r = c
        .post(format!("{url}/api/chat"))
        .bearer_auth(token("cli-user"))
        .json(&serde_json::json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["queriesRemaining"], 2);
    // SIGTERM: the process drains and exits 0.
    sigterm_and_wait(&mut child).await;
}

/// An OTLP/gRPC trace receiver (HTTP/2 cleartext) on a loopback port: decodes each export's
/// length-prefixed `ExportTraceServiceRequest` and answers OK.
async fn grpc_receiver() -> (
    String,
    std::sync::Arc<
        std::sync::Mutex<
            Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
        >,
    >,
) {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&got);
    let app = axum::Router::new().route(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = std::sync::Arc::clone(&sink);
            async move {
                // gRPC framing: 1 byte compression flag, 4 bytes big-endian length, message.
                let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
                let req = ExportTraceServiceRequest::decode(&body[5..5 + len]).unwrap();
                sink.lock().unwrap().push(req);
                let msg = ExportTraceServiceResponse::default().encode_to_vec();
                let mut framed = vec![0u8];
                framed.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
                framed.extend_from_slice(&msg);
                // Status in the headers: a gRPC client reads it there too ("trailers-only"
                // style) when no trailers follow.
                (
                    [("content-type", "application/grpc"), ("grpc-status", "0")],
                    framed,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

/// The binary as operators run it: OTLP over gRPC from the standard variables (service name and
/// resource attributes included), JSON logs whose every line inside a request names its request
/// id and trace id, and pending spans flushed at SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_traces_by_grpc_and_logs_json_lines_with_ids() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("cli-otel");
    migrate_db(&db.url);
    let (endpoint, got) = grpc_receiver().await;
    let port = testkit::free_port();
    let log = std::env::temp_dir().join(format!("{prefix}.log"));
    let mut child = serve_echo(&db.url, &prefix, port)
        .env("FLEETGATE_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,api::auth=debug")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_SERVICE_NAME", "fleetgate-cli-test")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test",
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let c = client();
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&c, &url).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = c
        .post(format!("{url}/api/chat"))
        .bearer_auth(token("cli-otel-user"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&serde_json::json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A refused token: logged at debug inside the request.
    let r = c
        .post(format!("{url}/api/chat"))
        .bearer_auth("not-a-jwt")
        .json(&serde_json::json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let refused_id = r.headers()["x-request-id"].to_str().unwrap().to_string();

    sigterm_and_wait(&mut child).await;

    // Spans arrived by gRPC (the batch was flushed at shutdown, well before its 5 s delay
    // would have sent it), with the resource from the OTEL_* variables.
    let exports = got.lock().unwrap().clone();
    let mut server_spans = 0;
    for e in &exports {
        for rs in &e.resource_spans {
            let res = rs.resource.as_ref().unwrap();
            let attr = |k: &str| {
                res.attributes.iter().find(|kv| kv.key == k).and_then(|kv| {
                    match kv.value.as_ref()?.value.as_ref()? {
                        AnyValue::StringValue(s) => Some(s.clone()),
                        _ => None,
                    }
                })
            };
            assert_eq!(attr("service.name").as_deref(), Some("fleetgate-cli-test"));
            assert_eq!(attr("deployment.environment.name").as_deref(), Some("test"));
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    if s.name == "POST /api/chat" {
                        server_spans += 1;
                    }
                }
            }
        }
    }
    assert_eq!(server_spans, 2, "both requests exported: {exports:?}");
    let with_trace = exports
        .iter()
        .flat_map(|e| &e.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .filter(|s| {
            s.trace_id
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                == trace_id
        })
        .count();
    assert!(
        with_trace >= 4,
        "server, auth, window, queue, lease, quota spans share the trace"
    );

    // JSON logs: one object per line; every line logged inside a request carries its ids.
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let mut in_request = 0;
    let mut refused_line = false;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let Some(spans) = v["spans"].as_array() else {
            continue;
        };
        let root = spans
            .iter()
            .find(|s| s["name"] == "http.request")
            .unwrap_or_else(|| panic!("a request line without the request span: {line}"));
        assert!(
            root["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{line}"
        );
        assert_eq!(root["trace_id"].as_str().map(str::len), Some(32), "{line}");
        in_request += 1;
        if v["fields"]["message"] == "token refused" {
            assert_eq!(root["request_id"], refused_id.as_str(), "{line}");
            refused_line = true;
        }
    }
    assert!(in_request >= 1 && refused_line, "{text}");
}
