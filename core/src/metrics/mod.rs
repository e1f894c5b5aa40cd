//! Metrics: names and label encoding, the per-VM registry, and the per-request HTTP metrics.

pub mod business;
pub mod connections;
pub mod http;
pub mod names;
pub mod registry;
pub mod streams;
