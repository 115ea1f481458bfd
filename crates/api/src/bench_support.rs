//! For benchmarks only (`benches/http_stack.rs`, scenario 5 of `bench/run`): the service's own
//! router ([`crate::server::app_with`]) with limit layers left out, so that the cost of the limiter
//! stack is measured against the same routes and handlers, same outer layers, without it.
//! Deliberately not a configuration: the service always builds [`Limits::ALL`], so no setting
//! can turn limits off.

use axum::Router;

use crate::server::{Limits, app_with};
use crate::state::AppState;

/// What the user routes leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Without {
    /// Every limiter: no per-IP window, no quota spend, no admission slot (JWT auth stays).
    Limiters,
    /// Only the quota spend in PostgreSQL: per-IP window and admission slot stay.
    Quota,
}

/// The service's router without `without`.
pub fn app_without(state: AppState, without: Without) -> Router {
    let limits = match without {
        Without::Limiters => Limits::NONE,
        Without::Quota => Limits {
            quota: false,
            ..Limits::ALL
        },
    };
    app_with(state, limits)
}
