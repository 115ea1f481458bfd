//! The store's errors.

/// The database could not serve the call (unreachable, pool exhausted, a statement failed).
#[derive(Debug, thiserror::Error)]
#[error("database unavailable")]
pub struct QuotaError(#[from] pub sqlx::Error);

/// A [`crate::Table`] names something that is not a plain SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a plain SQL identifier (lower-case letters, digits and `_`, not first a digit)"
)]
pub struct TableError(pub String);
