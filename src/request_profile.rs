//! The filter's own work on one plain request, run natively so that callgrind can count its
//! instructions (stable on a noisy machine, unlike a timer). `make profile` runs it; it is an
//! ignored test, because it measures rather than checks.
//!
//! It mirrors what the HTTP glue does between hostcalls, in the same order: find the headers it
//! reads, match the route, decide and format the trace headers, then record the metrics.

use crate::config::{self, Settings};
use crate::header_map;
use crate::host::memory::MemoryHost;
use crate::labels::Method;
use crate::metrics::business::BusinessMetrics;
use crate::metrics::http::{HttpMetrics, RequestRecord};
use crate::metrics::registry::Registry;
use crate::trace::{self, IdSource, TraceHeaders};

struct Counter(u64);

impl IdSource for Counter {
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }
}

/// What a browser sends the gateway, as Envoy serializes it for `get_header_map_pairs`.
fn browser_headers() -> Vec<u8> {
    header_map::serialize(&[
        (":authority", b"veza.example.com"),
        (":path", b"/api/v1/tracks/42?include=artist"),
        (":method", b"GET"),
        (":scheme", b"https"),
        (
            "user-agent",
            b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        ("accept", b"application/json"),
        ("accept-language", b"en-US,en;q=0.5"),
        ("accept-encoding", b"gzip, deflate, br"),
        ("referer", b"https://veza.example.com/library"),
        ("cookie", b"theme=dark"),
        ("x-forwarded-proto", b"https"),
        ("x-request-id", b"0d4f6a9e-5c1b-4a3e-9f7d-2b8c6e1a0f33"),
    ])
}

/// One request's work; returns something derived from every step so none is optimized away.
#[inline(never)]
fn one_request(
    settings: &Settings,
    headers: &[u8],
    ids: &mut Counter,
    registry: &mut Registry,
    http: &mut HttpMetrics,
    business: &BusinessMetrics,
    host: &mut MemoryHost,
) -> usize {
    let [method, path, _authority, upgrade, range, _authorization] = header_map::find(
        headers,
        [
            ":method",
            ":path",
            ":authority",
            "upgrade",
            "range",
            "authorization",
        ],
    );
    let method = Method::parse(method.unwrap_or_default());
    let path = path.unwrap_or_default();
    let route = settings.routes.resolve(method, path);
    let tracing = &settings.tracing;
    let incoming = TraceHeaders::collect(header_map::pairs(headers), tracing);
    let decision = trace::decide(tracing, &incoming, ids);
    let outgoing = trace::outgoing(tracing, &decision);
    let stale = trace::stale(incoming.present, &outgoing);
    let record = RequestRecord {
        method,
        path: b"",
        route_name: None,
        route: Some(route),
        status: Some(200),
        duration_nanos: Some(3_000_000),
    };
    let route = http.record(settings, registry, host, &record);
    business.record(
        &settings.business,
        registry,
        method,
        route.endpoint,
        Some(200),
    );
    outgoing.len() + stale.len() + usize::from(upgrade.is_some()) + usize::from(range.is_some())
}

#[test]
#[ignore = "a measurement: make profile runs it under callgrind"]
fn profile_request_path() {
    let requests: usize = std::env::var("PROFILE_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let settings = config::load(None).expect("the default configuration");
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let mut http = HttpMetrics::new(&mut host);
    let business = BusinessMetrics::new(&settings.business, &mut registry, &mut host);
    let headers = browser_headers();
    let mut ids = Counter(1);
    let mut total = 0;
    for _ in 0..requests {
        total += one_request(
            &settings,
            &headers,
            &mut ids,
            &mut registry,
            &mut http,
            &business,
            &mut host,
        );
    }
    assert_eq!(total, requests * 2);
}
