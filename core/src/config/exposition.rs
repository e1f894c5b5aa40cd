//! The `exposition` section: set on the stats listener's filter only, which then serves the
//! filter's metrics as Prometheus exposition at `path` and does nothing else.

use serde::Deserialize;

use super::ConfigError;

const DEFAULT_TIMEOUT_MS: u32 = 5000;
const MAX_TIMEOUT_MS: u32 = 60_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpositionConfig {
    /// The cluster that reaches Envoy's own admin endpoint (the gateway-wide values).
    pub admin_cluster: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
}

fn default_path() -> String {
    "/metrics".to_owned()
}

fn default_timeout_ms() -> u32 {
    DEFAULT_TIMEOUT_MS
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpositionSettings {
    pub admin_cluster: String,
    pub path: String,
    pub timeout_ms: u32,
}

/// Compiles the section; errors name the field relative to `exposition`.
pub fn compile(config: ExpositionConfig) -> Result<ExpositionSettings, ConfigError> {
    let err = |field: &str, message: String| Err(ConfigError::at(field.to_owned(), message));
    if let Err(message) = super::cluster_name(&config.admin_cluster) {
        return err("admin_cluster", message);
    }
    let path = &config.path;
    if !path.starts_with('/') || path.contains(['?', '#']) || path.chars().any(char::is_control) {
        return err(
            "path",
            format!("{path:?} must be a path starting with '/', without query"),
        );
    }
    if config.timeout_ms == 0 || config.timeout_ms > MAX_TIMEOUT_MS {
        return err(
            "timeout_ms",
            format!("must be 1 to {MAX_TIMEOUT_MS} (got {})", config.timeout_ms),
        );
    }
    Ok(ExpositionSettings {
        admin_cluster: config.admin_cluster,
        path: config.path,
        timeout_ms: config.timeout_ms,
    })
}

#[cfg(test)]
mod tests {
    use crate::config;

    #[test]
    fn the_stats_listeners_filter_serves_only_the_exposition() {
        let settings =
            config::load(Some(br#"{"exposition": {"admin_cluster": "envoy_admin"}}"#)).unwrap();
        let exposition = settings.exposition.unwrap();
        assert_eq!(
            (
                exposition.admin_cluster.as_str(),
                exposition.path.as_str(),
                exposition.timeout_ms
            ),
            ("envoy_admin", "/metrics", 5000)
        );
        assert!(!settings.health.enabled);
        assert!(!settings.tracing.enabled);
        assert!(!settings.active_users.enabled);
        assert!(settings.business.rules.is_empty());
        assert!(settings.websocket.chat_endpoints.is_empty());
    }

    #[test]
    fn bad_exposition_configuration_names_the_field() {
        let cases = [
            (
                r#"{"exposition": {}}"#,
                "exposition: invalid configuration JSON: missing field `admin_cluster`",
            ),
            (
                r#"{"exposition": {"admin_cluster": ""}}"#,
                "exposition.admin_cluster: \"\" is not a cluster name",
            ),
            (
                r#"{"exposition": {"admin_cluster": "a", "path": "metrics"}}"#,
                "exposition.path: \"metrics\" must be a path starting with '/', without query",
            ),
            (
                r#"{"exposition": {"admin_cluster": "a", "timeout_ms": 0}}"#,
                "exposition.timeout_ms: must be 1 to 60000 (got 0)",
            ),
        ];
        for (json, expected) in cases {
            let err = config::load(Some(json.as_bytes())).err().unwrap();
            assert!(
                err.to_string().starts_with(expected),
                "{json}\n got: {err}\nwant: {expected}"
            );
        }
    }
}
