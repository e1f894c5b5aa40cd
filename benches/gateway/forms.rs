//! The forms the bench compares: each a Route set and an Envoy config (no filter, the empty
//! filter, this filter's configurations, Envoy's native peers, the probe filter).

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum FormId {
    NoFilter,
    EmptyWasm,
    ThisFilter,
    /// This filter with trace headers off: the foundation's capability, HTTP metrics.
    NoTraceHeaders,
    StatsLogger,
    ThisFilterSpans,
    EnvoyTracer,
    Templates10,
    Templates1000,
    Series10000,
    /// BENCH_PLUGIN_CONFIG: this filter with that plugin configuration.
    Experiment,
    /// BENCH_CARGO_WASM=1: this filter as cargo builds it, before wasm-opt.
    CargoWasm,
    /// The probe filter making only these hostcalls (see fixtures/probe-filter).
    Probe(&'static str),
    /// The native build (the dynamic module) as configured by default.
    Native,
    /// The native build without trace headers.
    NativeNoTraceHeaders,
    /// The native build without trace headers, counting in its access logger with the filter
    /// off on the bench's routes (as envoy/envoy-native-metrics.yaml on the Veza API's).
    NativeLogged,
    /// The native build sampling 100% with every span exported.
    NativeSpans,
    /// The native build whose hooks return at once (`make native-floor`): what any
    /// dynamic-module filter of its shape pays before doing any work.
    NativeFloor,
    /// BENCH_NATIVE_VARIANT: another build of the native module (a layout, a compiler
    /// setting) beside the shipped one, as configured by default.
    NativeVariant,
}

impl FormId {
    /// Whether the form loads the native build.
    pub(crate) fn native(self) -> bool {
        matches!(
            self,
            FormId::Native
                | FormId::NativeNoTraceHeaders
                | FormId::NativeLogged
                | FormId::NativeSpans
                | FormId::NativeFloor
                | FormId::NativeVariant
        )
    }
}

/// The probe forms: the hostcalls this filter makes on a plain request, one kind at a time,
/// then all of them together.
pub(crate) const PROBES: [(&str, &str); 13] = [
    ("time", "probe: clock read ×2"),
    ("time10", "probe: clock read ×20"),
    ("pairs", "probe: all request headers read"),
    ("status", "probe: :status read"),
    ("absent", "probe: absent response header read"),
    ("code", "probe: response.code property read"),
    ("set1", "probe: 1 request header written"),
    ("set2", "probe: 2 request headers written"),
    ("add1", "probe: 1 request header added"),
    ("pairs,set2", "probe: all headers read + 2 written"),
    (
        "setpairs",
        "probe: all headers read + written back with 2 more in 1 call",
    ),
    (
        "time,pairs,status",
        "probe: the HTTP metrics' hostcalls together",
    ),
    (
        "time,pairs,set1,status",
        "probe: this filter's hostcalls together",
    ),
];

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Route {
    /// Answered by Envoy itself: the harshest case, where the filter's share is largest.
    Direct,
    /// Proxied to nginx.
    Proxied,
    /// Answered by Envoy; matched by the scale forms' route tables.
    Templated,
}

impl Route {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct response",
            Route::Proxied => "proxied to nginx",
            Route::Templated => "direct, scale table",
        }
    }

    pub(crate) fn path(self) -> &'static str {
        match self {
            Route::Direct => "/api/v1/tracks/42",
            Route::Proxied => "/api/v1/users/42",
            Route::Templated => "/api/v1/tracks/s7/42",
        }
    }
}

/// The default configuration without trace headers: metrics (HTTP, business, active users)
/// only, the foundation issue's capability.
pub(crate) const NO_TRACE_HEADERS_CONFIG: &str = r#"{"tracing": {"enabled": false}}"#;
/// Metrics only, counted in the module's access logger (snippets/native-logger.yaml).
pub(crate) const COUNT_IN_LOGGER_CONFIG: &str =
    r#"{"count_in_logger": "bench", "tracing": {"enabled": false}}"#;
/// The same job as Envoy's tracer: every request sampled, `traceparent` written, a span
/// exported per request (to nginx, which answers 200 to any POST). Metrics as always.
pub(crate) const TRACE_ALL_CONFIG: &str = r#"{"tracing": {"sampling_ratio": 1.0, "outgoing": ["traceparent"], "collector": {"cluster": "collector"}}}"#;

/// Envoy's native stats access logger emitting this filter's request counter and duration
/// histogram with the same labels, from access-log command operators. The snippets are files
/// so `tools/count-instructions` (make count) builds the same forms.
pub(crate) const STATS_LOGGER: &str = include_str!("snippets/stats-logger.yaml");

pub(crate) struct Form {
    pub(crate) id: FormId,
    pub(crate) name: &'static str,
    pub(crate) routes: &'static [Route],
    /// Runs the WebSocket echo too.
    pub(crate) echoes: bool,
    /// Distinct `http_requests_total` series made before measuring.
    pub(crate) warm_series: usize,
}

pub(crate) const BOTH: &[Route] = &[Route::Direct, Route::Proxied];
pub(crate) const SCALE: &[Route] = &[Route::Templated];

pub(crate) fn forms() -> Vec<Form> {
    let form = |id, name, routes, echoes, warm_series| Form {
        id,
        name,
        routes,
        echoes,
        warm_series,
    };
    vec![
        form(FormId::NoFilter, "no filter", BOTH, true, 0),
        form(FormId::EmptyWasm, "empty wasm filter", BOTH, true, 0),
        form(FormId::ThisFilter, "veza-observability", BOTH, true, 0),
        form(
            FormId::NoTraceHeaders,
            "veza-observability, no trace headers",
            BOTH,
            false,
            0,
        ),
        form(
            FormId::StatsLogger,
            "Envoy stats access logger",
            BOTH,
            false,
            0,
        ),
        form(
            FormId::ThisFilterSpans,
            "veza-observability, 100% spans",
            BOTH,
            false,
            0,
        ),
        form(
            FormId::EnvoyTracer,
            "Envoy OpenTelemetry tracer, 100%",
            BOTH,
            false,
            0,
        ),
        form(FormId::Native, "native module", BOTH, true, 0),
        form(
            FormId::NativeNoTraceHeaders,
            "native module, no trace headers",
            BOTH,
            false,
            0,
        ),
        form(
            FormId::NativeLogged,
            "native module, counted in its access logger",
            BOTH,
            false,
            0,
        ),
        form(
            FormId::NativeSpans,
            "native module, 100% spans",
            BOTH,
            false,
            0,
        ),
        form(
            FormId::NativeFloor,
            "native module, hooks only",
            BOTH,
            false,
            0,
        ),
        form(FormId::Templates10, "10 templates", SCALE, false, 0),
        form(
            FormId::Templates1000,
            "1,000 templates, 10 series",
            SCALE,
            false,
            10,
        ),
        form(
            FormId::Series10000,
            "1,000 templates, 10,000 series",
            SCALE,
            false,
            10_000,
        ),
        form(FormId::Experiment, "BENCH_PLUGIN_CONFIG", BOTH, false, 0),
        form(
            FormId::NativeVariant,
            "BENCH_NATIVE_VARIANT",
            BOTH,
            false,
            0,
        ),
        form(
            FormId::CargoWasm,
            "this filter, before wasm-opt",
            BOTH,
            false,
            0,
        ),
    ]
    .into_iter()
    .chain(
        PROBES
            .iter()
            .filter(|_| env_number("BENCH_PROBES", 0) == 1)
            .map(|(probes, name)| form(FormId::Probe(probes), name, BOTH, false, 0)),
    )
    .filter(|f| f.id != FormId::Experiment || experiment_config().is_some())
    .filter(|f| f.id != FormId::NativeVariant || native_variant().is_some())
    .filter(|f| f.id != FormId::CargoWasm || env_number("BENCH_CARGO_WASM", 0) == 1)
    .collect()
}

pub(crate) fn experiment_config() -> Option<String> {
    std::env::var("BENCH_PLUGIN_CONFIG").ok()
}

pub(crate) fn native_variant() -> Option<std::path::PathBuf> {
    std::env::var_os("BENCH_NATIVE_VARIANT").map(std::path::PathBuf::from)
}

pub(crate) fn config(id: FormId, nginx_port: u16, chat_port: u16) -> (GatewayConfig, Ports) {
    let (config, ports) = GatewayConfig::shipped_on_fresh_ports("envoy/bench.yaml");
    let config = config.ports(&[(8080, nginx_port), (3001, chat_port), (4318, nginx_port)]);
    let without_filter = |config: GatewayConfig| {
        let start = config.text.find("          # >>> filter").unwrap();
        let end = config.text.find("          # <<< filter\n").unwrap();
        let mut text = config.text.clone();
        text.replace_range(start..end + "          # <<< filter\n".len(), "");
        GatewayConfig { text }
    };
    let config = match id {
        FormId::ThisFilter => config,
        FormId::Native => native(config),
        FormId::NativeFloor => native_library(
            config,
            &Path::new(REPO).join("build/floor/libveza_observability.so"),
        ),
        FormId::NativeVariant => native_library(config, &native_variant().unwrap()),
        FormId::NativeNoTraceHeaders => {
            native(config).plugin_configuration(NO_TRACE_HEADERS_CONFIG)
        }
        FormId::NativeLogged => native(config)
            .plugin_configuration(COUNT_IN_LOGGER_CONFIG)
            .replace_once(
                "          - name: veza_observability\n",
                "          - name: veza_observability\n            disabled: true\n",
            )
            .replace_once(
                "          # native peer\n",
                &NATIVE_LOGGER.replace("NATIVE", &native_path().display().to_string()),
            ),
        FormId::NativeSpans => native(config).plugin_configuration(TRACE_ALL_CONFIG),
        FormId::ThisFilterSpans => config.plugin_configuration(TRACE_ALL_CONFIG),
        FormId::NoTraceHeaders => config.plugin_configuration(NO_TRACE_HEADERS_CONFIG),
        FormId::Experiment => config.plugin_configuration(&experiment_config().unwrap()),
        FormId::Templates10 => config.plugin_configuration(&scale_config(10)),
        FormId::Templates1000 | FormId::Series10000 => {
            config.plugin_configuration(&scale_config(1000))
        }
        FormId::StatsLogger => {
            without_filter(config).replace_once("          # native peer\n", STATS_LOGGER)
        }
        FormId::EnvoyTracer => without_filter(config).replace_once(
            "          # native peer\n",
            &format!(
                "          tracing:\n            random_sampling: {{ value: 100 }}\n            provider:\n              \
                 name: envoy.tracers.opentelemetry\n              typed_config:\n                \
                 \"@type\": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig\n                \
                 service_name: veza-gateway\n                http_service:\n                  \
                 http_uri: {{ uri: \"http://127.0.0.1:{nginx_port}/v1/traces\", cluster: collector, timeout: 1s }}\n"
            ),
        ),
        FormId::EmptyWasm => with_module(config, "empty_filter.wasm"),
        FormId::CargoWasm => with_module(config, "veza_observability.wasm"),
        FormId::Probe(probes) => {
            with_module(config, "probe_filter.wasm").plugin_configuration(probes)
        }
        FormId::NoFilter => without_filter(config),
    };
    (config, ports)
}

/// The config with one of the bench's other filters in place of this one.
pub(crate) fn with_module(config: GatewayConfig, module: &str) -> GatewayConfig {
    let path = Path::new(REPO)
        .join("target/wasm32-wasip1/release")
        .join(module);
    assert!(path.exists(), "build {module} first (make bench does)");
    config.replace_once(
        &format!("filename: {}", wasm_path().display()),
        &format!("filename: {}", path.display()),
    )
}

/// The native build's filter entry, in the wasm filter's place.
const NATIVE_FILTER: &str = include_str!("snippets/native-filter.yaml");
/// The module's access logger, counting for the filter config `COUNT_IN_LOGGER_CONFIG` names.
const NATIVE_LOGGER: &str = include_str!("snippets/native-logger.yaml");

/// The config with another build of the native module (the floor, a variant) in place of
/// the wasm one.
fn native_library(config: GatewayConfig, library: &Path) -> GatewayConfig {
    assert!(
        library.exists(),
        "no native module at {}",
        library.display()
    );
    native(config).replace_once(
        &native_path().display().to_string(),
        &library.display().to_string(),
    )
}

/// The config with the native build in place of the wasm one (as envoy/envoy-native.yaml
/// loads it: bare metric names through the namespace and the runtime flag).
pub(crate) fn native(config: GatewayConfig) -> GatewayConfig {
    let start =
        config.text.find("          # >>> filter\n").unwrap() + "          # >>> filter\n".len();
    let end = config.text.find("          # <<< filter\n").unwrap();
    let mut text = config.text.clone();
    text.replace_range(
        start..end,
        &NATIVE_FILTER.replace("NATIVE", &native_path().display().to_string()),
    );
    GatewayConfig { text }.replace_once(
        "static_resources:\n",
        "layered_runtime:\n  layers:\n  - name: veza_observability\n    static_layer:\n      \
         envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix: true\nstatic_resources:\n",
    )
}
