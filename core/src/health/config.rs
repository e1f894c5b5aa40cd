//! The `health` section of the plugin configuration, and its compiled form.

use serde::Deserialize;

use crate::config::ConfigError;

use crate::labels::{Method, StatusPattern};
use crate::routes::{EndpointId, RouteMatch};

/// Built-in checks: the Veza services and their dependencies through their exporters.
const VEZA_CHECKS: &str = include_str!("../config/veza_health.json");

pub const DEFAULT_CACHE_MS: u32 = 1000;
/// How often the gateway checks its dependencies with no probe asking.
pub const DEFAULT_CHECK_INTERVAL_MS: u32 = 15_000;
const MIN_CHECK_INTERVAL_MS: u32 = 1000;
const MAX_CHECK_INTERVAL_MS: u32 = 3_600_000;
pub const DEFAULT_TIMEOUT_MS: u32 = 1000;
const MAX_MILLIS: u32 = 60_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_live_path")]
    pub live_path: String,
    #[serde(default = "default_ready_path")]
    pub ready_path: String,
    /// Answer only requests whose `:authority` (without port) is one of these; empty: all.
    #[serde(default)]
    pub authorities: Vec<String>,
    #[serde(default = "default_cache_ms")]
    pub cache_ms: u32,
    /// A round of checks at start-up and then this often, gateway-wide, whether or not
    /// anything probes `/ready`, so `dependency_up` is always fresh; 0: rounds only for probes.
    #[serde(default = "default_check_interval_ms")]
    pub check_interval_ms: u32,
    /// Include the failure's text (which may name hosts and addresses) after its category.
    #[serde(default)]
    pub expose_errors: bool,
    /// Absent: the Veza checks.
    #[serde(default)]
    pub checks: Option<Vec<CheckConfig>>,
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            enabled: true,
            live_path: default_live_path(),
            ready_path: default_ready_path(),
            authorities: Vec::new(),
            cache_ms: DEFAULT_CACHE_MS,
            check_interval_ms: DEFAULT_CHECK_INTERVAL_MS,
            expose_errors: false,
            checks: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub name: String,
    pub cluster: String,
    #[serde(default = "default_check_path")]
    pub path: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// `:authority` of the call; default: the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Optional checks are reported and never make the gateway unready.
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default)]
    pub expect: ExpectConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectConfig {
    /// `"2xx"` (a class) or `"204"` (a code).
    #[serde(default = "default_status")]
    pub status: String,
    #[serde(default)]
    pub body_contains: Option<String>,
    #[serde(default)]
    pub json: Option<JsonExpect>,
    #[serde(default)]
    pub prometheus: Option<PrometheusExpect>,
}

impl Default for ExpectConfig {
    fn default() -> ExpectConfig {
        ExpectConfig {
            status: default_status(),
            body_contains: None,
            json: None,
            prometheus: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonExpect {
    /// RFC 6901 pointer, `/status`.
    pub pointer: String,
    pub equals: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusExpect {
    pub metric: String,
    pub equals: f64,
}

fn yes() -> bool {
    true
}
fn default_live_path() -> String {
    "/live".to_owned()
}
fn default_ready_path() -> String {
    "/ready".to_owned()
}
fn default_cache_ms() -> u32 {
    DEFAULT_CACHE_MS
}
fn default_check_interval_ms() -> u32 {
    DEFAULT_CHECK_INTERVAL_MS
}
fn default_check_path() -> String {
    "/".to_owned()
}
fn default_method() -> String {
    "GET".to_owned()
}
fn default_timeout_ms() -> u32 {
    DEFAULT_TIMEOUT_MS
}
fn default_status() -> String {
    "2xx".to_owned()
}

#[derive(Debug, Clone)]
pub struct Expect {
    pub status: StatusPattern,
    pub body_contains: Option<String>,
    pub json: Option<JsonExpect>,
    pub prometheus: Option<PrometheusExpect>,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub cluster: String,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub timeout_ms: u32,
    pub required: bool,
    pub expect: Expect,
}

#[derive(Debug, Clone)]
pub struct HealthSettings {
    pub enabled: bool,
    pub live_path: String,
    pub ready_path: String,
    /// The route-table endpoints of `live_path` and `ready_path` (routes of the `gateway`
    /// service), once the configuration's route table has them; `None` while disabled.
    pub endpoints: Option<(EndpointId, EndpointId)>,
    pub authorities: Vec<String>,
    pub cache_nanos: u64,
    /// 0: no rounds without a probe.
    pub check_interval_nanos: u64,
    pub expose_errors: bool,
    pub checks: Vec<Check>,
}

impl HealthSettings {
    /// Which of the gateway's own routes a route match is, before the authority check.
    pub fn route_endpoint(&self, route: RouteMatch) -> super::Endpoint {
        match (self.endpoints, route.endpoint) {
            (Some((live, _)), Some(endpoint)) if endpoint == live => super::Endpoint::Live,
            (Some((_, ready)), Some(endpoint)) if endpoint == ready => super::Endpoint::Ready,
            _ => super::Endpoint::Other,
        }
    }
}

/// Compiles the section; errors name the field relative to `health`.
pub fn compile(config: HealthConfig) -> Result<HealthSettings, ConfigError> {
    let err = |field: &str, message: String| Err(ConfigError::at(field.to_owned(), message));
    for (field, path) in [
        ("live_path", &config.live_path),
        ("ready_path", &config.ready_path),
    ] {
        // A literal path: `:` or `*` would start a route parameter in the route table.
        let parameter = path.split('/').any(|s| s.starts_with([':', '*']));
        if !path.starts_with('/') || path.contains(['?', '#']) || !printable(path) || parameter {
            return err(
                field,
                format!(
                    "{path:?} must be a literal path starting with '/', without query or ':'/'*' parameters"
                ),
            );
        }
    }
    if config.live_path == config.ready_path {
        return err(
            "ready_path",
            format!("{:?} is also the live_path", config.ready_path),
        );
    }
    if config.cache_ms > MAX_MILLIS {
        return err(
            "cache_ms",
            format!("must be at most {MAX_MILLIS} (got {})", config.cache_ms),
        );
    }
    let interval = config.check_interval_ms;
    if interval != 0 && !(MIN_CHECK_INTERVAL_MS..=MAX_CHECK_INTERVAL_MS).contains(&interval) {
        return err(
            "check_interval_ms",
            format!(
                "must be 0 (rounds only for probes) or {MIN_CHECK_INTERVAL_MS} to {MAX_CHECK_INTERVAL_MS} (got {interval})"
            ),
        );
    }
    for (i, authority) in config.authorities.iter().enumerate() {
        if authority.is_empty() || !printable(authority) || authority.contains(' ') {
            return err(
                &format!("authorities[{i}]"),
                format!("{authority:?} is not a host name"),
            );
        }
    }
    let checks = match config.checks {
        Some(checks) => checks,
        None => veza_checks().map_err(|m| ConfigError::at("checks".to_owned(), m))?,
    };
    let mut compiled: Vec<Check> = Vec::with_capacity(checks.len());
    for (i, check) in checks.into_iter().enumerate() {
        let check = compile_check(check).map_err(|e| e.within(&format!("checks[{i}]")))?;
        if compiled.iter().any(|c| c.name == check.name) {
            return err(
                &format!("checks[{i}].name"),
                format!("{:?} is used twice", check.name),
            );
        }
        compiled.push(check);
    }
    Ok(HealthSettings {
        enabled: config.enabled,
        live_path: config.live_path,
        ready_path: config.ready_path,
        endpoints: None,
        authorities: config.authorities,
        cache_nanos: u64::from(config.cache_ms) * 1_000_000,
        check_interval_nanos: u64::from(config.check_interval_ms) * 1_000_000,
        expose_errors: config.expose_errors,
        checks: compiled,
    })
}

/// The Veza checks, as built in. The file is a `health` section (read with the same code as the
/// plugin configuration's, which a second type would duplicate in the module).
fn veza_checks() -> Result<Vec<CheckConfig>, String> {
    serde_json::from_slice::<HealthConfig>(VEZA_CHECKS.as_bytes())
        .map(|builtin| builtin.checks.unwrap_or_default())
        .map_err(|e| format!("built-in checks: {e}"))
}

fn compile_check(check: CheckConfig) -> Result<Check, ConfigError> {
    let err = |field: &str, message: String| Err(ConfigError::at(field.to_owned(), message));
    let name_ok = !check.name.is_empty()
        && check.name.len() <= 64
        && check
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return err(
            "name",
            format!(
                "{:?} must be 1 to 64 characters of a-z, 0-9, '-' and '_'",
                check.name
            ),
        );
    }
    if let Err(message) = crate::config::cluster_name(&check.cluster) {
        return err("cluster", message);
    }
    if !check.path.starts_with('/') || !printable(&check.path) || check.path.contains(' ') {
        return err("path", format!("{:?} must start with '/'", check.path));
    }
    if let Err(message) = Method::parse_standard(&check.method) {
        return err("method", message);
    }
    let authority = check.authority.unwrap_or_else(|| check.cluster.clone());
    if authority.is_empty() || !printable(&authority) || authority.contains(' ') {
        return err("authority", format!("{authority:?} is not a host name"));
    }
    if check.timeout_ms == 0 || check.timeout_ms > MAX_MILLIS {
        return err(
            "timeout_ms",
            format!("must be 1 to {MAX_MILLIS} (got {})", check.timeout_ms),
        );
    }
    let status = StatusPattern::parse(&check.expect.status)
        .map_err(|message| ConfigError::at("expect.status".to_owned(), message))?;
    if let Some(json) = &check.expect.json {
        if !(json.pointer.is_empty() || json.pointer.starts_with('/')) {
            return err(
                "expect.json.pointer",
                format!("{:?} must be a JSON pointer (\"/status\")", json.pointer),
            );
        }
    }
    if let Some(metric) = &check.expect.prometheus {
        let mut bytes = metric.metric.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':');
        if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            return err(
                "expect.prometheus.metric",
                format!("{:?} is not a Prometheus metric name", metric.metric),
            );
        }
    }
    Ok(Check {
        name: check.name,
        cluster: check.cluster,
        method: check.method,
        path: check.path,
        authority,
        timeout_ms: check.timeout_ms,
        required: check.required,
        expect: Expect {
            status,
            body_contains: check.expect.body_contains,
            json: check.expect.json,
            prometheus: check.expect.prometheus,
        },
    })
}

fn printable(text: &str) -> bool {
    text.chars().all(|c| !c.is_control())
}

#[cfg(test)]
mod tests {
    use crate::config;

    fn error(json: &str) -> String {
        config::load(Some(json.as_bytes())).unwrap_err().to_string()
    }

    #[test]
    fn veza_defaults() {
        let health = config::load(None).unwrap().health;
        assert!(health.enabled);
        assert_eq!(
            (health.live_path.as_str(), health.ready_path.as_str()),
            ("/live", "/ready")
        );
        assert_eq!(health.cache_nanos, 1_000_000_000);
        let names: Vec<_> = health
            .checks
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.cluster.as_str(),
                    c.path.as_str(),
                    c.required,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("backend-api", "veza_backend_api", "/api/health", true),
                ("chat", "veza_chat", "/health", true),
                ("stream", "veza_stream", "/health", true),
                ("database", "veza_postgres_exporter", "/metrics", true),
                ("redis", "veza_redis_exporter", "/metrics", false),
            ]
        );
    }

    #[test]
    fn bad_health_configuration_names_the_field() {
        let cases = [
            (r#"{"health": {"cache_ms": 60001}}"#, "health.cache_ms: must be at most 60000 (got 60001)"),
            (r#"{"health": {"check_interval_ms": 10}}"#, "health.check_interval_ms: must be 0 (rounds only for probes) or 1000 to 3600000 (got 10)"),
            (r#"{"health": {"live_path": "live"}}"#, "health.live_path: \"live\" must be a literal path"),
            (r#"{"health": {"live_path": "/health/:probe"}}"#, "health.live_path: \"/health/:probe\" must be a literal path"),
            (r#"{"health": {"ready_path": "/live"}}"#, "health.ready_path: \"/live\" is also the live_path"),
            (r#"{"health": {"checks": [{"name": "a", "cluster": "c", "timeout_ms": 0}]}}"#, "health.checks[0].timeout_ms: must be 1 to 60000 (got 0)"),
            (r#"{"health": {"checks": [{"name": "a", "cluster": "c", "expect": {"status": "2x"}}]}}"#, "health.checks[0].expect.status: \"2x\" must be a class"),
            (r#"{"health": {"checks": [{"name": "a", "cluster": "c", "expect": {"status": "0200"}}]}}"#, "health.checks[0].expect.status: \"0200\" must be a class"),
            (r#"{"health": {"checks": [{"name": "a", "cluster": "c"}, {"name": "a", "cluster": "d"}]}}"#, "health.checks[1].name: \"a\" is used twice"),
            (r#"{"health": {"checks": [{"name": "a", "cluster": ""}]}}"#, "health.checks[0].cluster: \"\" is not a cluster name"),
            (r#"{"health": {"checks": [{"name": "a", "cluster": "c", "method": "FETCH"}]}}"#, "health.checks[0].method: \"FETCH\" is not a standard HTTP method"),
            (r#"{"health": {"checks": [{"name": "a", "cluster": "c", "expect": {"prometheus": {"metric": "pg up", "equals": 1}}}]}}"#, "health.checks[0].expect.prometheus.metric: \"pg up\" is not a Prometheus metric name"),
            (r#"{"health": {"checks": [{"name": "a"}]}}"#, "health.checks[0]: invalid configuration JSON: missing field `cluster`"),
            (r#"{"health": {"probes": []}}"#, "health.probes: invalid configuration JSON: unknown field `probes`"),
        ];
        for (json, expected) in cases {
            let got = error(json);
            assert!(
                got.starts_with(expected),
                "{json}\n got: {got}\nwant: {expected}"
            );
        }
    }
}
