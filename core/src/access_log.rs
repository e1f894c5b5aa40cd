//! What the filter hands Envoy's access log: per request, as filter state an access log
//! format reads with `%FILTER_STATE(wasm.<key>:PLAIN)%`, the bounded labels its metrics used
//! and the trace context the service received. Set when Envoy logs the request (the filter's
//! log callback runs before the connection manager's access logs), with `access_log.enabled`.

/// The `service` label of the request's `http_requests_total`.
pub const SERVICE: &str = "veza_service";
/// The `endpoint` label: the route template (or route name), never a raw path.
pub const ENDPOINT: &str = "veza_endpoint";
/// The trace id the service received, 32 hex digits.
pub const TRACE_ID: &str = "veza_trace_id";
/// The span id the service received as its parent, 16 hex digits.
pub const SPAN_ID: &str = "veza_span_id";
