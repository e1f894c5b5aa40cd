//! Per-request HTTP metrics, end to end: the real Envoy with the shipped gateway config and
//! the real `.wasm`, Veza stand-ins behind it, and exact values read from /stats/prometheus.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::time::Duration;

use veza_test_harness::*;

type Series = BTreeMap<BTreeMap<String, String>, f64>;

fn series(samples: Vec<Sample>) -> Series {
    samples.into_iter().map(|s| (s.labels, s.value)).collect()
}

fn requests(method: &str, endpoint: &str, status: &str, service: &str) -> BTreeMap<String, String> {
    labels(&[
        ("method", method),
        ("endpoint", endpoint),
        ("status", status),
        ("service", service),
    ])
}

/// Waits until the filter has flushed `total` requests, then returns every series.
fn requests_when_total(envoy: &Envoy, total: f64) -> Series {
    poll(
        "the request counters to reach their total",
        Duration::from_secs(15),
        || {
            let samples = envoy.samples("http_requests_total");
            let sum: f64 = samples.iter().map(|s| s.value).sum();
            (sum >= total).then_some(samples)
        },
    )
    .pipe(series)
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

#[test]
fn a_known_request_mix_is_counted_exactly() {
    let standins = veza_standins::spawn(Listeners::ephemeral().unwrap(), 0).unwrap();
    // The stream server is down: its cluster points at a port nobody listens on.
    let dead_port = free_port();
    let (config, ports) =
        GatewayConfig::gateway(standins.backend.port(), standins.chat.port(), dead_port);
    let envoy = Envoy::start(&config, ports, 2);
    let get = |path: &str, headers: &[(&str, &str)]| {
        http("GET", &envoy.url(path), headers, "").unwrap().0
    };

    for id in 1..=3 {
        assert_eq!(
            get(&format!("/api/v1/tracks/{id}?token=secret-{id}"), &[]),
            200
        );
    }
    assert_eq!(get("/api/v1/tracks/abc", &[]), 404);
    assert_eq!(get("/api/v1/tracks/7", &[("x-standin-status", "500")]), 500);
    assert_eq!(
        get("/api/v1/tracks/8/", &[("x-standin-status", "500")]),
        500
    );
    assert_eq!(
        http(
            "POST",
            &envoy.url("/api/v1/auth/login"),
            &[],
            r#"{"password":"wrong"}"#
        )
        .unwrap()
        .0,
        401
    );
    assert_eq!(
        http(
            "POST",
            &envoy.url("/api/v1/auth/register"),
            &[],
            r#"{"email":"a@b.c"}"#
        )
        .unwrap()
        .0,
        200
    );
    assert_eq!(
        http("DELETE", &envoy.url("/api/v1/shared-resources/12"), &[], "")
            .unwrap()
            .0,
        404
    );
    assert_eq!(
        http("PROPFIND", &envoy.url("/api/v1/tracks/1"), &[], "")
            .unwrap()
            .0,
        405
    );
    assert_eq!(get("/api/v2/not-a-route?x=1", &[]), 404);
    assert_eq!(get("/health", &[]), 200);
    assert_eq!(get("/api/messages/stats", &[]), 200);
    // No Envoy route: Envoy answers 404 itself, before any upstream.
    assert_eq!(get("/favicon.ico", &[]), 404);
    // The stream server is down: Envoy answers 503.
    assert_eq!(
        get("/stream/song.mp3?expires=99999999999&sig=abc", &[]),
        503
    );
    // The client hangs up before the answer: Envoy records no response code.
    send_and_hang_up(
        envoy.ports.listener,
        "GET /api/v1/tracks/9 HTTP/1.1\r\nhost: veza\r\nx-standin-delay-ms: 3000\r\n\r\n",
    );

    let got = requests_when_total(&envoy, 16.0);
    let expected: Series = [
        (
            requests("GET", "/api/v1/tracks/:id", "200", "backend-api"),
            3.0,
        ),
        (
            requests("GET", "/api/v1/tracks/:id", "404", "backend-api"),
            1.0,
        ),
        (
            requests("GET", "/api/v1/tracks/:id", "500", "backend-api"),
            2.0,
        ),
        (
            requests("GET", "/api/v1/tracks/:id", "0", "backend-api"),
            1.0,
        ),
        (
            requests("POST", "/api/v1/auth/login", "401", "backend-api"),
            1.0,
        ),
        (
            requests("POST", "/api/v1/auth/register", "200", "backend-api"),
            1.0,
        ),
        (
            requests(
                "DELETE",
                "/api/v1/shared-resources/:id",
                "404",
                "backend-api",
            ),
            1.0,
        ),
        (
            requests("OTHER", "/api/v1/tracks/:id", "405", "backend-api"),
            1.0,
        ),
        (requests("GET", "other", "404", "backend-api"), 1.0),
        (requests("GET", "/health", "200", "chat"), 1.0),
        (requests("GET", "/api/messages/stats", "200", "chat"), 1.0),
        (requests("GET", "other", "404", "other"), 1.0),
        (requests("GET", "/stream/:filename", "503", "stream"), 1.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, expected);

    let durations = series(envoy.samples("http_request_duration_seconds_count"));
    let count = |method: &str, endpoint: &str, service: &str| {
        durations[&labels(&[
            ("method", method),
            ("endpoint", endpoint),
            ("service", service),
        ])]
    };
    // 3 × 200, 404, 2 × 500 and the hang-up: every exchange is timed.
    assert_eq!(count("GET", "/api/v1/tracks/:id", "backend-api"), 7.0);
    assert_eq!(count("GET", "/stream/:filename", "stream"), 1.0);
    assert_eq!(
        durations.len(),
        expected.len() - 3,
        "one histogram per method/endpoint/service"
    );

    let text = envoy.prometheus_text();
    assert!(
        !text.contains("secret-"),
        "query strings never reach Prometheus"
    );
    assert!(!text.contains("sig=abc"));
    let buckets = envoy.samples("http_request_duration_seconds_bucket");
    let les: std::collections::BTreeSet<&str> = buckets
        .iter()
        .filter(|s| s.label("endpoint") == "/health")
        .map(|s| s.label("le"))
        .collect();
    let seed_buckets = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    assert_eq!(les, seed_buckets.into_iter().collect());
    assert_eq!(
        series(envoy.samples("veza_observability_errors_total"))
            .values()
            .sum::<f64>(),
        0.0,
        "no hostcall failed"
    );
    match Build::selected() {
        // The VM's linear memory, whole 64 KiB pages: more than the module's static data, far
        // less than a leak would make of this traffic.
        Build::Wasm => {
            let memory = envoy.samples("veza_observability_vm_memory_bytes");
            assert_eq!(memory.len(), 1, "one unlabelled gauge");
            let bytes = memory[0].value as u64;
            assert_eq!(bytes % 65_536, 0, "{bytes} is not whole wasm pages");
            assert!(
                (1 << 20..64 << 20).contains(&bytes),
                "{bytes} bytes of VM memory"
            );
        }
        // No VM: the module allocates from Envoy's allocator, which Envoy reports itself.
        Build::Native => {
            assert!(envoy
                .samples("veza_observability_vm_memory_bytes")
                .is_empty());
            assert!(!envoy.samples("envoy_server_memory_allocated").is_empty());
        }
    }
}

#[test]
fn upgrades_are_counted_but_stay_out_of_the_duration_histogram() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 1);
    let handshake = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nhost: veza\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    let answer = raw_exchange_until(envoy.ports.listener, &handshake("/ws"), "\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let refused = raw_exchange(envoy.ports.listener, &handshake("/ws/chat?token=invalid"));
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    let got = requests_when_total(&envoy, 2.0);
    assert_eq!(got[&requests("GET", "/ws", "101", "chat")], 1.0);
    assert_eq!(got[&requests("GET", "/ws/chat", "401", "backend-api")], 1.0);
    let durations = series(envoy.samples("http_request_duration_seconds_count"));
    assert_eq!(
        durations.get(&labels(&[
            ("method", "GET"),
            ("endpoint", "/ws"),
            ("service", "chat")
        ])),
        Some(&0.0),
        "the upgraded request's histogram exists but holds no observation"
    );
}

/// Reads until `marker` arrives (the WebSocket stays open, so read_to_string would block).
fn raw_exchange_until(port: u16, request: &str, marker: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains(marker) {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "connection closed before {marker:?}");
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn ten_thousand_raw_paths_leave_the_configured_number_of_series() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let config =
        config.plugin_configuration(r#"{"max_series": 20, "metrics_flush_interval_ms": 200}"#);
    let envoy = Envoy::start(&config, ports, 2);
    // One keep-alive connection, so label sets arrive one at a time.
    for i in 0..10_000u32 {
        let status = (200 + i % 100).to_string();
        let (got, _) = http(
            "GET",
            &envoy.url(&format!("/api/v1/tracks/{i}?page={i}")),
            &[("x-standin-status", &status)],
            "",
        )
        .unwrap();
        assert_eq!(u32::from(got), 200 + i % 100);
    }
    let got = requests_when_total(&envoy, 10_000.0);
    assert_eq!(
        got.len(),
        20 + 1,
        "20 admitted label sets and one overflow series: {got:?}"
    );
    assert_eq!(got.values().sum::<f64>(), 10_000.0);
    // Statuses 200..=219 were admitted first; every later one went to the overflow series.
    for status in 200..220 {
        assert_eq!(
            got[&requests(
                "GET",
                "/api/v1/tracks/:id",
                &status.to_string(),
                "backend-api"
            )],
            100.0
        );
    }
    assert_eq!(
        got[&requests("OTHER", "other", "2xx", "backend-api")],
        8_000.0
    );
    let histograms = envoy.samples("http_request_duration_seconds_count");
    assert_eq!(histograms.len(), 2);
}
