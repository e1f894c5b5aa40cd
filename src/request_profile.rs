//! The filter's own work on one plain request, run natively so that callgrind can count its
//! instructions (stable on a noisy machine, unlike a timer). `make profile` runs it; it is an
//! ignored test, because it measures rather than checks.
//!
//! It mirrors what the HTTP glue does between hostcalls, in the same order: find the headers it
//! reads, match the route, decide and format the trace headers, then record the metrics.
//!
//! PROFILE_TEMPLATES=n replaces the Veza route table by n templates `/api/v1/:area/s<i>/:id`
//! (the request then matches `s7`), and PROFILE_SERIES=n makes n label sets live first, as
//! `make bench`'s scale forms do: the same question, counted instead of timed.

use crate::config::{self, Settings};
use crate::header_map;
use crate::host::memory::MemoryHost;
use crate::labels::Method;
use crate::metrics::business::BusinessMetrics;
use crate::metrics::http::{HttpMetrics, RequestRecord};
use crate::metrics::registry::Registry;
use crate::trace::{self, IdSource, TraceHeaders};

#[path = "../benches/support/scale_table.rs"]
mod scale_table;
use scale_table::scale_config;

/// Requests or round trips per run, unless PROFILE_REQUESTS says.
const DEFAULT_REPETITIONS: usize = 100_000;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

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
fn browser_headers(path: &[u8]) -> Vec<u8> {
    header_map::serialize(&[
        (":authority", b"veza.example.com"),
        (":path", path),
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

/// At least `count` live `http_requests_total` series: templates × statuses × methods.
fn make_series(
    settings: &Settings,
    registry: &mut Registry,
    http: &mut HttpMetrics,
    host: &mut MemoryHost,
    count: usize,
) {
    let methods = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Patch,
    ];
    let templates = settings.routes.templates().len().max(1);
    let live = |host: &MemoryHost| {
        host.counters()
            .iter()
            .filter(|(name, _)| name.ends_with("http_requests_total"))
            .count()
    };
    let mut n = 0;
    // Counted per batch: counting is a scan of every counter.
    let mut missing = count;
    while missing > 0 {
        for _ in 0..missing {
            let path = format!("/api/v1/tracks/s{}/1", n % templates);
            let method = methods.get(n / templates % methods.len()).copied();
            let status = 200 + (n / templates / methods.len()) as u64;
            let record = RequestRecord {
                method: method.unwrap_or(Method::Get),
                path: path.as_bytes(),
                route_name: None,
                route: None,
                status: Some(status),
                duration_nanos: Some(1_000_000),
            };
            http.record(settings, registry, host, &record);
            n += 1;
        }
        missing = count.saturating_sub(live(host));
        assert!(n <= 2 * count, "{count} series cannot be made");
    }
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
    let requests = env_number("PROFILE_REQUESTS", DEFAULT_REPETITIONS);
    let (templates, live_series) = (
        env_number("PROFILE_TEMPLATES", 0),
        env_number("PROFILE_SERIES", 0),
    );
    let settings = match templates {
        0 => config::load(None),
        n => config::load(Some(scale_config(n).as_bytes())),
    }
    .expect("the profile's configuration");
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let mut http = HttpMetrics::new(&mut host);
    let business = BusinessMetrics::new(&settings.business, &mut registry, &mut host);
    make_series(&settings, &mut registry, &mut http, &mut host, live_series);
    let series = host
        .counters()
        .iter()
        .filter(|(name, _)| name.ends_with("http_requests_total"))
        .count();
    assert!(
        series >= live_series,
        "{series} series live, not {live_series}"
    );
    let path: &[u8] = match templates {
        0 => b"/api/v1/tracks/42?include=artist",
        _ => b"/api/v1/tracks/s7/42",
    };
    let headers = browser_headers(path);
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
    // One header per outgoing format, nothing stale, no upgrade or range on these requests.
    assert_eq!(total, requests * settings.tracing.outgoing.len());
}

/// The filter's own work per WebSocket round trip, as `make bench`'s echo makes them: a
/// client's masked 32-byte binary frame and the server's unmasked echo, each its own body
/// chunk on a chat connection, through the same core call the HTTP glue makes per chunk.
#[test]
#[ignore = "a measurement: make profile runs it under callgrind"]
fn profile_websocket_round_trips() {
    use crate::metrics::connections::{ConnectionMetrics, WebSocketConnection};
    use crate::metrics::names;
    use crate::websocket::frames::tests::frame;
    use crate::websocket::frames::Direction;

    let round_trips = env_number("PROFILE_REQUESTS", DEFAULT_REPETITIONS);
    let settings = config::load(None).expect("the built-in configuration");
    let chat = settings.routes.service_id("chat");
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let mut connections = ConnectionMetrics::new(&mut host);
    let mut connection = WebSocketConnection::new(chat, true, 0);
    let payload = [7u8; 32];
    let client = frame(true, 0x2, &payload, Some([0x37, 0xfa, 0x21, 0x3d]));
    let server = frame(true, 0x2, &payload, None);
    for _ in 0..round_trips {
        for (direction, bytes) in [
            (Direction::Upstream, &client),
            (Direction::Downstream, &server),
        ] {
            connections.websocket_chunk(
                &settings,
                &mut registry,
                &mut host,
                &mut connection,
                direction,
                &mut bytes.as_slice(),
            );
        }
    }
    registry.flush(&mut host);
    let binary = |direction: Direction| {
        host.counter(&names::encode(
            names::WEBSOCKET_MESSAGES_TOTAL,
            &[
                (names::LABEL_SERVICE, "chat"),
                (names::LABEL_DIRECTION, direction.label()),
                (names::LABEL_MESSAGE_TYPE, "binary"),
            ],
        ))
    };
    let expected = Some(round_trips as u64);
    assert_eq!(binary(Direction::Upstream), expected);
    assert_eq!(binary(Direction::Downstream), expected);
}
