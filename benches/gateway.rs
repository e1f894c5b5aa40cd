//! `make bench`: what the filter costs per request, measured against a real Envoy, and a
//! table of the performance goals with a verdict for each.
//!
//! One Envoy worker pinned to CPU 0; the load generators (wrk, oha), nginx (the upstream of the
//! proxied route and the span collector stand-in) and the chat stand-in on CPU 1. Every form
//! of envoy/bench.yaml runs in the same rounds, interleaved, so drift on a shared machine hits
//! every form alike:
//!
//! - no filter; the empty wasm filter (the floor any wasm filter pays);
//! - this filter as configured by default (metrics, trace headers, sampling 1%, no export);
//! - the same without trace headers: metrics only, the foundation issue's capability;
//! - Envoy's native `envoy.access_loggers.stats` emitting the same counter and histogram;
//! - this filter sampling 100% with every span exported, and Envoy's own OpenTelemetry tracer
//!   doing the same job (100%, `traceparent`, spans to the same collector);
//! - this filter with 10 and with 1,000 route templates, and with 10,000 live series.
//!
//! Reported per form and route: median requests/s, p50 and p99 latency, the ratio to no filter,
//! and Envoy's own CPU time per request (from /proc over the run). Then: p99 latency at a fixed
//! 70% of the no-filter maximum rate through nginx (oha), a WebSocket echo workload, memory over
//! BENCH_MEMORY_REQUESTS (10 million) requests on 10,000 distinct paths, and the `.wasm` size.
//!
//! Environment: BENCH_SECONDS (10) per measurement, BENCH_ROUNDS (5), BENCH_CONNECTIONS (32),
//! BENCH_MEMORY_REQUESTS (10000000; 0 skips). While investigating: BENCH_ONLY runs a subset
//! (form names, comma-separated, or separated by `|` when one has a comma in it; the verdicts
//! that need a missing form are then not given), and
//! BENCH_PLUGIN_CONFIG adds a form of this filter with that plugin configuration (JSON).
//! BENCH_BROWSER_HEADERS=1 sends nine more request headers, as a browser would, with wrk.
//! BENCH_PROBES=1 adds the probe filter's forms: the cost of each hostcall kind the filter makes.
//! BENCH_CARGO_WASM=1 adds this filter as cargo builds it, before wasm-opt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veza_observability::config::scale_configuration as scale_config;
use veza_test_harness::*;

const ENVOY_CPU: usize = 0;
const LOAD_CPU: usize = 1;

/// The foundation's target: share of no-filter throughput on the direct-response route.
const DIRECT_THROUGHPUT_TARGET: f64 = 0.65;
/// The filter's added CPU per request, as a multiple of the empty wasm filter's.
const ADDED_CPU_VS_EMPTY_TARGET: f64 = 1.3;
/// Share of the no-filter maximum rate the fixed-rate latency run offers.
const FIXED_RATE_SHARE: f64 = 0.7;
const P99_ADDED_TARGET_US: f64 = 100.0;
/// Largest cost increase allowed from 10 to 1,000 templates, and from 10 to 10,000 series.
const SCALE_TOLERANCE: f64 = 0.10;
const MEMORY_DRIFT_TARGET: f64 = 0.02;
const WEBSOCKET_TARGET: f64 = 0.9;
const WASM_SIZE_TARGET: u64 = 300 * 1024;
const WEBSOCKET_CONNECTIONS: usize = 4;
/// Distinct paths of the memory run.
const MEMORY_PATHS: usize = 10_000;
const MEMORY_WARMUP_REQUESTS: u64 = 200_000;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum FormId {
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
}

/// The probe forms: the hostcalls this filter makes on a plain request, one kind at a time,
/// then all of them together.
const PROBES: [(&str, &str); 13] = [
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
enum Route {
    /// Answered by Envoy itself: the harshest case, where the filter's share is largest.
    Direct,
    /// Proxied to nginx.
    Proxied,
    /// Answered by Envoy; matched by the scale forms' route tables.
    Templated,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct response",
            Route::Proxied => "proxied to nginx",
            Route::Templated => "direct, scale table",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Route::Direct => "/api/v1/tracks/42",
            Route::Proxied => "/api/v1/users/42",
            Route::Templated => "/api/v1/tracks/s7/42",
        }
    }
}

/// The default configuration without trace headers: metrics (HTTP, business, active users)
/// only, the foundation issue's capability.
const NO_TRACE_HEADERS_CONFIG: &str = r#"{"tracing": {"enabled": false}}"#;
/// The same job as Envoy's tracer: every request sampled, `traceparent` written, a span
/// exported per request (to nginx, which answers 200 to any POST). Metrics as always.
const TRACE_ALL_CONFIG: &str = r#"{"tracing": {"sampling_ratio": 1.0, "outgoing": ["traceparent"], "collector": {"cluster": "collector"}}}"#;

/// Envoy's native stats access logger emitting this filter's request counter and duration
/// histogram with the same labels, from access-log command operators.
const STATS_LOGGER: &str = r#"          access_log:
          - name: envoy.access_loggers.stats
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stats.v3.Config
              stat_prefix: native
              counters:
              - stat:
                  name: http_requests_total
                  tags:
                  - { name: method, value_format: "%REQ(:METHOD)%" }
                  - { name: endpoint, value_format: "%ROUTE_NAME%" }
                  - { name: status, value_format: "%RESPONSE_CODE%" }
                  - { name: service, value_format: "%UPSTREAM_CLUSTER%" }
                value_fixed: 1
              histograms:
              - stat:
                  name: http_request_duration_seconds
                  tags:
                  - { name: method, value_format: "%REQ(:METHOD)%" }
                  - { name: endpoint, value_format: "%ROUTE_NAME%" }
                  - { name: service, value_format: "%UPSTREAM_CLUSTER%" }
                unit: Milliseconds
                value_format: "%DURATION%"
"#;

struct Form {
    id: FormId,
    name: &'static str,
    routes: &'static [Route],
    /// Runs the WebSocket echo too.
    echoes: bool,
    /// Distinct `http_requests_total` series made before measuring.
    warm_series: usize,
}

const BOTH: &[Route] = &[Route::Direct, Route::Proxied];
const SCALE: &[Route] = &[Route::Templated];

fn forms() -> Vec<Form> {
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
    .filter(|f| f.id != FormId::CargoWasm || env_number("BENCH_CARGO_WASM", 0) == 1)
    .collect()
}

fn experiment_config() -> Option<String> {
    std::env::var("BENCH_PLUGIN_CONFIG").ok()
}

fn config(id: FormId, nginx_port: u16, chat_port: u16) -> (GatewayConfig, Ports) {
    let (config, ports) = GatewayConfig::shipped_on_fresh_ports("envoy/bench.yaml");
    let config = config
        .port(8080, nginx_port)
        .port(3001, chat_port)
        .port(4318, nginx_port);
    let without_filter = |config: GatewayConfig| {
        let start = config.text.find("          # >>> filter").unwrap();
        let end = config.text.find("          # <<< filter\n").unwrap();
        let mut text = config.text.clone();
        text.replace_range(start..end + "          # <<< filter\n".len(), "");
        GatewayConfig { text }
    };
    let config = match id {
        FormId::ThisFilter => config,
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
fn with_module(config: GatewayConfig, module: &str) -> GatewayConfig {
    let path = Path::new(REPO)
        .join("target/wasm32-wasip1/release")
        .join(module);
    assert!(path.exists(), "build {module} first (make bench does)");
    config.replace_once(
        &format!("filename: {}", wasm_path().display()),
        &format!("filename: {}", path.display()),
    )
}

struct Measurement {
    requests_per_second: f64,
    p50_us: f64,
    p99_us: f64,
    envoy_cpu_us_per_request: f64,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU time of a process, in microseconds.
fn cpu_time_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz = 100.0; // USER_HZ on Linux
    ticks * 1e6 / hz
}

/// Resident set size of a process, in bytes.
fn rss_bytes(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024.0
}

fn parse_duration_us(text: &str) -> f64 {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        panic!("unknown duration {text}")
    };
    number.parse::<f64>().unwrap() * scale
}

/// What a browser adds to wrk's bare request (BENCH_BROWSER_HEADERS=1).
const BROWSER_HEADERS: [&str; 9] = [
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Accept: application/json",
    "Accept-Language: en-US,en;q=0.5",
    "Accept-Encoding: gzip, deflate, br",
    "Referer: https://veza.example.com/library",
    "Cookie: theme=dark; session=4f1c2a",
    "X-Forwarded-Proto: https",
    "Sec-Fetch-Mode: cors",
    "Sec-Fetch-Site: same-origin",
];

/// wrk on the load CPU: one thread, `connections` connections, for `seconds`.
fn wrk_command(url: &str, seconds: u64, connections: u64) -> Command {
    let mut command = Command::new("taskset");
    command
        .args(["-c", &LOAD_CPU.to_string(), "wrk", "-t1", "-c"])
        .arg(connections.to_string())
        .arg(format!("-d{seconds}s"));
    if env_number("BENCH_BROWSER_HEADERS", 0) == 1 {
        for header in BROWSER_HEADERS {
            command.arg("-H").arg(header);
        }
    }
    command.arg(url);
    command
}

/// wrk's output: (requests, requests/s, p50 µs, p99 µs).
fn parse_wrk(text: &str) -> (f64, f64, f64, f64) {
    let mut requests = 0.0;
    let mut rps = 0.0;
    let (mut p50, mut p99) = (0.0, 0.0);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => rps = value.parse().unwrap(),
            ["50%", value] => p50 = parse_duration_us(value),
            ["99%", value] => p99 = parse_duration_us(value),
            [count, "requests", "in", ..] => requests = count.parse().unwrap(),
            _ => {}
        }
    }
    assert!(requests > 0.0, "no requests in:\n{text}");
    (requests, rps, p50, p99)
}

fn wrk(envoy: &Envoy, route: Route, seconds: u64, connections: u64) -> Measurement {
    let url = envoy.url(route.path());
    // Warm-up: connections, VM caches, metric definitions.
    let warm = wrk_command(&url, 3, connections).output().unwrap();
    assert!(warm.status.success());
    let cpu_before = cpu_time_us(envoy.pid());
    let output = wrk_command(&url, seconds, connections)
        .arg("--latency")
        .output()
        .unwrap();
    let cpu_after = cpu_time_us(envoy.pid());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "{} answered errors:\n{text}",
        route.name()
    );
    let (requests, rps, p50, p99) = parse_wrk(&text);
    Measurement {
        requests_per_second: rps,
        p50_us: p50,
        p99_us: p99,
        envoy_cpu_us_per_request: (cpu_after - cpu_before) / requests,
    }
}

/// p99 latency in microseconds at a fixed request rate (oha, with latency correction, so a
/// stall counts against every request it delayed), and the rate oha achieved: a gateway that
/// cannot keep up falls behind the offered rate.
fn fixed_rate_p99_us(
    oha: &Path,
    envoy: &Envoy,
    route: Route,
    rate: f64,
    seconds: u64,
) -> (f64, f64) {
    let url = envoy.url(route.path());
    let run = |seconds: u64| {
        let output = Command::new("taskset")
            .args(["-c", &LOAD_CPU.to_string()])
            .arg(oha)
            .args([
                "--no-tui",
                "--output-format",
                "json",
                "--latency-correction",
            ])
            .args(["-c", "32", "-q"])
            .arg(format!("{rate:.0}"))
            .arg("-z")
            .arg(format!("{seconds}s"))
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "oha failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let statuses = &report["statusCodeDistribution"];
        assert!(
            statuses
                .as_object()
                .unwrap()
                .keys()
                .all(|code| code == "200"),
            "{} answered errors: {statuses}",
            route.name()
        );
        let achieved = report["summary"]["requestsPerSec"].as_f64().unwrap();
        let p99 = report["latencyPercentiles"]["p99"].as_f64().unwrap() * 1e6;
        (p99, achieved)
    };
    run(2);
    run(seconds)
}

/// Echo round trips over a few WebSocket connections: (messages per second, Envoy CPU per
/// message in microseconds). Each message crosses Envoy twice (there and back).
fn websocket_echo(envoy: &Envoy, seconds: u64) -> (f64, f64) {
    let url = envoy.url("/ws").replace("http", "ws");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu_before = cpu_time_us(envoy.pid());
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WEBSOCKET_CONNECTIONS)
            .map(|_| {
                let url = &url;
                scope.spawn(move || {
                    let (mut socket, _) = tungstenite::connect(url.as_str()).unwrap();
                    let _connected = socket.read().unwrap();
                    let payload = vec![0x2a_u8; 32];
                    let mut count = 0u64;
                    while Instant::now() < deadline {
                        socket
                            .send(tungstenite::Message::binary(payload.clone()))
                            .unwrap();
                        let echo = socket.read().unwrap();
                        assert!(echo.is_binary());
                        count += 1;
                    }
                    let _ = socket.close(None);
                    count
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let cpu_after = cpu_time_us(envoy.pid());
    let messages: u64 = counts.iter().sum();
    (
        messages as f64 / seconds as f64,
        (cpu_after - cpu_before) / messages.max(1) as f64,
    )
}

/// Makes `count` distinct `http_requests_total` series with the scale route table: templates
/// `s<i>`, two areas (answered 200 and 404), five methods.
fn warm_series(envoy: &Envoy, count: usize) {
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    let mut made = 0;
    'outer: for area in ["tracks", "gone"] {
        for method in methods {
            for template in 0..1000 {
                if made == count {
                    break 'outer;
                }
                let url = envoy.url(&format!("/api/v1/{area}/s{template}/1"));
                http(method, &url, &[], "").unwrap();
                made += 1;
            }
        }
    }
    assert_eq!(made, count, "the scale table makes at most 10,000 series");
    poll("the warm-up series", Duration::from_secs(30), || {
        let series = envoy.samples("http_requests_total").len();
        (series >= count).then_some(())
    });
}

/// The filter's own gauge of its VMs' linear memory (sum over workers; one worker here).
fn vm_memory_bytes(envoy: &Envoy) -> f64 {
    envoy
        .samples("veza_observability_vm_memory_bytes")
        .first()
        .map(|s| s.value)
        .expect("the filter publishes veza_observability_vm_memory_bytes")
}

struct MemoryRun {
    requests: u64,
    seconds: f64,
    /// (requests so far, VM memory bytes, Envoy RSS bytes)
    samples: Vec<(u64, f64, f64)>,
}

/// `total` requests over 10,000 distinct paths through this filter, sampling the VM memory
/// gauge and Envoy's RSS after a warm-up and then every 30 s.
fn memory_run(
    nginx_port: u16,
    chat_port: u16,
    total: u64,
    connections: u64,
    dir: &Path,
) -> MemoryRun {
    let (config, ports) = config(FormId::ThisFilter, nginx_port, chat_port);
    let envoy = Envoy::start_pinned(&config, ports, 1, Some(ENVOY_CPU));
    let script = dir.join("paths.lua");
    std::fs::write(
        &script,
        format!(
            "local i = 0\nrequest = function()\n  i = (i + 1) % {MEMORY_PATHS}\n  \
             return wrk.format(nil, \"/api/v1/tracks/\" .. i .. \"?page=\" .. i)\nend\n"
        ),
    )
    .unwrap();
    let url = envoy.url("/");
    let chunk = |seconds: u64| -> u64 {
        let output = wrk_command(&url, seconds, connections)
            .arg("-s")
            .arg(&script)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && !text.contains("Non-2xx"),
            "{text}"
        );
        parse_wrk(&text).0 as u64
    };
    // The gauge is at most one flush (1 s) older than the chunk of load just ended: nothing
    // for a 30 s chunk, and a leak would show over the run either way.
    let sample = |envoy: &Envoy, done: u64| (done, vm_memory_bytes(envoy), rss_bytes(envoy.pid()));
    let mut done = 0;
    while done < MEMORY_WARMUP_REQUESTS {
        done += chunk(5);
    }
    let mut samples = vec![sample(&envoy, done)];
    let started = Instant::now();
    let mut measured = 0;
    while measured < total {
        let requests = chunk(30);
        measured += requests;
        done += requests;
        samples.push(sample(&envoy, done));
        eprintln!(
            "memory run: {measured} requests, VM memory {:.0} KiB, Envoy RSS {:.1} MiB",
            samples.last().unwrap().1 / 1024.0,
            samples.last().unwrap().2 / 1048576.0
        );
    }
    let series = envoy.samples("http_requests_total").len();
    assert!(
        series <= 4,
        "10,000 paths made {series} series (route templates should fold them)"
    );
    MemoryRun {
        requests: measured,
        seconds: started.elapsed().as_secs_f64(),
        samples,
    }
}

struct Nginx {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start() -> Nginx {
        let dir = scratch_dir("nginx");
        let port = free_port();
        let config = format!(
            "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
             fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n\
             keepalive_requests 1000000;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\"; }} }}\n}}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let child = Command::new("taskset")
            .args(["-c", &LOAD_CPU.to_string(), "nginx", "-c"])
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian package nginx) must be installed: run make bench");
        poll("nginx to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        Nginx { child, port, dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The medians of each half of the rounds' pairs.
fn median_pair(runs: &[(f64, f64)]) -> (f64, f64) {
    (
        median(runs.iter().map(|r| r.0).collect()),
        median(runs.iter().map(|r| r.1).collect()),
    )
}

/// Per form and route: medians over rounds.
#[derive(Clone, Copy)]
struct Summary {
    rps: f64,
    p50: f64,
    p99: f64,
    cpu: f64,
}

struct Verdicts(Vec<(bool, String, String, String)>);

impl Verdicts {
    fn add(&mut self, pass: bool, goal: &str, measured: String, target: String) {
        self.0.push((pass, goal.to_owned(), measured, target));
    }

    fn print(&self) {
        println!("\n| goal | measured | target | verdict |");
        println!("|---|---|---|---|");
        for (pass, goal, measured, target) in &self.0 {
            let verdict = if *pass { "PASS" } else { "FAIL" };
            println!("| {goal} | {measured} | {target} | {verdict} |");
        }
    }
}

fn main() {
    let seconds = env_number("BENCH_SECONDS", 10);
    let rounds = env_number("BENCH_ROUNDS", 5) as usize;
    let connections = env_number("BENCH_CONNECTIONS", 32);
    let memory_requests = env_number("BENCH_MEMORY_REQUESTS", 10_000_000);
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY").ok().map(|v| {
        let separator = if v.contains('|') { '|' } else { ',' };
        v.split(separator).map(|s| s.trim().to_owned()).collect()
    });
    let forms: Vec<Form> = forms()
        .into_iter()
        .filter(|f| only.as_ref().is_none_or(|o| o.iter().any(|n| n == f.name)))
        .collect();
    let oha = Path::new(REPO).join("build/tools/bin/oha");
    assert!(oha.exists(), "oha is missing: run make bench");
    // This process (the WebSocket clients, the chat stand-in) shares the load CPU with wrk.
    let pinned = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &LOAD_CPU.to_string(),
            &std::process::id().to_string(),
        ])
        .output()
        .unwrap();
    assert!(pinned.status.success());
    let standins = veza_standins::spawn(Listeners::ephemeral().unwrap(), 0).unwrap();
    let nginx = Nginx::start();
    let chat_port = standins.chat.port();

    let mut runs: HashMap<(FormId, Route), Vec<Measurement>> = HashMap::new();
    let mut echoes: HashMap<FormId, Vec<(f64, f64)>> = HashMap::new();
    for round in 1..=rounds {
        // Every other round runs the forms in reverse: a drift within a round (the shared
        // machine warming up, a neighbour starting) then hits every form alike.
        let order: Vec<&Form> = if round % 2 == 1 {
            forms.iter().collect()
        } else {
            forms.iter().rev().collect()
        };
        for form in order {
            let (config, ports) = config(form.id, nginx.port, chat_port);
            let envoy = Envoy::start_pinned(&config, ports, 1, Some(ENVOY_CPU));
            if form.warm_series > 0 {
                warm_series(&envoy, form.warm_series);
            }
            for route in form.routes {
                let m = wrk(&envoy, *route, seconds, connections);
                eprintln!(
                    "round {round}/{rounds} {:<32} {:<20} {:>7.0} req/s  Envoy CPU {:>5.1} us/req",
                    form.name,
                    route.name(),
                    m.requests_per_second,
                    m.envoy_cpu_us_per_request
                );
                runs.entry((form.id, *route)).or_default().push(m);
            }
            // The native peers really do their job (a misconfigured one would look cheap).
            let emitted = match form.id {
                FormId::ThisFilterSpans => Some("trace_spans_exported_total"),
                FormId::EnvoyTracer => Some("envoy_tracing_opentelemetry_spans_sent"),
                FormId::StatsLogger => Some("envoy_native_http_requests_total"),
                _ => None,
            };
            if let Some(metric) = emitted {
                let text = envoy.prometheus_text();
                let sent: f64 = text
                    .lines()
                    .filter(|l| l.starts_with(metric))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                assert!(sent > 0.0, "{} emitted no {metric}", form.name);
            }
            if form.echoes {
                let (rate, cpu) = websocket_echo(&envoy, seconds);
                eprintln!(
                    "round {round}/{rounds} {:<32} {:<20} {:>7.0} msg/s  Envoy CPU {:>5.1} us/msg",
                    form.name, "websocket echo", rate, cpu
                );
                echoes.entry(form.id).or_default().push((rate, cpu));
            }
        }
    }
    let summary = |id: FormId, route: Route| -> Option<Summary> {
        let ms = runs.get(&(id, route))?;
        Some(Summary {
            rps: median(ms.iter().map(|m| m.requests_per_second).collect()),
            p50: median(ms.iter().map(|m| m.p50_us).collect()),
            p99: median(ms.iter().map(|m| m.p99_us).collect()),
            cpu: median(ms.iter().map(|m| m.envoy_cpu_us_per_request).collect()),
        })
    };

    println!(
        "\nEnvoy 1.40, 1 worker on CPU {ENVOY_CPU}; wrk -t1 -c{connections} -d{seconds}s on CPU {LOAD_CPU}; median of {rounds} rounds\n"
    );
    println!(
        "| route | form | requests/s | vs no filter | p50 | p99 | Envoy CPU per request | added vs no filter |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for route in [Route::Direct, Route::Proxied, Route::Templated] {
        let base = summary(
            FormId::NoFilter,
            if route == Route::Templated {
                Route::Direct
            } else {
                route
            },
        );
        for form in forms.iter().filter(|f| f.routes.contains(&route)) {
            let s = summary(form.id, route).unwrap();
            let (ratio, added) = match base {
                Some(b) => (
                    format!("{:.2}", s.rps / b.rps),
                    format!("{:+.1} µs", s.cpu - b.cpu),
                ),
                None => ("".to_owned(), "".to_owned()),
            };
            println!(
                "| {} | {} | {:.0} | {ratio} | {:.0} µs | {:.0} µs | {:.1} µs | {added} |",
                route.name(),
                form.name,
                s.rps,
                s.p50,
                s.p99,
                s.cpu,
            );
        }
    }

    let mut verdicts = Verdicts(Vec::new());
    for route in [Route::Direct, Route::Proxied] {
        let (Some(none), Some(empty), Some(this)) = (
            summary(FormId::NoFilter, route),
            summary(FormId::EmptyWasm, route),
            summary(FormId::ThisFilter, route),
        ) else {
            continue;
        };
        let empty_added = empty.cpu - none.cpu;
        let this_added = this.cpu - none.cpu;
        verdicts.add(
            this_added <= ADDED_CPU_VS_EMPTY_TARGET * empty_added,
            &format!(
                "{}: default filter's added CPU vs the empty wasm filter's",
                route.name()
            ),
            format!(
                "{this_added:.1} µs vs {empty_added:.1} µs: {:.2} ×",
                this_added / empty_added
            ),
            format!("≤ {ADDED_CPU_VS_EMPTY_TARGET} ×"),
        );
        if route == Route::Direct {
            let ratio = this.rps / none.rps;
            verdicts.add(
                ratio >= DIRECT_THROUGHPUT_TARGET,
                "direct response: default filter's throughput vs no filter",
                format!("{ratio:.3}"),
                format!("≥ {DIRECT_THROUGHPUT_TARGET}"),
            );
            if let Some(metrics) = summary(FormId::NoTraceHeaders, route) {
                let ratio = metrics.rps / none.rps;
                verdicts.add(
                    ratio >= DIRECT_THROUGHPUT_TARGET,
                    "direct response: filter without trace headers (metrics only) throughput vs no filter",
                    format!("{ratio:.3}"),
                    format!("≥ {DIRECT_THROUGHPUT_TARGET}"),
                );
            }
        }
        if let Some(logger) = summary(FormId::StatsLogger, route) {
            let own = this.cpu - empty.cpu;
            let native = logger.cpu - none.cpu;
            verdicts.add(
                own <= native,
                &format!(
                    "{}: filter's own work (above the empty filter) vs Envoy's stats access logger (above no filter)",
                    route.name()
                ),
                format!("{own:.1} µs vs {native:.1} µs"),
                "≤".to_owned(),
            );
        }
        if let (Some(spans), Some(tracer)) = (
            summary(FormId::ThisFilterSpans, route),
            summary(FormId::EnvoyTracer, route),
        ) {
            let ours = spans.cpu - none.cpu;
            let theirs = tracer.cpu - none.cpu;
            verdicts.add(
                ours < theirs,
                &format!(
                    "{}: filter with 100% spans exported vs Envoy's OpenTelemetry tracer, added CPU",
                    route.name()
                ),
                format!("{ours:.1} µs vs {theirs:.1} µs"),
                "<".to_owned(),
            );
        }
    }
    let none_direct = summary(FormId::NoFilter, Route::Direct);
    let scale_cost = |id: FormId| {
        let s = summary(id, Route::Templated)?;
        Some(s.cpu - none_direct?.cpu)
    };
    for (goal, small, large) in [
        (
            "1,000 route templates vs 10: filter's added CPU",
            FormId::Templates10,
            FormId::Templates1000,
        ),
        (
            "10,000 live series vs 10: filter's added CPU",
            FormId::Templates1000,
            FormId::Series10000,
        ),
    ] {
        if let (Some(small), Some(large)) = (scale_cost(small), scale_cost(large)) {
            verdicts.add(
                large <= small * (1.0 + SCALE_TOLERANCE),
                goal,
                format!(
                    "{large:.1} µs vs {small:.1} µs: {:+.1}%",
                    (large / small - 1.0) * 100.0
                ),
                format!("≤ +{:.0}%", SCALE_TOLERANCE * 100.0),
            );
        }
    }

    // Fixed-rate latency through nginx at 70% of the no-filter maximum.
    let latency_forms = [FormId::NoFilter, FormId::EmptyWasm, FormId::ThisFilter];
    let mut p99s: HashMap<FormId, Vec<(f64, f64)>> = HashMap::new();
    let rate = summary(FormId::NoFilter, Route::Proxied).map(|s| s.rps * FIXED_RATE_SHARE);
    if let Some(rate) = rate {
        for round in 1..=rounds {
            for form in forms.iter().filter(|f| latency_forms.contains(&f.id)) {
                let (config, ports) = config(form.id, nginx.port, chat_port);
                let envoy = Envoy::start_pinned(&config, ports, 1, Some(ENVOY_CPU));
                let (p99, achieved) =
                    fixed_rate_p99_us(&oha, &envoy, Route::Proxied, rate, seconds);
                eprintln!(
                    "round {round}/{rounds} {:<32} {:.0} req/s offered, {achieved:.0} sent: p99 {p99:.0} us",
                    form.name, rate
                );
                p99s.entry(form.id).or_default().push((p99, achieved));
            }
        }
        println!(
            "\nFixed rate through nginx: {rate:.0} requests/s offered ({:.0}% of no filter's maximum), oha -c32 with latency correction, median of {rounds} rounds\n",
            FIXED_RATE_SHARE * 100.0
        );
        println!("| form | requests/s achieved | p99 | added vs no filter |");
        println!("|---|---|---|---|");
        let p99_of = |id: FormId| p99s.get(&id).map(|runs| median_pair(runs));
        let base = p99_of(FormId::NoFilter).map(|(p99, _)| p99);
        for form in forms.iter().filter(|f| p99s.contains_key(&f.id)) {
            let (p99, achieved) = p99_of(form.id).unwrap();
            let added = base
                .map(|b| format!("{:+.0} µs", p99 - b))
                .unwrap_or_default();
            println!("| {} | {achieved:.0} | {p99:.0} µs | {added} |", form.name);
        }
        if let (Some(base), Some((this, achieved))) = (base, p99_of(FormId::ThisFilter)) {
            let added = this - base;
            verdicts.add(
                added <= P99_ADDED_TARGET_US && achieved >= rate * 0.98,
                &format!(
                    "p99 latency added at {:.0}% of the no-filter maximum rate, proxied",
                    FIXED_RATE_SHARE * 100.0
                ),
                format!("{added:+.0} µs ({achieved:.0} of {rate:.0} requests/s sent)"),
                format!("≤ {P99_ADDED_TARGET_US:.0} µs, at the offered rate"),
            );
        }
    }

    if !echoes.is_empty() {
        println!(
            "\nWebSocket echo, {WEBSOCKET_CONNECTIONS} connections, 32-byte binary messages, median of {rounds} rounds\n"
        );
        println!("| form | messages/s (round trips) | vs no filter | Envoy CPU per message |");
        println!("|---|---|---|---|");
        let echo = |id: FormId| echoes.get(&id).map(|runs| median_pair(runs));
        let base = echo(FormId::NoFilter);
        for form in forms.iter().filter(|f| echoes.contains_key(&f.id)) {
            let (rate, cpu) = echo(form.id).unwrap();
            let ratio = base
                .map(|b| format!("{:.2}", rate / b.0))
                .unwrap_or_default();
            println!("| {} | {rate:.0} | {ratio} | {cpu:.1} µs |", form.name);
        }
        if let (Some(base), Some(this)) = (base, echo(FormId::ThisFilter)) {
            let ratio = this.0 / base.0;
            verdicts.add(
                ratio >= WEBSOCKET_TARGET,
                "WebSocket echo rate vs no filter",
                format!("{ratio:.3}"),
                format!("≥ {WEBSOCKET_TARGET}"),
            );
        }
    }

    if memory_requests > 0 && forms.iter().any(|f| f.id == FormId::ThisFilter) {
        let dir = scratch_dir("memory");
        let run = memory_run(nginx.port, chat_port, memory_requests, connections, &dir);
        let (_, vm_start, rss_start) = run.samples[0];
        let (_, vm_end, rss_end) = *run.samples.last().unwrap();
        println!(
            "\nMemory: {} requests over {MEMORY_PATHS} distinct paths in {:.0} s, after {MEMORY_WARMUP_REQUESTS} warm-up requests\n",
            run.requests, run.seconds
        );
        println!("| requests | VM linear memory | Envoy RSS |");
        println!("|---|---|---|");
        for (requests, vm, rss) in &run.samples {
            println!(
                "| {requests} | {:.0} KiB | {:.1} MiB |",
                vm / 1024.0,
                rss / 1048576.0
            );
        }
        let vm_drift = vm_end / vm_start - 1.0;
        let rss_drift = rss_end / rss_start - 1.0;
        verdicts.add(
            vm_drift.abs() < MEMORY_DRIFT_TARGET,
            "VM memory drift over the memory run (one worker)",
            format!(
                "{:.0} → {:.0} KiB: {:+.2}%",
                vm_start / 1024.0,
                vm_end / 1024.0,
                vm_drift * 100.0
            ),
            format!("< {:.0}%", MEMORY_DRIFT_TARGET * 100.0),
        );
        verdicts.add(
            rss_drift.abs() < MEMORY_DRIFT_TARGET,
            "Envoy RSS drift over the memory run",
            format!(
                "{:.1} → {:.1} MiB: {:+.2}%",
                rss_start / 1048576.0,
                rss_end / 1048576.0,
                rss_drift * 100.0
            ),
            format!("< {:.0}%", MEMORY_DRIFT_TARGET * 100.0),
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    let size = std::fs::metadata(wasm_path()).unwrap().len();
    verdicts.add(
        size <= WASM_SIZE_TARGET,
        "`.wasm` size",
        format!("{size} bytes ({:.0} KiB)", size as f64 / 1024.0),
        format!("≤ {} KiB", WASM_SIZE_TARGET / 1024),
    );
    verdicts.print();
}
