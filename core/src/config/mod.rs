//! Plugin configuration: the JSON in Envoy's `configuration` field, parsed with serde and then
//! compiled into [`Settings`], the read-only runtime model every HTTP context shares.
//!
//! Every field has an explicit default; unknown fields are refused. An error names the field
//! (`services[0].routes[3]`) so Envoy's log says exactly what to fix.
//!
//! A little over 500 lines: the top-level schema and its one compile step stay together, so
//! every cross-section rule (reserved names, what `exposition` turns off) is in one place;
//! sections with rules of their own are submodules.

pub mod business;
mod error_path;
pub mod exposition;
pub mod tracing;

use serde::Deserialize;

use self::business::{
    ActiveUsersConfig, ActiveUsersSettings, BusinessRuleConfig, BusinessSettings,
};
use self::tracing::{TraceSettings, TracingConfig};
use crate::health::config::{self as health_config, HealthConfig, HealthSettings};
use crate::routes::{EndpointId, RouteTable};

/// The built-in route table: every route the Veza services serve (see docs/configuration.md).
const VEZA_SERVICES: &str = include_str!("veza_services.json");

pub const DEFAULT_MAX_SERIES: u32 = 2000;
pub const DEFAULT_FLUSH_INTERVAL_MS: u32 = 1000;
const MAX_FLUSH_INTERVAL_MS: u32 = 60_000;
const MAX_SERVICE_NAME_LEN: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Services behind the gateway, each with its route templates and path prefixes.
    /// Absent: the Veza services.
    #[serde(default)]
    pub services: Option<Vec<ServiceConfig>>,
    /// Where the `endpoint` label comes from.
    #[serde(default)]
    pub endpoint_source: EndpointSource,
    /// Most distinct `http_requests_total` label sets, gateway-wide, before overflow.
    #[serde(default = "default_max_series")]
    pub max_series: u32,
    /// How often each worker hands its aggregated metrics to Envoy; 0 = after every request.
    #[serde(default = "default_flush_interval_ms")]
    pub metrics_flush_interval_ms: u32,
    /// `/live` and `/ready` at the gateway.
    #[serde(default)]
    pub health: HealthConfig,
    /// WebSocket and chat telemetry.
    #[serde(default)]
    pub websocket: WebSocketConfig,
    /// Audio stream telemetry.
    #[serde(default)]
    pub streams: StreamsConfig,
    /// Counters from request outcomes (method, route template, status). Absent: the Veza
    /// rules (registrations, logins, failed logins, track uploads, playlists); `[]`: none.
    #[serde(default)]
    pub business_metrics: Option<Vec<BusinessRuleConfig>>,
    /// `active_users`.
    #[serde(default)]
    pub active_users: ActiveUsersConfig,
    /// Trace context for Jaeger and OpenTelemetry.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// Hand the access log the request's bounded labels and the trace context the service
    /// received, as filter state (`wasm.veza_service`, ...).
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// The stats listener's filter only: serve the filter's metrics as Prometheus exposition,
    /// and nothing else (no counting, no health, no tracing).
    #[serde(default)]
    pub exposition: Option<exposition::ExpositionConfig>,
    /// The native build only: the name of the module's access logger (its `logger_config`)
    /// that counts every request, once, at Envoy's access-log stage. The filter then counts
    /// none, and runs only on the routes that need it: `/live`, `/ready`, WebSockets and
    /// streams. Metrics only: tracing must be off.
    #[serde(default)]
    pub count_in_logger: Option<String>,
    /// For tests of Envoy's failure policy only: only a build with the `fault-injection`
    /// feature has it; the shipped module refuses it as an unknown field.
    #[cfg(feature = "fault-injection")]
    #[serde(default)]
    pub fault_injection: Option<FaultInjectionConfig>,
}

#[cfg(feature = "fault-injection")]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultInjectionConfig {
    /// A request carrying this header traps the worker's VM, as a bug would.
    pub trap_header: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Route templates whose WebSocket messages are the chat server's JSON messages.
    /// Absent: `/ws` and `/ws/chat`, those of them the route table has.
    #[serde(default)]
    pub chat_endpoints: Option<Vec<String>>,
    /// Client message types counted by name in `chat_events_total{type}`; others are `other`.
    #[serde(default = "default_chat_event_types")]
    pub chat_event_types: Vec<String>,
    /// Distinct conversation ids tracked gateway-wide for `chat_rooms_active`.
    #[serde(default = "default_max_tracked_rooms")]
    pub max_tracked_rooms: u32,
}

impl Default for WebSocketConfig {
    fn default() -> WebSocketConfig {
        WebSocketConfig {
            chat_endpoints: None,
            chat_event_types: default_chat_event_types(),
            max_tracked_rooms: default_max_tracked_rooms(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    /// Route templates that serve audio streams; their last path segment is the `stream_id`.
    /// Absent: `/stream/:filename`, if the route table has it.
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
    /// Distinct `stream_id` values gateway-wide; later ones are `other`.
    #[serde(default = "default_max_stream_ids")]
    pub max_stream_ids: u32,
}

impl Default for StreamsConfig {
    fn default() -> StreamsConfig {
        StreamsConfig {
            endpoints: None,
            max_stream_ids: default_max_stream_ids(),
        }
    }
}

fn default_chat_endpoints() -> Vec<String> {
    vec!["/ws".to_owned(), "/ws/chat".to_owned()]
}

fn default_chat_event_types() -> Vec<String> {
    [
        "SendMessage",
        "JoinConversation",
        "LeaveConversation",
        "MarkAsRead",
        "Ping",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn default_max_tracked_rooms() -> u32 {
    10_000
}

fn default_stream_endpoints() -> Vec<String> {
    vec!["/stream/:filename".to_owned()]
}

fn default_max_stream_ids() -> u32 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The `service` label.
    pub name: String,
    /// Route templates, `"/api/v1/tracks/:id"` or `"GET,PUT /api/v1/users/me"`.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Paths no template matches but that belong to this service (`endpoint="other"`).
    #[serde(default)]
    pub prefixes: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointSource {
    /// The plugin's route table (`services[].routes`).
    #[default]
    RouteTable,
    /// Envoy's route name (`xds.route_name`); unnamed routes are `other`.
    RouteName,
}

fn default_max_series() -> u32 {
    DEFAULT_MAX_SERIES
}

fn default_flush_interval_ms() -> u32 {
    DEFAULT_FLUSH_INTERVAL_MS
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Settings {
    pub routes: RouteTable,
    pub endpoint_source: EndpointSource,
    pub max_series: u32,
    pub flush_interval_ms: u32,
    pub health: HealthSettings,
    pub websocket: WebSocketSettings,
    pub streams: StreamSettings,
    pub business: BusinessSettings,
    pub active_users: ActiveUsersSettings,
    pub tracing: TraceSettings,
    /// Write the access log's fields ([`crate::access_log`]).
    pub access_log: bool,
    /// Set: this filter serves only the exposition at its path.
    pub exposition: Option<exposition::ExpositionSettings>,
    /// Set: the module's access logger of this name counts requests; the filter does not.
    pub count_in_logger: Option<String>,
    /// The request header that traps the VM (fault-injection tests only).
    #[cfg(feature = "fault-injection")]
    pub trap_header: Option<String>,
}

#[derive(Debug)]
pub struct WebSocketSettings {
    /// Templates (endpoint ids) whose messages are chat messages.
    pub chat_endpoints: Vec<EndpointId>,
    pub chat_event_types: Vec<String>,
    pub max_tracked_rooms: u32,
}

#[derive(Debug)]
pub struct StreamSettings {
    pub endpoints: Vec<EndpointId>,
    pub max_stream_ids: u32,
}

/// The `service` label of `/live` and `/ready`, which the gateway answers itself.
pub const GATEWAY_SERVICE: &str = "gateway";

/// A configuration error: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl ConfigError {
    pub fn at(field: String, message: String) -> ConfigError {
        ConfigError { field, message }
    }

    /// The same error seen from the enclosing section: `checks[0].cluster` within `health`
    /// is `health.checks[0].cluster`; `[2].status` within `business_metrics` is
    /// `business_metrics[2].status`.
    pub fn within(self, section: &str) -> ConfigError {
        let field = if self.field.is_empty() {
            section.to_owned()
        } else if self.field.starts_with('[') {
            format!("{section}{}", self.field)
        } else {
            format!("{section}.{}", self.field)
        };
        ConfigError { field, ..self }
    }
}

fn error(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::at(field.into(), message.into())
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    serde_json::from_slice(bytes).map_err(|err| {
        error(
            error_path::field_path(bytes, &err),
            format!("invalid configuration JSON: {err}"),
        )
    })
}

/// Parses and compiles the plugin configuration. No bytes (or only white space) means defaults.
pub fn load(bytes: Option<&[u8]>) -> Result<Settings, ConfigError> {
    let bytes = bytes.unwrap_or_default();
    let config: PluginConfig = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => parse_json(b"{}")?,
        // serde would also take a JSON array for a struct whose fields all have defaults.
        Some(b'{') => parse_json(bytes)?,
        Some(_) => return Err(error("", "the configuration must be a JSON object")),
    };
    compile(config)
}

/// The Veza services, as built in. The file is a plugin configuration naming only `services`
/// (read with the same code as the plugin's, which a second type would duplicate in the module).
pub fn veza_services() -> Result<Vec<ServiceConfig>, ConfigError> {
    let builtin: PluginConfig = parse_json(VEZA_SERVICES.as_bytes())?;
    Ok(builtin.services.unwrap_or_default())
}

pub fn compile(config: PluginConfig) -> Result<Settings, ConfigError> {
    if config.max_series == 0 {
        return Err(error("max_series", "must be at least 1 (got 0)"));
    }
    // Each cap is a budget whose set is one shared value of 8 bytes a name.
    for (field, cap) in [
        ("max_series", config.max_series),
        (
            "websocket.max_tracked_rooms",
            config.websocket.max_tracked_rooms,
        ),
        ("streams.max_stream_ids", config.streams.max_stream_ids),
    ] {
        if cap > crate::shared::MAX_BUDGET {
            return Err(error(
                field,
                format!("must be at most {} (got {cap})", crate::shared::MAX_BUDGET),
            ));
        }
    }
    if config.metrics_flush_interval_ms > MAX_FLUSH_INTERVAL_MS {
        return Err(error(
            "metrics_flush_interval_ms",
            format!(
                "must be at most {MAX_FLUSH_INTERVAL_MS} (got {})",
                config.metrics_flush_interval_ms
            ),
        ));
    }
    let services = match config.services {
        Some(services) => services,
        None => veza_services()?,
    };
    if services.is_empty() {
        return Err(error("services", "must name at least one service"));
    }
    let mut routes = RouteTable::default();
    for (index, service) in services.iter().enumerate() {
        let field = format!("services[{index}]");
        check_service_name(&service.name).map_err(|m| error(format!("{field}.name"), m))?;
        let id = routes
            .add_service(&service.name)
            .map_err(|m| error(format!("{field}.name"), m))?;
        for (i, prefix) in service.prefixes.iter().enumerate() {
            routes
                .add_prefix(prefix, id)
                .map_err(|m| error(format!("{field}.prefixes[{i}]"), m))?;
        }
        for (i, route) in service.routes.iter().enumerate() {
            routes
                .add_route(route, id)
                .map_err(|m| error(format!("{field}.routes[{i}]"), m))?;
        }
    }
    let mut health = health_config::compile(config.health).map_err(|e| e.within("health"))?;
    if health.enabled {
        let gateway = routes.add_service(GATEWAY_SERVICE).map_err(|_| {
            error(
                "services",
                format!("the service name {GATEWAY_SERVICE:?} is reserved for /live and /ready"),
            )
        })?;
        let mut add = |path: &str| {
            routes
                .add_route(&format!("GET,HEAD {path}"), gateway)
                .map_err(|m| error("health", m))
        };
        health.endpoints = Some((add(&health.live_path)?, add(&health.ready_path)?));
    }
    // Every route is in: lay the table out for matching before any request.
    routes.prepare();
    let mut websocket = WebSocketSettings {
        chat_endpoints: endpoint_ids(
            &routes,
            "websocket.chat_endpoints",
            config.websocket.chat_endpoints,
            default_chat_endpoints,
        )?,
        chat_event_types: check_event_types(config.websocket.chat_event_types)?,
        max_tracked_rooms: config.websocket.max_tracked_rooms,
    };
    let streams = StreamSettings {
        endpoints: endpoint_ids(
            &routes,
            "streams.endpoints",
            config.streams.endpoints,
            default_stream_endpoints,
        )?,
        max_stream_ids: config.streams.max_stream_ids,
    };
    let mut business = match config.business_metrics {
        Some(rules) => {
            business::compile_rules(&routes, rules).map_err(|e| e.within("business_metrics"))?
        }
        None => business::compile_default_rules(&routes),
    };
    let mut active_users = business::compile_active_users(config.active_users)
        .map_err(|e| e.within("active_users"))?;
    let mut tracing = tracing::compile(config.tracing).map_err(|e| e.within("tracing"))?;
    let exposition = config
        .exposition
        .map(|e| exposition::compile(e).map_err(|e| e.within("exposition")))
        .transpose()?;
    if exposition.is_some() {
        // The stats listener's filter measures nothing and checks nothing itself, and
        // defines no series the gateway's filter would not.
        health.enabled = false;
        health.endpoints = None;
        tracing.enabled = false;
        active_users.enabled = false;
        business = BusinessSettings::default();
        websocket.chat_endpoints.clear();
    }
    let count_in_logger = config
        .count_in_logger
        .map(|name| check_logger(name, &config.access_log, &tracing, exposition.is_some()))
        .transpose()?;
    #[cfg(feature = "fault-injection")]
    let trap_header = match config.fault_injection {
        None => None,
        Some(fault) => Some(
            header_name(&fault.trap_header)
                .map_err(|message| error("fault_injection.trap_header", message))?,
        ),
    };
    Ok(Settings {
        #[cfg(feature = "fault-injection")]
        trap_header,
        tracing,
        access_log: config.access_log.enabled && exposition.is_none(),
        exposition,
        count_in_logger,
        business,
        active_users,
        routes,
        endpoint_source: config.endpoint_source,
        max_series: config.max_series,
        flush_interval_ms: config.metrics_flush_interval_ms,
        health,
        websocket,
        streams,
    })
}

/// Templates the configuration names must be in the route table; built-in ones that are not
/// (the user replaced the Veza routes) are left out.
fn endpoint_ids(
    routes: &RouteTable,
    field: &str,
    configured: Option<Vec<String>>,
    defaults: fn() -> Vec<String>,
) -> Result<Vec<EndpointId>, ConfigError> {
    let find = |template: &String| {
        routes
            .templates()
            .iter()
            .position(|t| &t.text == template)
            .and_then(|id| EndpointId::try_from(id).ok())
    };
    match configured {
        None => Ok(defaults().iter().filter_map(find).collect()),
        Some(templates) => templates
            .iter()
            .enumerate()
            .map(|(i, template)| {
                find(template).ok_or_else(|| {
                    error(
                        format!("{field}[{i}]"),
                        format!("{template:?} is not a route template of services[].routes"),
                    )
                })
            })
            .collect(),
    }
}

/// Refuses `count_in_logger` in a build with no access logger of its own (the wasm build):
/// the requests would be counted nowhere.
pub fn counts_in_filter(settings: &Settings) -> Result<(), ConfigError> {
    match settings.count_in_logger {
        Some(_) => Err(error(
            "count_in_logger",
            "needs the native build's access logger: this build counts in the filter",
        )),
        None => Ok(()),
    }
}

/// The name of the access logger that counts, and what counting there leaves out: the filter
/// runs only where routes enable it, so it can neither trace every request nor write every
/// request's access-log fields.
fn check_logger(
    name: String,
    access_log: &AccessLogConfig,
    tracing: &TraceSettings,
    exposition: bool,
) -> Result<String, ConfigError> {
    let field = "count_in_logger";
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(error(
            field,
            format!("{name:?} must be 1 to 64 characters without control characters"),
        ));
    }
    let conflict = if exposition {
        Some("exposition")
    } else if tracing.enabled {
        Some("tracing.enabled")
    } else if access_log.enabled {
        Some("access_log.enabled")
    } else {
        None
    };
    match conflict {
        Some(other) => Err(error(
            field,
            format!("counting in the access logger needs {other} off: the filter runs only where routes enable it"),
        )),
        None => Ok(name),
    }
}

fn check_event_types(types: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for (i, name) in types.iter().enumerate() {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid || name == crate::metrics::names::OTHER {
            return Err(error(
                format!("websocket.chat_event_types[{i}]"),
                format!("{name:?} must be 1 to 64 letters, digits or '_', and not \"other\""),
            ));
        }
    }
    Ok(types)
}

/// A plugin configuration with `count` route templates `/api/v1/:area/s<i>/:id` (any method,
/// one service, room for 10,000 series): the scale question `make bench` times and
/// `make profile` counts, asked with the same table by both.
pub fn scale_configuration(count: usize) -> String {
    let routes: Vec<String> = (0..count)
        .map(|i| format!("\"/api/v1/:area/s{i}/:id\""))
        .collect();
    format!(
        r#"{{"services": [{{"name": "bench", "prefixes": ["/api/"], "routes": [{}]}}], "business_metrics": [], "max_series": 12000}}"#,
        routes.join(", ")
    )
}

/// Longest header name a configuration may name.
const MAX_HEADER_NAME_LEN: usize = 128;

/// An Envoy cluster a call goes through: any non-empty name without control characters.
pub(crate) fn cluster_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(format!("{name:?} is not a cluster name"));
    }
    Ok(())
}

/// A header name from a configuration, lowercased as Envoy keeps them; the error says why not.
pub(crate) fn header_name(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    let valid = !lower.is_empty()
        && lower.len() <= MAX_HEADER_NAME_LEN
        && lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(lower)
    } else {
        Err(format!("{name:?} is not an HTTP header name"))
    }
}

fn check_service_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if name.is_empty() || name.len() > MAX_SERVICE_NAME_LEN || !valid_chars {
        return Err(format!(
            "{name:?} must be 1 to {MAX_SERVICE_NAME_LEN} characters of a-z, 0-9, '-' and '_'"
        ));
    }
    if name == crate::metrics::names::OTHER {
        return Err(format!("{name:?} is reserved for unmatched requests"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
