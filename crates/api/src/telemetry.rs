//! Logs and traces: `tracing` to stderr (human or JSON lines, `FLEETGATE_LOG_FORMAT`), filtered by
//! `RUST_LOG` (default `info`), and OpenTelemetry spans exported by OTLP when the standard
//! `OTEL_*` variables ask for it.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set
//! (and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`). The protocol is
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`
//! (default) or `grpc`. The SDK itself reads the endpoint, headers, timeout, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER`/`_ARG` (default: parent-based always-on).
//!
//! Without export the OpenTelemetry layer still runs with no span processor: every request gets
//! a trace id (logged on each line, returned to nobody) and the caller's `traceparent` still
//! reaches the upstreams, so a trace started at the load balancer is never cut here.

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::metrics;

/// Keeps the trace pipeline alive; [`Guard::shutdown`] (or drop) flushes pending spans.
#[derive(Debug)]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    /// Exports every finished span now (tests; the batch processor otherwise waits up to
    /// `OTEL_BSP_SCHEDULE_DELAY`).
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }

    /// Flushes and stops the exporter. Call it inside (or before dropping) the tokio runtime:
    /// the gRPC exporter runs on it.
    pub fn shutdown(mut self) {
        self.flush_and_stop();
    }

    fn flush_and_stop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            if let Err(e) = p.shutdown() {
                eprintln!("fleetgate: trace exporter shutdown: {e}");
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.flush_and_stop();
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-23T.. INFO http.request{request_id=.. trace_id=..}: message`
    Human,
    /// One JSON object per line, with the span list (request id, trace id) on every line.
    Json,
}

impl LogFormat {
    /// `json` or anything else (human).
    pub fn parse(s: &str) -> LogFormat {
        if s.eq_ignore_ascii_case("json") {
            LogFormat::Json
        } else {
            LogFormat::Human
        }
    }
}

/// Which OTLP transport, from the standard variables; `None` when export is off.
fn otlp_protocol(env: &impl Fn(&str) -> Option<String>) -> Option<Protocol> {
    let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    {
        return None;
    }
    let proto = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    Some(if proto.trim().eq_ignore_ascii_case("grpc") {
        Protocol::Grpc
    } else {
        Protocol::HttpBinary
    })
}

fn resource() -> Resource {
    // The SDK's default detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; only
    // when neither names the service does it get ours instead of `unknown_service`.
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let b = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.instance.id",
        uuid::Uuid::new_v4().to_string(),
    ));
    if named {
        b.build()
    } else {
        b.with_service_name("fleetgate").build()
    }
}

/// Builds the tracer provider: with an OTLP exporter when the environment asks for one.
/// Needs a tokio runtime context for gRPC (its batch processor runs on the runtime; the HTTP
/// exporter's runs on a thread of its own with a blocking client).
fn provider(env: &impl Fn(&str) -> Option<String>) -> SdkTracerProvider {
    let builder = SdkTracerProvider::builder().with_resource(resource());
    let nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    // Resolved here (same rules as the SDK) so an injected environment is honoured.
    let signal = nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let base = nonempty("OTEL_EXPORTER_OTLP_ENDPOINT");
    let exporter = match otlp_protocol(env) {
        None => return builder.build(),
        Some(Protocol::Grpc) => {
            let mut b = SpanExporter::builder().with_tonic();
            if let Some(e) = signal.or(base) {
                b = b.with_endpoint(e);
            }
            b.build().map(|e| (e, true))
        }
        Some(p) => {
            let mut b = SpanExporter::builder()
                .with_http()
                .with_protocol(p)
                .with_timeout(Duration::from_secs(10));
            if let Some(e) =
                signal.or_else(|| base.map(|b| format!("{}/v1/traces", b.trim_end_matches('/'))))
            {
                b = b.with_endpoint(e);
            }
            b.build().map(|e| (e, false))
        }
    };
    match exporter {
        Ok((e, true)) => {
            let processor =
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    e,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
            builder.with_span_processor(processor).build()
        }
        Ok((e, false)) => builder.with_batch_exporter(e).build(),
        Err(e) => {
            eprintln!("fleetgate: OTLP exporter not started: {e}");
            builder.build()
        }
    }
}

/// Installs the global subscriber and propagator (once; later calls return a no-op guard).
pub fn init(format: LogFormat) -> Guard {
    init_with(format, |k| std::env::var(k).ok())
}

/// [`init`] with an injected environment for the `OTEL_*` switches (tests).
pub fn init_with(format: LogFormat, env: impl Fn(&str) -> Option<String>) -> Guard {
    // The OTLP/HTTP client is a reqwest client too: it needs the ring provider first.
    chat::upstream::install_crypto_provider();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = provider(&env);
    let tracer = provider.tracer("fleetgate");
    // The spans of a request (this workspace's crates, INFO) feed the traces and give every log
    // line inside a request its request id and trace id, so a RUST_LOG like `warn` does not
    // switch them off: a crate of ours that RUST_LOG does not name is enabled at INFO. (One global filter: per-layer
    // filters lost the parent of the first request's spans in tracing-subscriber 0.3.)
    let user = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for ours in ["api", "chat", "limiter_core", "breaker_store"] {
        // Only an explicit directive for the crate itself (`api=warn`) wins; one for a module
        // (`api::auth=debug`) is more specific than ours and keeps its level anyway.
        let named = user
            .split(',')
            .any(|d| d.trim().split('=').next() == Some(ours));
        if !named && let Ok(d) = format!("{ours}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    let fmt = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if installed {
        opentelemetry::global::set_tracer_provider(provider.clone());
        Guard {
            provider: Some(provider),
        }
    } else {
        let _ = provider.shutdown();
        Guard { provider: None }
    }
}

/// For tests: logs only when `TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        std::mem::forget(init(LogFormat::Human));
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(key.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// `traceparent`/`tracestate` of the current span, for an outbound request.
pub fn trace_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(&mut headers));
    });
    headers
}

/// The trace id of the current span (32 hex digits), if it has one.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

/// Middleware (inside the request-id layers): the server span of the request, child of the
/// caller's `traceparent`, carrying the request id and trace id that every log line of the
/// request shows; and the request metrics by route (the matched template, never the raw path).
pub async fn observe_request(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let method = method_label(req.method());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let route_label = route.as_deref().unwrap_or("unmatched");
    // Probes and scrapes run every few seconds on every replica: counted, never traced.
    let traced = !matches!(route_label, "/healthz" | "/readyz" | "/metrics");
    let span = if traced {
        let span = tracing::info_span!(
            "http.request",
            otel.name = %match &route {
                Some(r) => format!("{method} {r}"),
                None => method.to_string(),
            },
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method,
            http.route = route.as_deref(),
            url.path = %req.uri().path().chars().take(200).collect::<String>(),
            http.response.status_code = Empty,
            request_id = %request_id,
            trace_id = Empty,
            // The caller's pseudonym once authenticated (`server::middleware::require_user`), never the id.
            user = Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        let _ = span.set_parent(parent);
        let trace_id = span.context().span().span_context().trace_id();
        span.record("trace_id", tracing::field::display(trace_id));
        span
    } else {
        tracing::Span::none()
    };
    let start = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    metrics::get().observe_http(route_label, method, status.as_u16(), start.elapsed());
    resp
}
