//! The filter's own work on one plain request, run natively so that callgrind can count its
//! instructions (stable on a noisy machine, unlike a timer). `make profile` runs it; it is an
//! ignored test, because it measures rather than checks.
//!
//! It runs the core's [`Exchange`] as the HTTP glue does, over a host whose reads cost what a
//! copy into the filter's memory costs: the code counted is the code Envoy runs.
//!
//! PROFILE_TEMPLATES=n replaces the Veza route table by n templates `/api/v1/:area/s<i>/:id`
//! (the request then matches `s7`), and PROFILE_SERIES=n makes n label sets live first, as
//! `make bench`'s scale forms do: the same question, counted instead of timed.

use crate::config::{self, Settings};
use crate::exchange::{Exchange, Next};
use crate::header_map::{self, Serialized};
use crate::host::memory::MemoryHost;
use crate::host::{CasOutcome, HeaderMap, Host, HostError, Labels, MetricId, Property, Request};
use crate::labels::Method;
use crate::metrics::http::{HttpMetrics, RequestRecord};
use crate::metrics::registry::Registry;
use crate::worker::Worker;

/// Requests or round trips per run, unless PROFILE_REQUESTS says.
const DEFAULT_REPETITIONS: usize = 100_000;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
            .filter(|(name, _)| name.starts_with("http_requests_total{"))
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
            let method = method.unwrap_or(Method::Get);
            let record = RequestRecord {
                method,
                route_name: None,
                route: settings.routes.resolve(method, path.as_bytes()),
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

/// The host of the profile: metrics and shared data in memory, and a request whose reads
/// cost what they cost a wasm filter (a copy of the value into the filter's memory) and whose
/// writes cost nothing here (they are Envoy's work).
struct ProfileHost {
    memory: MemoryHost,
    headers: Vec<u8>,
    now: u64,
}

impl Host for ProfileHost {
    fn define_counter(&mut self, name: &str, labels: &Labels<'_>) -> Result<MetricId, HostError> {
        self.memory.define_counter(name, labels)
    }
    fn increment_counter(&mut self, id: MetricId, delta: u64) -> Result<(), HostError> {
        self.memory.increment_counter(id, delta)
    }
    fn define_gauge(&mut self, name: &str, labels: &Labels<'_>) -> Result<MetricId, HostError> {
        self.memory.define_gauge(name, labels)
    }
    fn set_gauge(&mut self, id: MetricId, value: u64) -> Result<(), HostError> {
        self.memory.set_gauge(id, value)
    }
    fn add_gauge(&mut self, id: MetricId, delta: i64) -> Result<(), HostError> {
        self.memory.add_gauge(id, delta)
    }
    fn get_shared(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        self.memory.get_shared(key)
    }
    fn set_shared(&mut self, key: &str, value: &[u8], cas: u32) -> Result<CasOutcome, HostError> {
        self.memory.set_shared(key, value, cas)
    }
}

impl Request for ProfileHost {
    fn now_nanos(&mut self) -> Result<u64, HostError> {
        self.now += 1_500_000;
        Ok(self.now)
    }
    type Headers<'h> = Serialized<Vec<u8>>;
    /// A fresh copy, as proxy-wasm's host makes in the VM's memory.
    fn request_headers(&mut self) -> Result<Serialized<Vec<u8>>, HostError> {
        Ok(Serialized(self.headers.clone()))
    }
    fn header(&mut self, map: HeaderMap, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok((map == HeaderMap::Response && name == ":status").then(|| b"200".to_vec()))
    }
    fn set_header(&mut self, _: HeaderMap, _: &str, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn add_header(&mut self, _: HeaderMap, _: &str, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn remove_header(&mut self, _: HeaderMap, _: &str) -> Result<(), HostError> {
        Ok(())
    }
    fn clear_route_cache(&mut self) {}
    fn property(&mut self, _: Property) -> Result<Option<Vec<u8>>, HostError> {
        Ok(None)
    }
    fn set_log_field(&mut self, _: &str, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn send_reply(&mut self, _: u32, _: &str, _: &str) -> Result<(), HostError> {
        Ok(())
    }
    #[cfg(feature = "fault-injection")]
    fn trap(&mut self) {}
}

/// One request through the exchange, as the HTTP glue drives it: request headers, response
/// headers, the end. Returns its answer so none of it is optimized away.
#[inline(never)]
fn one_request(worker: &Worker, host: &mut ProfileHost, context_id: u32) -> bool {
    let mut exchange = Exchange::new(context_id);
    let next = exchange.request_headers(worker, host);
    exchange.response_headers(worker, host);
    exchange.end(worker, host);
    next == Next::Continue
}

#[test]
#[ignore = "a measurement: make profile runs it under callgrind"]
fn profile_request_path() {
    let requests = env_number("PROFILE_REQUESTS", DEFAULT_REPETITIONS);
    let (templates, live_series) = (
        env_number("PROFILE_TEMPLATES", 0),
        env_number("PROFILE_SERIES", 0),
    );
    let configuration = match templates {
        0 => None,
        n => Some(config::scale_configuration(n)),
    };
    let mut host = ProfileHost {
        memory: MemoryHost::default(),
        headers: Vec::new(),
        now: 0,
    };
    let worker = Worker::configure(&mut host, configuration.as_deref().map(str::as_bytes), 0)
        .expect("the profile's configuration");
    {
        let mut state = worker.state.borrow_mut();
        let state = &mut *state;
        make_series(
            &worker.settings,
            &mut state.registry,
            &mut state.http,
            &mut host.memory,
            live_series,
        );
    }
    let series = host
        .memory
        .counters()
        .iter()
        .filter(|(name, _)| name.starts_with("http_requests_total{"))
        .count();
    assert!(
        series >= live_series,
        "{series} series live, not {live_series}"
    );
    let path: &[u8] = match templates {
        0 => b"/api/v1/tracks/42?include=artist",
        _ => b"/api/v1/tracks/s7/42",
    };
    host.headers = browser_headers(path);
    let mut passed = 0;
    for i in 0..requests {
        passed += usize::from(one_request(&worker, &mut host, i as u32));
    }
    assert_eq!(passed, requests, "every request passed on");
    worker.flush(&mut host.memory);
    let counted: u64 = host
        .memory
        .counters()
        .iter()
        .filter(|(name, _)| {
            name.starts_with("http_requests_total{") && name.contains(r#"status="200""#)
        })
        .map(|(_, value)| value)
        .sum();
    assert!(
        counted >= requests as u64,
        "{counted} of {requests} counted"
    );
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
    let mut connections = ConnectionMetrics::new();
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
        host.series(
            names::WEBSOCKET_MESSAGES_TOTAL,
            &[
                (names::LABEL_SERVICE, "chat"),
                (names::LABEL_DIRECTION, direction.label()),
                (names::LABEL_MESSAGE_TYPE, "binary"),
            ],
        )
    };
    let expected = Some(round_trips as u64);
    assert_eq!(binary(Direction::Upstream), expected);
    assert_eq!(binary(Direction::Downstream), expected);
}
