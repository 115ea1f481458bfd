//! One trace per request: a RAG chat sent with a caller's `traceparent` is exported by OTLP
//! (http/protobuf) to a receiver in this test, which decodes `ExportTraceServiceRequest` itself.
//! The spans must all carry the caller's trace id, link to each other as the request flowed, and
//! the simulated upstreams must have received the same trace id.
//!
//! One test in this binary: the trace pipeline is a process-wide subscriber.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;
use upstream_sim::SimConfig;

type Received = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP trace receiver on a loopback port.
async fn receiver() -> (String, Received) {
    let spans: Received = Arc::default();
    let sink = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                let mut s = sink.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        s.extend(ss.spans);
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1/traces"), spans)
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(v) => Some(v.clone()),
            AnyValue::IntValue(v) => Some(v.to_string()),
            AnyValue::BoolValue(v) => Some(v.to_string()),
            AnyValue::DoubleValue(v) => Some(v.to_string()),
            _ => None,
        }
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rag_chat_is_one_trace_from_the_caller_to_the_upstreams() {
    let (endpoint, received) = receiver().await;
    let env: HashMap<&str, String> = HashMap::from([
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
    ]);
    let guard = api::telemetry::init_with(api::telemetry::LogFormat::Json, |k| env.get(k).cloned());

    let sim = upstream_sim::spawn(SimConfig::default()).await.unwrap();
    let db = common::TestDb::create().await;
    let mut cfg = common::config(&db, &testkit::unique_prefix("otel"));
    cfg.upstream.pubmed_rate_per_sec = 20;
    cfg.upstream.semantic_scholar_rate_per_sec = 20;
    let server = common::rag_replica(&sim, cfg).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let resp = common::client()
        .post(server.url("/api/chat"))
        .bearer_auth(common::token("otel-user"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"message": "statin therapy in elderly patients", "useRAG": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(!request_id.is_empty());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        !body["citations"].as_array().unwrap().is_empty(),
        "the RAG answer cites papers: {body}"
    );

    // Spans end as their work ends (the slot's release runs after the response): flush until
    // the lease span, the last to end, has arrived.
    let spans = {
        let mut waited = Duration::ZERO;
        loop {
            guard.flush();
            let spans = received.lock().unwrap().clone();
            if spans.iter().any(|s| s.name == "lease") || waited > Duration::from_secs(15) {
                break spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
    };

    // Every exported span belongs to the caller's trace (background work exports nothing).
    let foreign: Vec<_> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) != trace_id)
        .map(|s| s.name.clone())
        .collect();
    assert!(foreign.is_empty(), "spans outside the trace: {foreign:?}");
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let parent = |s: &Span| by_id.get(&s.parent_span_id).copied();
    let has_ancestor = |s: &Span, a: &Span| {
        let mut cur = parent(s);
        while let Some(p) = cur {
            if p.span_id == a.span_id {
                return true;
            }
            cur = parent(p);
        }
        false
    };
    let one = |pred: &dyn Fn(&Span) -> bool, what: &str| -> Span {
        spans
            .iter()
            .find(|s| pred(s))
            .unwrap_or_else(|| {
                let names: Vec<_> = spans.iter().map(|s| &s.name).collect();
                panic!("no {what} span among {names:?}")
            })
            .clone()
    };

    // The server span: a child of the caller's span, named by the route template.
    let server_span = one(
        &|s| s.kind == SpanKind::Server as i32 && attr(s, "http.route").is_some(),
        "server",
    );
    assert_eq!(server_span.name, "POST /api/chat");
    assert_eq!(hex(&server_span.parent_span_id), caller_span);
    assert_eq!(attr(&server_span, "http.request.method").unwrap(), "POST");
    assert_eq!(attr(&server_span, "http.route").unwrap(), "/api/chat");
    assert_eq!(
        attr(&server_span, "http.response.status_code").unwrap(),
        "200"
    );
    assert_eq!(attr(&server_span, "request_id").unwrap(), request_id);

    let child_of_server = |name: &str| {
        let s = one(&|s| s.name == name, name);
        assert_eq!(
            s.parent_span_id, server_span.span_id,
            "{name} is a child of the server span"
        );
        s
    };
    let auth = child_of_server("auth");
    assert_eq!(attr(&auth, "fleetgate.auth.outcome").unwrap(), "ok");
    let window = child_of_server("ratelimit.ip_window");
    assert_eq!(attr(&window, "fleetgate.ratelimit.policy").unwrap(), "chat");
    assert_eq!(
        attr(&window, "fleetgate.ratelimit.outcome").unwrap(),
        "allowed"
    );
    let wait = child_of_server("queue.wait");
    assert_eq!(attr(&wait, "fleetgate.queue.class").unwrap(), "chat");
    assert_eq!(attr(&wait, "fleetgate.queue.outcome").unwrap(), "admitted");
    assert!(attr(&wait, "fleetgate.queue.waited_ms").is_some());
    let lease = child_of_server("lease");
    assert_eq!(attr(&lease, "fleetgate.lease.class").unwrap(), "chat");
    let quota = one(
        &|s| attr(s, "db.system.name").as_deref() == Some("postgresql"),
        "quota",
    );
    assert_eq!(quota.parent_span_id, server_span.span_id);
    assert_eq!(attr(&quota, "db.operation.name").unwrap(), "UPDATE");
    assert_eq!(quota.kind, SpanKind::Client as i32);

    // Redis scripts: client spans under the decision that ran them.
    let script = |name: &str| {
        one(
            &|s| {
                attr(s, "db.system.name").as_deref() == Some("redis")
                    && attr(s, "db.query.summary").as_deref() == Some(name)
            },
            name,
        )
    };
    let window_script = script("sliding_window");
    assert_eq!(window_script.parent_span_id, window.span_id);
    // FCALL where the server takes Redis Functions, EVALSHA where it refuses them.
    let operation = attr(&window_script, "db.operation.name").unwrap();
    assert!(
        operation == "FCALL" || operation == "EVALSHA",
        "{operation}"
    );
    assert_eq!(window_script.kind, SpanKind::Client as i32);
    let enter = script("admission_enter");
    assert_eq!(enter.parent_span_id, wait.span_id);
    let release = script("admission_release");
    assert_eq!(release.parent_span_id, lease.span_id);

    // Upstream HTTP calls: client spans below the server span, one per service.
    for service in ["pubmed", "semantic_scholar", "llm"] {
        let call = one(
            &|s| {
                s.kind == SpanKind::Client as i32
                    && attr(s, "fleetgate.upstream").as_deref() == Some(service)
                    && attr(s, "http.request.method").is_some()
            },
            service,
        );
        assert!(
            has_ancestor(&call, &server_span),
            "{service} under the request"
        );
        assert_eq!(attr(&call, "http.response.status_code").unwrap(), "200");
        assert!(attr(&call, "server.address").is_some());
        let attempt = parent(&call).unwrap();
        assert_eq!(attempt.name, "upstream.attempt");
        let outbound = parent(attempt).unwrap();
        assert_eq!(attr(outbound, "fleetgate.upstream").unwrap(), service);
    }
    let permit = one(&|s| s.name == "breaker.permit", "breaker decision");
    assert!(attr(&permit, "fleetgate.breaker.decision").is_some());
    assert!(has_ancestor(&permit, &server_span));

    // The simulator saw the caller's trace in every traceparent it received.
    let seen = sim.stats().traceparents;
    assert!(seen.len() >= 3, "esearch/efetch, S2 and the LLM: {seen:?}");
    for t in &seen {
        let parts: Vec<&str> = t.traceparent.split('-').collect();
        assert_eq!(parts[1], trace_id, "{t:?}");
        // ... and the parent it names is the client span this replica exported.
        let span_id = parts[2];
        assert!(
            spans
                .iter()
                .any(|s| hex(&s.span_id) == span_id && s.kind == SpanKind::Client as i32),
            "{t:?} names an exported client span"
        );
    }
    guard.shutdown();
}
