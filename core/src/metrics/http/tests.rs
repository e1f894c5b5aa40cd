use super::*;
use crate::config;
use crate::host::memory::MemoryHost;

/// A record of `method` and `path`, routed by `settings`, with nothing else read: override
/// what a test needs.
fn record(settings: &Settings, method: &str, path: &str) -> RequestRecord<'static> {
    let method = Method::parse(method.as_bytes());
    RequestRecord {
        method,
        route_name: None,
        route: settings.routes.resolve(method, path.as_bytes()),
        status: None,
        duration_nanos: None,
    }
}

struct Fixture {
    host: MemoryHost,
    registry: Registry,
    metrics: HttpMetrics,
    settings: Settings,
}

impl Fixture {
    fn new(config_json: &str) -> Fixture {
        let mut host = MemoryHost::default();
        crate::shared::prepare(&mut host).unwrap();
        let registry = Registry::new(&mut host);
        let metrics = HttpMetrics::new();
        let settings = config::load(Some(config_json.as_bytes())).unwrap();
        Fixture {
            host,
            registry,
            metrics,
            settings,
        }
    }

    /// A second worker VM in the same Envoy: its own registry, the same host store.
    fn second_vm(&mut self) -> (Registry, HttpMetrics) {
        (Registry::new(&mut self.host), HttpMetrics::new())
    }

    fn request(&mut self, method: &str, path: &str, status: u64, millis: u64) {
        self.metrics.record(
            &self.settings,
            &mut self.registry,
            &mut self.host,
            &RequestRecord {
                status: Some(status),
                duration_nanos: Some(millis * 1_000_000),
                ..record(&self.settings, method, path)
            },
        );
        self.registry.flush(&mut self.host);
    }

    fn requests(&self, method: &str, endpoint: &str, status: &str, service: &str) -> Option<u64> {
        self.host.counter(&format!(
            r#"http_requests_total{{method="{method}",endpoint="{endpoint}",status="{status}",service="{service}"}}"#
        ))
    }

    fn duration(&self, method: &str, endpoint: &str, service: &str, suffix: &str) -> Option<u64> {
        self.host.counter(&format!(
            r#"http_request_duration_seconds{suffix}{{method="{method}",endpoint="{endpoint}",service="{service}"}}"#
        ))
    }

    fn request_series(&self) -> usize {
        self.host
            .counters()
            .iter()
            .filter(|(name, _)| name.starts_with("http_requests_total{"))
            .count()
    }
}

#[test]
fn labels_follow_the_seed() {
    let mut f = Fixture::new("{}");
    f.request("GET", "/api/v1/tracks/1?token=abc", 200, 3);
    f.request("GET", "/api/v1/tracks/2", 200, 30);
    f.request("DELETE", "/api/v1/tracks/2", 404, 1);
    f.request("PROPFIND", "/api/v1/tracks/2", 405, 1);
    f.request("GET", "/nowhere/at/all", 404, 1);
    f.request("GET", "/stream/a.mp3?expires=1&sig=s", 206, 1);
    f.request("GET", "/api/v1/tracks/3", 503, 1);
    assert_eq!(
        f.requests("GET", "/api/v1/tracks/:id", "200", "backend-api"),
        Some(2)
    );
    assert_eq!(
        f.requests("DELETE", "/api/v1/tracks/:id", "404", "backend-api"),
        Some(1)
    );
    assert_eq!(
        f.requests("OTHER", "/api/v1/tracks/:id", "405", "backend-api"),
        Some(1)
    );
    assert_eq!(f.requests("GET", "other", "404", "other"), Some(1));
    assert_eq!(
        f.requests("GET", "/stream/:filename", "206", "stream"),
        Some(1)
    );
    assert_eq!(
        f.requests("GET", "/api/v1/tracks/:id", "503", "backend-api"),
        Some(1)
    );
    assert_eq!(
        f.duration("GET", "/api/v1/tracks/:id", "backend-api", "_count"),
        Some(3)
    );
    assert_eq!(
        f.host.counter(r#"http_request_duration_seconds_bucket{method="GET",endpoint="/api/v1/tracks/:id",service="backend-api",le="0.005"}"#),
        Some(2)
    );
    assert!(
        f.host
            .counters()
            .iter()
            .all(|(name, _)| !name.contains("token") && !name.contains("sig")),
        "query strings never reach a name"
    );
}

#[test]
fn upgrades_are_counted_but_not_timed() {
    let mut f = Fixture::new("{}");
    f.request("GET", "/ws", 101, 60_000);
    f.request("GET", "/ws", 401, 2);
    assert_eq!(f.requests("GET", "/ws", "101", "chat"), Some(1));
    assert_eq!(f.duration("GET", "/ws", "chat", "_count"), Some(1));
    assert_eq!(f.duration("GET", "/ws", "chat", "_sum"), Some(0));
}

#[test]
fn no_response_and_missing_duration() {
    let mut f = Fixture::new("{}");
    f.metrics.record(
        &f.settings,
        &mut f.registry,
        &mut f.host,
        &record(&f.settings, "GET", "/api/v1/tracks"),
    );
    f.registry.flush(&mut f.host);
    assert_eq!(
        f.requests("GET", "/api/v1/tracks", "0", "backend-api"),
        Some(1)
    );
    assert_eq!(
        f.duration("GET", "/api/v1/tracks", "backend-api", "_count"),
        Some(0)
    );
}

#[test]
fn the_cap_is_gateway_wide_and_overflow_keeps_totals() {
    let mut f = Fixture::new(r#"{"max_series": 3}"#);
    for status in [200, 201, 202] {
        f.request("GET", "/api/v1/tracks/1", status, 1);
    }
    // A second worker sees an admitted set (not counted again) and then hits the cap.
    let (mut registry, mut metrics) = f.second_vm();
    for status in [200, 500, 501, 200] {
        metrics.record(
            &f.settings,
            &mut registry,
            &mut f.host,
            &RequestRecord {
                status: Some(status),
                duration_nanos: Some(1),
                ..record(&f.settings, "POST", "/api/v1/tracks")
            },
        );
        metrics.record(
            &f.settings,
            &mut registry,
            &mut f.host,
            &RequestRecord {
                status: Some(200),
                duration_nanos: Some(1),
                ..record(&f.settings, "GET", "/api/v1/tracks/9")
            },
        );
    }
    registry.flush(&mut f.host);
    assert_eq!(
        f.requests("GET", "/api/v1/tracks/:id", "200", "backend-api"),
        Some(5)
    );
    assert_eq!(
        f.requests("POST", "/api/v1/tracks", "200", "backend-api"),
        None
    );
    assert_eq!(f.requests("OTHER", "other", "2xx", "backend-api"), Some(2));
    assert_eq!(f.requests("OTHER", "other", "5xx", "backend-api"), Some(2));
    assert_eq!(f.request_series(), 3 + 2);
    assert_eq!(
        f.duration("OTHER", "other", "backend-api", "_count"),
        Some(4)
    );
}

#[test]
fn ten_thousand_raw_paths_stay_bounded() {
    let mut f = Fixture::new(r#"{"max_series": 20}"#);
    for i in 0..10_000u64 {
        let path = format!("/api/v1/tracks/{i}?q={i}");
        f.metrics.record(
            &f.settings,
            &mut f.registry,
            &mut f.host,
            &RequestRecord {
                status: Some(200 + i % 100),
                duration_nanos: Some(1),
                ..record(&f.settings, "GET", &path)
            },
        );
        let path = format!("/random/{i}");
        f.metrics.record(
            &f.settings,
            &mut f.registry,
            &mut f.host,
            &RequestRecord {
                status: Some(404),
                duration_nanos: Some(1),
                ..record(&f.settings, "GET", &path)
            },
        );
    }
    f.registry.flush(&mut f.host);
    assert_eq!(f.request_series(), 20 + 1);
    let total: u64 = f
        .host
        .counters()
        .iter()
        .filter(|(name, _)| name.starts_with("http_requests_total{"))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(total, 20_000);
    assert_eq!(f.requests("GET", "other", "404", "other"), Some(10_000));
    assert_eq!(
        f.requests("OTHER", "other", "2xx", "backend-api"),
        Some(10_000 - 19 * 100)
    );
}

#[test]
fn route_names_as_endpoints() {
    let mut f = Fixture::new(r#"{"endpoint_source": "route_name", "max_series": 2}"#);
    for name in [&b"tracks"[..], b"tracks", b"bad;.;name=.=x", b"third", b""] {
        f.metrics.record(
            &f.settings,
            &mut f.registry,
            &mut f.host,
            &RequestRecord {
                route_name: Some(name),
                status: Some(200),
                duration_nanos: Some(1),
                ..record(&f.settings, "GET", "/api/v1/tracks/1")
            },
        );
    }
    f.registry.flush(&mut f.host);
    assert_eq!(f.requests("GET", "tracks", "200", "backend-api"), Some(2));
    assert_eq!(
        f.requests("GET", "bad_._name_._x", "200", "backend-api"),
        Some(1)
    );
    assert_eq!(f.requests("OTHER", "other", "2xx", "backend-api"), Some(2));
}

#[test]
fn a_repeat_request_makes_no_hostcall() {
    let mut f = Fixture::new("{}");
    let record = RequestRecord {
        status: Some(200),
        duration_nanos: Some(1),
        ..record(&f.settings, "GET", "/api/v1/tracks/1")
    };
    f.metrics
        .record(&f.settings, &mut f.registry, &mut f.host, &record);
    let calls = f.host.hostcalls;
    for _ in 0..100 {
        f.metrics
            .record(&f.settings, &mut f.registry, &mut f.host, &record);
    }
    assert_eq!(f.host.hostcalls, calls);
}
