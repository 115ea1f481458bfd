//! Routing ([`app`]), serving ([`serve`]) and the in-process handle tests use ([`spawn`],
//! [`RunningSim`]).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::settings::{Settings, SettingsError, SettingsPatch};
use crate::state::{SimConfig, SimState};
use crate::stats::{Endpoint, StatsSnapshot};
use crate::{control, faults, llm, pubmed, s2};

/// Wraps one route in the fault/stats middleware for `endpoint`.
fn guarded(
    state: &SimState,
    endpoint: Endpoint,
    route: MethodRouter<SimState>,
) -> MethodRouter<SimState> {
    route.layer(from_fn_with_state(
        (state.clone(), endpoint),
        faults::inject,
    ))
}

fn eutils(state: &SimState) -> Router<SimState> {
    Router::new()
        .route(
            "/esearch.fcgi",
            guarded(
                state,
                Endpoint::PubmedEsearch,
                get(pubmed::esearch).post(pubmed::esearch),
            ),
        )
        .route(
            "/esummary.fcgi",
            guarded(
                state,
                Endpoint::PubmedEsummary,
                get(pubmed::esummary).post(pubmed::esummary),
            ),
        )
        .route(
            "/efetch.fcgi",
            guarded(
                state,
                Endpoint::PubmedEfetch,
                get(pubmed::efetch).post(pubmed::efetch),
            ),
        )
}

fn graph_v1(state: &SimState) -> Router<SimState> {
    Router::new()
        .route(
            "/paper/search",
            guarded(state, Endpoint::S2Search, get(s2::search)),
        )
        .route(
            "/paper/{*paper_id}",
            guarded(state, Endpoint::S2Paper, get(s2::paper)),
        )
}

fn openai(state: &SimState) -> Router<SimState> {
    Router::new()
        .route(
            "/chat/completions",
            guarded(state, Endpoint::LlmChat, post(llm::chat_completions)),
        )
        .route(
            "/models",
            guarded(state, Endpoint::LlmModels, get(llm::models)),
        )
        .fallback(llm::not_found)
}

/// The whole simulator as a router:
/// - PubMed E-utilities under `/pubmed` and `/entrez/eutils`,
/// - Semantic Scholar Graph API v1 under `/s2/graph/v1` and `/graph/v1`,
/// - OpenAI-compatible API under `/v1`,
/// - control and stats under `/control`, `/control/reset`, `/stats`, `/stats/reset`.
pub fn app(state: SimState) -> Router {
    Router::new()
        .nest("/pubmed", eutils(&state))
        .nest("/entrez/eutils", eutils(&state))
        .nest("/s2/graph/v1", graph_v1(&state))
        .nest("/graph/v1", graph_v1(&state))
        .nest("/v1", openai(&state))
        .route(
            "/control",
            get(control::get_control).post(control::post_control),
        )
        .route("/control/reset", post(control::reset_control))
        .route("/stats", get(control::get_stats))
        .route("/stats/prompts", get(control::get_prompts))
        .route("/stats/reset", post(control::reset_stats))
        .layer(DefaultBodyLimit::max(state.max_body_bytes()))
        .with_state(state)
}

/// Serves [`app`] on `listener` until [`SimState::trigger_shutdown`] is called.
pub async fn serve(listener: TcpListener, state: SimState) -> io::Result<()> {
    let signal = state.shutdown_signal();
    // Without TCP_NODELAY, small SSE chunks wait for delayed ACKs (~40 ms each), which would
    // distort the chunk pacing clients observe.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(signal)
        .await
}

/// A simulator serving in the background of the current tokio runtime; shut down by
/// [`shutdown`](RunningSim::shutdown) or on drop.
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    state: SimState,
    task: Option<JoinHandle<io::Result<()>>>,
}

/// Starts a simulator on `127.0.0.1:0` (a free port).
pub async fn spawn(cfg: SimConfig) -> io::Result<RunningSim> {
    spawn_on(TcpListener::bind("127.0.0.1:0").await?, cfg)
}

/// Starts a simulator on an already bound listener.
pub fn spawn_on(listener: TcpListener, cfg: SimConfig) -> io::Result<RunningSim> {
    let addr = listener.local_addr()?;
    let state = SimState::new(&cfg);
    let task = tokio::spawn(serve(listener, state.clone()));
    Ok(RunningSim {
        addr,
        state,
        task: Some(task),
    })
}

impl RunningSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// E-utilities base: `{pubmed_url}/esearch.fcgi` etc.
    pub fn pubmed_url(&self) -> String {
        format!("http://{}/pubmed", self.addr)
    }

    /// Graph API v1 base: `{s2_url}/paper/search`.
    pub fn s2_url(&self) -> String {
        format!("http://{}/s2/graph/v1", self.addr)
    }

    /// OpenAI base: `{llm_url}/chat/completions`.
    pub fn llm_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The shared state (corpus, settings, stats).
    pub fn state(&self) -> &SimState {
        &self.state
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats()
    }

    /// The LLM requests last received.
    pub fn prompts(&self) -> Vec<crate::prompts::RecordedPrompt> {
        self.state().prompts()
    }

    pub fn reset_stats(&self) {
        self.state.reset_stats();
    }

    pub fn settings(&self) -> Settings {
        self.state.settings()
    }

    /// Changes settings in place, e.g. `sim.set(|s| s.pubmed.error_rate = 1.0)`; rejected
    /// (nothing changed) when a value is out of range.
    pub fn set(&self, f: impl FnOnce(&mut Settings)) -> Result<(), SettingsError> {
        self.state.set(f)
    }

    /// Applies a partial update, as `POST /control` does.
    pub fn apply(&self, patch: &SettingsPatch) -> Result<Settings, SettingsError> {
        self.state.apply(patch)
    }

    /// Stops accepting, ends hanging requests, and waits (up to 5 s) for open requests to end.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.state.trigger_shutdown();
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(io::Error::other(join)),
            Err(_) => {
                task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.state.trigger_shutdown();
    }
}
