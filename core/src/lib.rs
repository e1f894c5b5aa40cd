//! The core of veza-observability: everything the filter decides, for any host. It never calls
//! a host directly: a host (the proxy-wasm glue, a native Envoy module) implements the traits of
//! [`host`] and drives a [`worker::Worker`] and an [`exchange::Exchange`] per request.
//!
//! The crate reads as its architecture:
//! - [`config`]: the plugin configuration, parsed and compiled into [`config::Settings`];
//! - [`routes`]: raw paths to bounded `endpoint` and `service` labels;
//! - [`labels`]: bounded `method` and `status` labels;
//! - [`health`]: `/live` and `/ready` answered at the gateway from the dependency clusters;
//! - [`metrics`]: metric names, the registry that aggregates in VM memory, per-request metrics;
//! - [`active_users`]: distinct users in a sliding window, as a sketch shared by the workers;
//! - [`trace`]: W3C, Jaeger and B3 trace context: parsed, decided, sampled, emitted;
//! - [`websocket`]: RFC 6455 frames and chat messages seen in upgraded connections;
//! - [`shared`]: gateway-wide state in Envoy's shared data: its keys and its CAS update;
//! - [`host`]: what the core needs from a host, as traits, and an in-memory host for tests;
//! - [`header_map`]: decoding the ABI's serialized header map;
//! - [`worker`]: one worker's configuration and shared state, its ticks and call answers;
//! - [`exchange`]: one request from its headers to its end: every decision about a request.

pub mod access_log;
pub mod active_users;
pub mod config;
pub mod exchange;
pub mod exposition;
pub mod header_map;
pub mod health;
pub mod host;
pub mod labels;
pub mod metrics;
pub mod routes;
pub mod shared;
pub mod trace;
pub mod websocket;
pub mod worker;

#[cfg(test)]
mod request_profile;
