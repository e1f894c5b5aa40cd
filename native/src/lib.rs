//! veza-observability as an Envoy dynamic module: the shared library Envoy 1.40 loads with
//! `envoy.filters.http.dynamic_modules`. The decisions are the core's
//! ([`veza_observability_core`]); this crate is the glue that moves bytes between Envoy's
//! native ABI and the core, as the proxy-wasm crate does in a VM.
//!
//! - [`abi`]: the ABI's declarations, pinned to the Envoy version they were checked against;
//! - [`gateway`]: one filter config, shared by every worker: per-worker cores, shared data,
//!   paused requests, the ticker;
//! - [`host`]: the core's host traits over the ABI;
//! - [`metrics`]: families defined up front, series by label values;
//! - `hooks`: the functions Envoy calls. Every one catches a panic: nothing unwinds into
//!   Envoy, the request goes on, and the panic is counted and logged once.

mod abi;
mod gateway;
mod host;
mod metrics;
mod shared;

mod access_logger;
mod body;
mod hooks;
mod logger;
