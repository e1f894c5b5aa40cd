//! The `tracing` section: which trace formats are read and written, sampling, and who may
//! force a trace.

use serde::Deserialize;

use crate::config::ConfigError;

/// A trace header format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Format {
    /// W3C `traceparent` (+ `tracestate`).
    #[serde(rename = "traceparent")]
    TraceContext,
    /// Jaeger `uber-trace-id`.
    #[serde(rename = "uber-trace-id")]
    Jaeger,
    /// B3 multi headers (`X-B3-*`); as an incoming format it reads the single `b3` header too.
    #[serde(rename = "b3")]
    B3,
    /// B3 single header (`b3`); outgoing only.
    #[serde(rename = "b3-single")]
    B3Single,
}

/// Who gives the services their trace context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// The filter: it reads the incoming context, decides and writes the outgoing headers
    /// (no Envoy tracer in the connection manager).
    #[default]
    Filter,
    /// Envoy's own tracer (the connection manager's `tracing`), which writes its context at
    /// the router after every filter: the filter writes no trace header and exports no span;
    /// it reads, after the router, the context the service received.
    Envoy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `"filter"` (no Envoy tracer) or `"envoy"` (Envoy's tracer is on).
    #[serde(default)]
    pub propagation: Propagation,
    /// Incoming formats in order of precedence.
    #[serde(default = "default_incoming")]
    pub incoming: Vec<Format>,
    /// Formats written on every proxied request.
    #[serde(default = "default_outgoing")]
    pub outgoing: Vec<Format>,
    /// Share of new traces sampled (0 to 1); an incoming decision is kept.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// Forcing a trace (Jaeger debug flag, `jaeger-debug-id`, B3 `d`) is honoured only on
    /// requests carrying this header with this value; absent: never.
    #[serde(default)]
    pub debug_credential: Option<DebugCredential>,
    /// A response header that carries the trace id (for support tickets); absent: none.
    #[serde(default)]
    pub response_header: Option<String>,
    /// Give WebSocket upgrade requests a context.
    #[serde(default = "default_true")]
    pub websocket: bool,
    /// Give `/live` and `/ready` (answered by the gateway) a span of their own.
    #[serde(default)]
    pub health: bool,
    /// Match the request's route again after the trace headers are written, so that a route
    /// can match on them (Envoy's `clear_route_cache`, as in ext_authz). Off, as in Envoy's
    /// native filters: the route is the one the client's own headers chose. The wasm build
    /// cannot turn it off: Envoy clears the route cache whenever a Wasm filter writes a
    /// request header.
    #[serde(default)]
    pub clear_route_cache: bool,
    /// Where the gateway's spans go (OTLP/HTTP JSON); absent: spans are not exported.
    #[serde(default)]
    pub collector: Option<CollectorConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// The Envoy cluster of the collector (Jaeger's OTLP/HTTP port, 4318).
    pub cluster: String,
    /// `:authority` of the export call; absent: the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_collector_path")]
    pub path: String,
    #[serde(default = "default_collector_timeout_ms")]
    pub timeout_ms: u32,
    /// Spans per export call.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Spans one worker holds before dropping new ones.
    #[serde(default = "default_max_queue")]
    pub max_queue: u32,
    /// A batch that is not full is sent after this long.
    #[serde(default = "default_collector_flush_ms")]
    pub flush_interval_ms: u32,
    /// Sends of a batch answered 429, 502, 503 or 504, after the first.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each next one.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u32,
    /// The `service.name` resource attribute.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_collector_path() -> String {
    "/v1/traces".to_owned()
}

fn default_collector_timeout_ms() -> u32 {
    2000
}

fn default_batch_size() -> u32 {
    128
}

fn default_max_queue() -> u32 {
    2048
}

fn default_collector_flush_ms() -> u32 {
    1000
}

fn default_max_retries() -> u32 {
    3
}

fn default_retry_backoff_ms() -> u32 {
    1000
}

fn default_service_name() -> String {
    "veza-gateway".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorSettings {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u32,
    pub batch_size: usize,
    pub max_queue: usize,
    pub flush_interval_ms: u32,
    pub max_retries: u32,
    pub retry_backoff_ms: u32,
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> TracingConfig {
        TracingConfig {
            enabled: true,
            propagation: Propagation::Filter,
            incoming: default_incoming(),
            outgoing: default_outgoing(),
            sampling_ratio: default_sampling_ratio(),
            debug_credential: None,
            response_header: None,
            websocket: true,
            health: false,
            clear_route_cache: false,
            collector: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugCredential {
    pub header: String,
    pub value: String,
}

fn default_true() -> bool {
    true
}

fn default_incoming() -> Vec<Format> {
    vec![Format::TraceContext, Format::Jaeger, Format::B3]
}

/// W3C only: what OpenTelemetry's SDKs (Jaeger's recommended clients) read by default, and
/// what Envoy's own tracer writes. Each request header written costs a call into Envoy (in the
/// wasm build, a second route match too); `uber-trace-id` for Jaeger's archived clients is one
/// line away.
fn default_outgoing() -> Vec<Format> {
    vec![Format::TraceContext]
}

fn default_sampling_ratio() -> f64 {
    0.01
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    pub enabled: bool,
    pub propagation: Propagation,
    pub incoming: Vec<Format>,
    pub outgoing: Vec<Format>,
    pub sampling_ratio: f64,
    pub debug_credential: Option<DebugCredential>,
    pub response_header: Option<String>,
    pub websocket: bool,
    pub health: bool,
    pub clear_route_cache: bool,
    pub collector: Option<CollectorSettings>,
}

/// Compiles the section; errors name the field relative to `tracing`.
pub fn compile(config: TracingConfig) -> Result<TraceSettings, ConfigError> {
    if !(0.0..=1.0).contains(&config.sampling_ratio) {
        return Err(ConfigError::at(
            "sampling_ratio".into(),
            format!("must be from 0 to 1 (got {})", config.sampling_ratio),
        ));
    }
    if config.incoming.contains(&Format::B3Single) {
        return Err(ConfigError::at(
            "incoming".into(),
            "\"b3-single\" is an outgoing format; \"b3\" reads both B3 forms".into(),
        ));
    }
    for (field, list) in [
        ("incoming", &config.incoming),
        ("outgoing", &config.outgoing),
    ] {
        for (i, format) in list.iter().enumerate() {
            if list.iter().take(i).any(|f| f == format) {
                return Err(ConfigError::at(
                    format!("{field}[{i}]"),
                    "listed twice".into(),
                ));
            }
        }
    }
    if config.outgoing.contains(&Format::B3) && config.outgoing.contains(&Format::B3Single) {
        return Err(ConfigError::at(
            "outgoing".into(),
            "\"b3\" and \"b3-single\" together would send two B3 contexts".into(),
        ));
    }
    let debug_credential = match config.debug_credential {
        None => None,
        Some(credential) => {
            let header = super::header_name(&credential.header).map_err(|message| {
                ConfigError::at("debug_credential.header".to_owned(), message)
            })?;
            // The gateway reads, replaces and removes these: a credential there would never
            // be found, or would be taken from the trace context.
            if crate::trace::OWNED_HEADERS.contains(&header.as_str()) {
                return Err(ConfigError::at(
                    "debug_credential.header".into(),
                    format!("{header:?} is a trace header the gateway rewrites"),
                ));
            }
            if credential.value.len() < 16 {
                return Err(ConfigError::at(
                    "debug_credential.value".into(),
                    "must be at least 16 characters: it is a secret".into(),
                ));
            }
            Some(DebugCredential {
                header,
                value: credential.value,
            })
        }
    };
    let response_header = match config.response_header {
        None => None,
        Some(name) => Some(
            super::header_name(&name)
                .map_err(|message| ConfigError::at("response_header".to_owned(), message))?,
        ),
    };
    let collector = match config.collector {
        None => None,
        Some(collector) => Some(compile_collector(collector)?),
    };
    if config.propagation == Propagation::Envoy && response_header.is_some() {
        return Err(ConfigError::at(
            "response_header".into(),
            "with \"propagation\": \"envoy\", the trace id is Envoy's: add the header with Envoy's response_headers_to_add and the value \"%TRACE_ID%\"".into(),
        ));
    }
    if config.propagation == Propagation::Envoy && collector.is_some() {
        return Err(ConfigError::at(
            "collector".into(),
            "with \"propagation\": \"envoy\", Envoy's tracer exports the gateway's span: configure its collector there".into(),
        ));
    }
    Ok(TraceSettings {
        health: config.health,
        clear_route_cache: config.clear_route_cache,
        collector,
        enabled: config.enabled,
        propagation: config.propagation,
        incoming: config.incoming,
        outgoing: config.outgoing,
        sampling_ratio: config.sampling_ratio,
        debug_credential,
        response_header,
        websocket: config.websocket,
    })
}

fn compile_collector(config: CollectorConfig) -> Result<CollectorSettings, ConfigError> {
    let field = |name: &str| format!("collector.{name}");
    let range = |name: &str, value: u32, low: u32, high: u32| {
        if (low..=high).contains(&value) {
            Ok(())
        } else {
            Err(ConfigError::at(
                field(name),
                format!("must be from {low} to {high} (got {value})"),
            ))
        }
    };
    if config.cluster.is_empty() {
        return Err(ConfigError::at(
            field("cluster"),
            "must name an Envoy cluster".into(),
        ));
    }
    if !config.path.starts_with('/') {
        return Err(ConfigError::at(
            field("path"),
            format!("{:?} must start with '/'", config.path),
        ));
    }
    range("timeout_ms", config.timeout_ms, 1, 60_000)?;
    range("batch_size", config.batch_size, 1, 1024)?;
    range("max_queue", config.max_queue, config.batch_size, 100_000)?;
    range("flush_interval_ms", config.flush_interval_ms, 10, 60_000)?;
    range("max_retries", config.max_retries, 0, 10)?;
    range("retry_backoff_ms", config.retry_backoff_ms, 10, 60_000)?;
    if config.service_name.is_empty() || config.service_name.len() > 128 {
        return Err(ConfigError::at(
            field("service_name"),
            "must be 1 to 128 characters".into(),
        ));
    }
    Ok(CollectorSettings {
        authority: config.authority.unwrap_or_else(|| config.cluster.clone()),
        cluster: config.cluster,
        path: config.path,
        timeout_ms: config.timeout_ms,
        batch_size: config.batch_size as usize,
        max_queue: config.max_queue as usize,
        flush_interval_ms: config.flush_interval_ms,
        max_retries: config.max_retries,
        retry_backoff_ms: config.retry_backoff_ms,
        service_name: config.service_name,
    })
}
