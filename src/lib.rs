//! veza-observability: a proxy-wasm filter that gives the Veza platform Prometheus metrics at
//! the Envoy gateway.
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
//! - [`host`]: the few host capabilities the core needs, as a trait;
//! - [`header_map`]: decoding the ABI's serialized header map;
//! - [`worker`]: one worker's configuration and shared state, its ticks and call answers;
//! - [`exchange`]: one request from its headers to its end: every decision about a request;
//! - `filter` (wasm32 only): the proxy-wasm root and HTTP contexts, glue that only moves bytes
//!   between Envoy and the worker and exchange.

pub mod active_users;
pub mod config;
pub mod exchange;
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

// Not in test builds: the unit tests run as WASI commands, without a proxy-wasm host.
#[cfg(all(target_arch = "wasm32", not(test)))]
mod filter;
