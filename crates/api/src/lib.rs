//! api: the fleetgate service (work in progress: the service layers land from their own branch).

pub mod conversations;
pub mod export;
pub mod upstream;
