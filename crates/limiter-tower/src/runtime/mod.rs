//! Limits changed at runtime, fleet-wide: the versioned document of what operators changed
//! (`document.rs`), an operator's change to it checked against the service (`change.rs`), and where it lives in Redis, how it is written and followed (`store.rs`).
//! The service maps the document onto its layers ([`crate::LimitHandle`]s, admission caps).

mod change;
mod document;
mod store;

pub use change::{ChangeRequest, LimitTargets, LimitsChange};
pub use document::{
    ALL_SCOPES, AdmissionLimits, InvalidChange, Layer, LayerModes, LimitsDocument, LimitsPatch,
    ScopeLimits,
};
pub use store::{LimitsStore, UpdateError};
