//! Envoy refuses the filter when its configuration is wrong, saying which field and why; and
//! every Envoy config this repository ships passes `envoy --mode validate`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::{Command, Stdio};

use veza_test_harness::*;

const REFUSED: &str = "veza-observability: invalid plugin configuration: ";

fn gateway() -> GatewayConfig {
    GatewayConfig::shipped(Build::selected().gateway_config())
}

/// What Envoy says when the filter refuses its configuration.
fn envoy_refusal() -> &'static str {
    match Build::selected() {
        Build::Wasm => "Unable to create Wasm plugin veza_observability",
        Build::Native => "Failed to create filter config: Failed to initialize dynamic module",
    }
}

#[test]
fn every_shipped_envoy_config_validates() {
    let shipped = GatewayConfig::all_shipped();
    assert_eq!(
        shipped,
        [
            "envoy/bench.yaml",
            "envoy/envoy-native-metrics.yaml",
            "envoy/envoy-native.yaml",
            "envoy/envoy.yaml",
            "examples/func-e/envoy.yaml"
        ],
        "the Envoy configs under {SHIPPED_CONFIG_DIRS:?}"
    );
    for relative in shipped {
        let (ok, output) = validate(&GatewayConfig::shipped(&relative));
        assert!(ok, "{relative} does not validate:\n{output}");
        assert!(
            output.contains("veza-observability: configured"),
            "{relative}: the filter did not configure:\n{output}"
        );
    }
}

/// Without a `stats_tags` entry per label, Envoy's Prometheus output keeps the encoded label
/// inside the metric name. The native module's labels are Envoy's own tags: its configs need
/// the namespace and the runtime flag that give them their bare names instead.
#[test]
fn every_shipped_envoy_config_extracts_every_label() {
    use veza_observability::stats_tags::{stats_tag_regex, LABEL_KEYS};
    for relative in GatewayConfig::all_shipped() {
        let text = std::fs::read_to_string(format!("{REPO}/{relative}")).unwrap();
        if text.contains("DynamicModuleFilter") {
            assert!(!text.contains("stats_config:"), "{relative}");
            assert!(text.contains("metrics_namespace: veza\n"), "{relative}");
            assert!(
                text.contains(
                    "envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix: true"
                ),
                "{relative}"
            );
            continue;
        }
        for key in LABEL_KEYS {
            let line = format!("regex: '{}'", stats_tag_regex(key));
            assert!(
                text.contains(&format!("tag_name: {key}")) && text.contains(&line),
                "{relative} lacks the stats_tag for {key}: {line}"
            );
        }
    }
}

#[test]
fn each_bad_configuration_is_refused_with_its_field_named() {
    let cases = [
        ("{", "invalid configuration JSON: EOF while parsing an object"),
        (r#"{"max_series": 0}"#, "max_series: must be at least 1 (got 0)"),
        (r#"{"max_seriess": 5}"#, "max_seriess: invalid configuration JSON: unknown field `max_seriess`"),
        // The test-only setting does not exist in the module `make wasm` ships.
        (
            r#"{"fault_injection": {"trap_header": "x-trap"}}"#,
            "fault_injection: invalid configuration JSON: unknown field `fault_injection`",
        ),
        (r#"{"metrics_flush_interval_ms": "1s"}"#, "metrics_flush_interval_ms: invalid configuration JSON: invalid type: string \"1s\", expected u32"),
        (
            r#"{"services": [{"name": "api", "routes": ["/api/v1/tracks/:"]}]}"#,
            "services[0].routes[0]: template \"/api/v1/tracks/:\": parameter at segment 4 has no name",
        ),
        (r#"{"services": [{"name": "Backend API"}]}"#, "services[0].name: \"Backend API\" must be 1 to 64 characters"),
        (
            r#"{"health": {"checks": [{"name": "database", "cluster": "veza_postgres_exporter", "timeout_ms": 0}]}}"#,
            "health.checks[0].timeout_ms: must be 1 to 60000 (got 0)",
        ),
        (
            r#"{"count_in_logger": "veza"}"#,
            "count_in_logger: counting in the access logger needs tracing.enabled off",
        ),
    ];
    for (json, message) in cases {
        let (ok, output) = validate(&gateway().plugin_configuration(json));
        assert!(!ok, "{json} was accepted:\n{output}");
        let expected = format!("{REFUSED}{message}");
        assert!(
            output.contains(&expected),
            "{json}: expected {expected:?} in:\n{output}"
        );
        assert!(output.contains(envoy_refusal()), "{output}");
    }
}

/// Counting in the access logger is the native build's: the wasm build, which has no logger,
/// refuses it; the native module refuses a logger it is not, or one no gateway could name.
#[test]
fn counting_in_the_access_logger_is_refused_where_it_cannot_be() {
    let metrics_only = r#"{"count_in_logger": "veza", "tracing": {"enabled": false}}"#;
    let wasm =
        GatewayConfig::shipped(Build::Wasm.gateway_config()).plugin_configuration(metrics_only);
    let (ok, output) = validate(&wasm);
    assert!(!ok, "the wasm build took count_in_logger:\n{output}");
    let expected = format!(
        "{REFUSED}count_in_logger: needs the native build's access logger: this build counts in the filter"
    );
    assert!(output.contains(&expected), "{output}");

    let logger = GatewayConfig::shipped("envoy/envoy-native-metrics.yaml");
    for (from, to, message) in [
        (
            "                value: veza\n",
            "                value: \"\"\n",
            "veza-observability: logger_config: \"\" must be 1 to 64 characters",
        ),
        (
            "              logger_name: veza_observability\n",
            "              logger_name: another\n",
            "veza-observability: unknown logger_name \"another\"",
        ),
    ] {
        let (ok, output) = validate(&logger.clone().replace_once(from, to));
        assert!(!ok, "{to} was accepted:\n{output}");
        assert!(output.contains(message), "{message:?} in:\n{output}");
    }
}

#[test]
fn a_running_envoy_refuses_to_start_with_a_bad_configuration() {
    let dir = scratch_dir("refused");
    let (config, _) = GatewayConfig::shipped_on_fresh_ports(Build::selected().gateway_config());
    let config = config.plugin_configuration(r#"{"max_series": 0}"#);
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, &config.text).unwrap();
    let output = Command::new(envoy_bin())
        .args(["--disable-hot-restart", "-l", "info", "-c"])
        .arg(&path)
        .current_dir(REPO)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "Envoy started with max_series 0:\n{text}"
    );
    assert!(
        text.contains(&format!("{REFUSED}max_series: must be at least 1 (got 0)")),
        "{text}"
    );
}

/// The README's configuration example is one the filter takes.
#[test]
fn the_readme_configuration_example_loads() {
    let readme = std::fs::read_to_string(format!("{REPO}/README.md")).unwrap();
    let section = &readme[readme.find("\n## Configuration\n").unwrap()..];
    let start = section.find("```json\n").unwrap() + "```json\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let loaded = veza_observability::config::load(Some(example.as_bytes()));
    assert!(loaded.is_ok(), "{example}: {:?}", loaded.err());
}

/// The README's "Add it to your Envoy" filter entry, in place of the shipped gateway's, is a
/// config Envoy takes and the filter configures from.
#[test]
fn the_readme_filter_entry_validates() {
    let readme = std::fs::read_to_string(format!("{REPO}/README.md")).unwrap();
    let section = &readme[readme.find("\n## Add it to your Envoy\n").unwrap()..];
    let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
    let snippet = &section[start..start + section[start..].find("```").unwrap()];
    let snippet = snippet.replace(
        "/etc/envoy/veza_observability.wasm",
        &wasm_path().display().to_string(),
    );
    // The README's block is indented for its list item; the gateway's filters sit at 10.
    let indent = snippet.len() - snippet.trim_start().len();
    let entry: String = snippet
        .lines()
        .map(|line| format!("{}{}\n", " ".repeat(10), line.get(indent..).unwrap_or("")))
        .collect();
    let shipped = GatewayConfig::shipped("envoy/envoy.yaml").text;
    let from = shipped.find("          http_filters:\n").unwrap();
    let router = "\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n";
    let to = shipped.find(router).unwrap() + router.len();
    // The stats listener's filter refers to the gateway filter's module by a YAML alias,
    // which the README's entry does not define: it names the module itself.
    let text = format!("{}{entry}{}", &shipped[..from], &shipped[to..]).replacen(
        "code: *veza_module",
        &format!(
            "code: {{ local: {{ filename: {} }} }}",
            wasm_path().display()
        ),
        1,
    );
    let config = GatewayConfig { text };
    let (ok, output) = validate(&config);
    assert!(ok, "the README's entry does not validate:\n{output}");
    assert!(
        output.contains("veza-observability: configured"),
        "the filter did not configure:\n{output}"
    );
}
