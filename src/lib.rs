//! veza-observability as a proxy-wasm filter: the module Envoy, Istio and func-e load. The
//! decisions are the core's ([`veza_observability_core`], re-exported here); this crate is the
//! glue that moves bytes between Envoy's proxy-wasm ABI and the core (`filter`, wasm32 only).

pub use veza_observability_core::*;

pub mod stats_tags;

// Not in native builds: the hostcalls exist only inside Envoy's VM.
#[cfg(all(target_arch = "wasm32", not(test)))]
mod filter;
