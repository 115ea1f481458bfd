//! Black-box tests of the simulator over real TCP, one module per concern, in one binary so
//! the workspace links it once.
#![allow(clippy::unwrap_used)]

mod binary;
mod common;
mod faults;
mod llm;
mod pubmed;
mod robustness;
mod s2;
mod stats;
