//! The proxy-wasm glue: a root context per worker VM that owns the compiled configuration and
//! the metric state, and an HTTP context per request that reads what Envoy knows about the
//! request when it is logged and hands it to the core.

mod abi;
mod http;
mod root;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::<root::Root>::default() });
}}
