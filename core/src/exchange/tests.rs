use super::*;
use crate::host::memory::{MemoryHost, MemoryRequest};
use crate::websocket::frames::tests::frame;

const SECOND: u64 = 1_000_000_000;

fn worker(host: &mut MemoryHost, json: &str) -> Worker {
    Worker::configure(host, Some(json.as_bytes()), 0).unwrap()
}

/// A track's GET, as the backend's template and service label it.
const TRACK: [(&str, &str); 3] = [
    ("method", "GET"),
    ("endpoint", "/api/v1/tracks/:id"),
    ("service", "backend-api"),
];

/// `http_requests_total` of one label set and status.
fn requests(host: &MemoryHost, labels: &[(&str, &str); 3], status: &str) -> Option<u64> {
    let [method, endpoint, service] = *labels;
    host.series(
        "http_requests_total",
        &[method, endpoint, ("status", status), service],
    )
}

/// The request duration histogram's bucket `le` of one label set.
fn duration_bucket(host: &MemoryHost, labels: &[(&str, &str); 3], le: &str) -> Option<u64> {
    let [method, endpoint, service] = *labels;
    host.series(
        "http_request_duration_seconds_bucket",
        &[method, endpoint, service, ("le", le)],
    )
}

fn request(pairs: &[(&str, &str)], now_nanos: u64) -> MemoryRequest {
    MemoryRequest {
        now_nanos,
        ..MemoryRequest::with_headers(pairs)
    }
}

fn respond(host: &mut MemoryHost, status: &str, now_nanos: u64) {
    host.request
        .response_headers
        .push((":status".to_owned(), status.as_bytes().to_vec()));
    host.request.now_nanos = now_nanos;
}

#[test]
fn a_request_is_routed_traced_and_counted_with_its_duration() {
    let mut host = MemoryHost::default();
    let worker = worker(
        &mut host,
        r#"{"tracing": {"response_header": "x-trace-id"}}"#,
    );
    let mut exchange = Exchange::new(7);
    host.request = request(
        &[
            (":method", "GET"),
            (":path", "/api/v1/tracks/42?token=secret"),
            (":authority", "veza"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ],
        SECOND,
    );
    assert_eq!(exchange.request_headers(&worker, &mut host), Next::Continue);
    // The trace id goes back in the response.
    assert!(exchange.wants_response_headers(&worker));
    // The incoming B3 trace is continued in `traceparent`, the default outgoing format, and
    // the B3 header it came in is removed: one context reaches the service.
    let traceparent = host
        .request
        .value(HeaderMap::Request, "traceparent")
        .unwrap();
    assert!(
        traceparent.starts_with("00-80f198ee56343ba864fe8b2a57d3eff7-"),
        "{traceparent}"
    );
    assert_eq!(host.request.value(HeaderMap::Request, "b3"), None);
    respond(&mut host, "200", SECOND + 30_000_000);
    exchange.response_headers(&worker, &mut host);
    assert_eq!(
        host.request.value(HeaderMap::Response, "x-trace-id"),
        Some("80f198ee56343ba864fe8b2a57d3eff7".to_owned())
    );
    exchange.end(&worker, &mut host);
    worker.flush(&mut host);
    assert_eq!(requests(&host, &TRACK, "200"), Some(1));
    // 30 ms, from the two clock reads: in the 0.05 bucket, not in 0.025.
    let bucket = |le| duration_bucket(&host, &TRACK, le);
    assert_eq!((bucket("0.025"), bucket("0.05")), (Some(0), Some(1)));
    assert_eq!(host.request.reply, None);
}

#[test]
fn live_is_answered_here_and_counted_under_the_gateway() {
    let mut host = MemoryHost::default();
    let worker = worker(&mut host, "{}");
    let mut exchange = Exchange::new(1);
    host.request = request(&[(":method", "GET"), (":path", "/live")], 90 * SECOND);
    assert_eq!(exchange.request_headers(&worker, &mut host), Next::Pause);
    let (status, body) = host.request.reply.clone().unwrap();
    assert_eq!(status, 200);
    assert!(
        body.starts_with(r#"{"status":"alive","timestamp":90,"uptime":"1m30s""#),
        "{body}"
    );
    // Health answers carry no trace context by default.
    assert_eq!(host.request.value(HeaderMap::Request, "traceparent"), None);
    respond(&mut host, "200", 90 * SECOND);
    exchange.end(&worker, &mut host);
    worker.flush(&mut host);
    assert_eq!(
        host.series(
            "http_requests_total",
            &[
                ("endpoint", "/live"),
                ("status", "200"),
                ("service", "gateway")
            ]
        ),
        Some(1)
    );
}

#[test]
fn live_for_another_authority_goes_on_and_is_not_the_gateways() {
    let mut host = MemoryHost::default();
    let worker = worker(
        &mut host,
        r#"{"health": {"authorities": ["gateway.veza.internal"]}}"#,
    );
    let mut exchange = Exchange::new(1);
    host.request = request(
        &[
            (":method", "GET"),
            (":path", "/live"),
            (":authority", "api.veza.example"),
        ],
        0,
    );
    assert_eq!(exchange.request_headers(&worker, &mut host), Next::Continue);
    assert_eq!(host.request.reply, None);
    respond(&mut host, "404", 0);
    exchange.end(&worker, &mut host);
    worker.flush(&mut host);
    assert_eq!(
        host.series(
            "http_requests_total",
            &[
                ("endpoint", "other"),
                ("status", "404"),
                ("service", "other")
            ]
        ),
        Some(1)
    );
    assert_eq!(
        host.series("http_requests_total", &[("service", "gateway")]),
        None
    );
}

#[test]
fn ready_waits_for_the_workers_round_and_is_answered_by_it() {
    let mut host = MemoryHost::default();
    let worker = worker(
        &mut host,
        r#"{"health": {"checks": [{"name": "chat", "cluster": "veza_chat", "path": "/health"}]}}"#,
    );
    let mut probe = Exchange::new(9);
    host.request = request(&[(":method", "GET"), (":path", "/ready")], SECOND);
    assert_eq!(probe.request_headers(&worker, &mut host), Next::Pause);
    assert_eq!(host.request.reply, None, "it waits");
    worker.tick(&mut host, SECOND);
    assert_eq!(host.calls.len(), 1);
    assert_eq!(host.calls[0].cluster, "veza_chat");
    worker.call_response(
        &mut host,
        1,
        Ok(Some(b"200".to_vec())),
        Ok(Some(b"{}".to_vec())),
        SECOND + 1_000_000,
    );
    assert_eq!(host.answers.len(), 1);
    let (context, status, body) = &host.answers[0];
    assert_eq!((*context, *status), (9, 200));
    assert_eq!(
        body,
        r#"{"status":"ready","checks":{"chat":{"status":"ready"}}}"#
    );
    assert_eq!(
        host.series("dependency_up", &[("dependency", "chat")]),
        Some(1)
    );
}

#[test]
fn a_request_answered_before_the_filter_ran_is_counted_from_what_envoy_logged() {
    let mut host = MemoryHost::default();
    let worker = worker(&mut host, "{}");
    // No request headers callback: Envoy answered first (no route). The end reads the headers
    // and Envoy's own duration.
    let mut exchange = Exchange::new(3);
    host.request = request(&[(":method", "POST"), (":path", "/nowhere")], 0);
    host.request.properties.push((
        Property::RequestDuration,
        (2 * SECOND).to_le_bytes().to_vec(),
    ));
    respond(&mut host, "404", 0);
    host.request.now_nanos = 5 * SECOND;
    exchange.end(&worker, &mut host);
    worker.flush(&mut host);
    let labels = [
        ("method", "POST"),
        ("endpoint", "other"),
        ("service", "other"),
    ];
    assert_eq!(
        host.series(
            "http_requests_total",
            &[labels[0], labels[1], ("status", "404")]
        ),
        Some(1)
    );
    let bucket = |le| duration_bucket(&host, &labels, le);
    assert_eq!((bucket("1"), bucket("2.5")), (Some(0), Some(1)));
}

#[test]
fn a_stream_from_byte_0_is_a_session_counted_as_forwarded() {
    let mut host = MemoryHost::default();
    let worker = worker(&mut host, "{}");
    let mut exchange = Exchange::new(5);
    host.request = request(
        &[
            (":method", "GET"),
            (":path", "/stream/song.mp3?expires=1&sig=s"),
        ],
        0,
    );
    exchange.request_headers(&worker, &mut host);
    respond(&mut host, "206", 0);
    host.request
        .response_headers
        .push(("content-range".to_owned(), b"bytes 0-99/1000".to_vec()));
    exchange.response_headers(&worker, &mut host);
    assert!(exchange.wants_body(Direction::Downstream));
    assert!(!exchange.wants_body(Direction::Upstream));
    assert_eq!(host.counter("stream_sessions_active"), Some(1));
    let mut chunk: &[u8] = &[0; 100];
    host.request.now_nanos = SECOND;
    exchange.body(&worker, &mut host, Direction::Downstream, &mut chunk);
    assert_eq!(
        host.series("stream_bitrate_bps", &[("stream_id", "song.mp3")]),
        Some(800)
    );
    exchange.end(&worker, &mut host);
    worker.flush(&mut host);
    assert_eq!(host.counter("stream_sessions_active"), Some(0));
    assert_eq!(
        host.series("stream_bitrate_bps", &[("stream_id", "song.mp3")]),
        Some(0)
    );
    assert_eq!(host.counter("streams_started_total"), Some(1));
    assert_eq!(host.counter("stream_bytes_total"), Some(100));
}

/// A WebSocket upgrade of the chat server's `/ws`, its request headers seen.
fn upgrade_request(worker: &Worker, host: &mut MemoryHost, context_id: u32) -> Exchange {
    let mut exchange = Exchange::new(context_id);
    host.request = request(
        &[
            (":method", "GET"),
            (":path", "/ws"),
            ("upgrade", "websocket"),
        ],
        0,
    );
    exchange.request_headers(worker, host);
    exchange
}

#[test]
fn a_websocket_upgrade_opens_a_connection_whose_frames_count_until_it_ends() {
    let mut host = MemoryHost::default();
    let worker = worker(&mut host, "{}");
    let mut exchange = upgrade_request(&worker, &mut host, 11);
    assert!(exchange.wants_response_headers(&worker));
    respond(&mut host, "101", 0);
    exchange.response_headers(&worker, &mut host);
    let chat = [("service", "chat")];
    assert_eq!(host.series("websocket_connections_active", &chat), Some(1));
    let join = frame(
        true,
        0x1,
        br#"{"type":"JoinConversation","conversation_id":"c1"}"#,
        Some([1, 2, 3, 4]),
    );
    exchange.body(
        &worker,
        &mut host,
        Direction::Upstream,
        &mut join.as_slice(),
    );
    assert_eq!(host.counter("chat_rooms_active"), Some(1));
    host.request.now_nanos = 2 * SECOND;
    exchange.end(&worker, &mut host);
    worker.flush(&mut host);
    assert_eq!(host.series("websocket_connections_active", &chat), Some(0));
    assert_eq!(host.counter("chat_rooms_active"), Some(0));
    assert_eq!(
        host.series(
            "websocket_upgrades_total",
            &[("service", "chat"), ("endpoint", "/ws"), ("status", "101")]
        ),
        Some(1)
    );
    assert_eq!(
        host.series("websocket_connection_duration_seconds_count", &chat),
        Some(1)
    );
    // Upgrades are counted in http_requests_total but kept out of its duration histogram.
    assert_eq!(
        host.series(
            "http_requests_total",
            &[("endpoint", "/ws"), ("status", "101")]
        ),
        Some(1)
    );
}

#[test]
fn an_upgrade_whose_upstream_failed_is_counted_with_no_response() {
    let mut host = MemoryHost::default();
    let worker = worker(&mut host, "{}");
    let mut exchange = upgrade_request(&worker, &mut host, 12);
    exchange.end(&worker, &mut host);
    worker.flush(&mut host);
    assert_eq!(
        host.series(
            "websocket_upgrades_total",
            &[("service", "chat"), ("endpoint", "/ws"), ("status", "0")]
        ),
        Some(1)
    );
}

/// A body chunk whose every read the host refused.
struct Unreadable;

impl ByteSource for Unreadable {
    fn size(&self) -> usize {
        100
    }

    fn read(&mut self, _offset: usize, _len: usize) -> &[u8] {
        &[]
    }

    fn failure(&self) -> Option<crate::host::HostError> {
        Some(crate::host::HostError(10))
    }
}

#[test]
fn a_websocket_chunk_the_host_failed_to_read_is_counted_once() {
    let mut host = MemoryHost::default();
    let worker = worker(&mut host, "{}");
    let mut exchange = upgrade_request(&worker, &mut host, 13);
    respond(&mut host, "101", 0);
    exchange.response_headers(&worker, &mut host);
    exchange.body(&worker, &mut host, Direction::Upstream, &mut Unreadable);
    worker.flush(&mut host);
    assert_eq!(
        host.series(
            "veza_observability_errors_total",
            &[("operation", "get_buffer")]
        ),
        Some(1)
    );
    assert_eq!(host.errors(), 1);
}

/// Envoy's tracer writing its context at the router: what the request map holds afterwards.
fn envoys_router_writes(host: &mut MemoryHost, traceparent: &str) {
    host.request
        .request_headers
        .retain(|(name, _)| name != "traceparent");
    host.request
        .request_headers
        .push(("traceparent".to_owned(), traceparent.as_bytes().to_vec()));
}

fn log_field(host: &MemoryHost, key: &str) -> Option<String> {
    host.request
        .log_fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

#[test]
fn with_envoys_tracer_the_filter_writes_nothing_and_reports_what_the_service_got() {
    let mut host = MemoryHost::default();
    let worker = worker(
        &mut host,
        r#"{"tracing": {"propagation": "envoy"}, "access_log": {"enabled": true}}"#,
    );
    let mut exchange = Exchange::new(21);
    let incoming = [
        (":method", "GET"),
        (":path", "/api/v1/tracks/42"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ];
    host.request = request(&incoming, SECOND);
    exchange.request_headers(&worker, &mut host);
    let untouched: Vec<(String, Vec<u8>)> = incoming
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(host.request.request_headers, untouched, "no header written");
    // Envoy's OpenTelemetry tracer continues the W3C trace with its own span.
    envoys_router_writes(
        &mut host,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01",
    );
    respond(&mut host, "200", 2 * SECOND);
    exchange.response_headers(&worker, &mut host);
    exchange.end(&worker, &mut host);
    assert_eq!(
        log_field(&host, "veza_trace_id").as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(
        log_field(&host, "veza_span_id").as_deref(),
        Some("b7ad6b7169203331")
    );
    assert_eq!(
        log_field(&host, "veza_service").as_deref(),
        Some("backend-api")
    );
    assert_eq!(
        log_field(&host, "veza_endpoint").as_deref(),
        Some("/api/v1/tracks/:id")
    );
    worker.flush(&mut host);
    // The metrics are the same either way: the log's labels are the series'.
    assert_eq!(
        host.series(
            "http_requests_total",
            &[
                ("endpoint", "/api/v1/tracks/:id"),
                ("status", "200"),
                ("service", "backend-api")
            ]
        ),
        Some(1)
    );
    assert_eq!(host.errors(), 0);
}

#[test]
fn propagation_envoy_leaves_the_response_header_and_the_span_to_envoy() {
    let refused = |json: &str| {
        crate::config::load(Some(json.as_bytes()))
            .err()
            .map(|e| e.field)
    };
    assert_eq!(
        refused(r#"{"tracing": {"propagation": "envoy", "collector": {"cluster": "jaeger"}}}"#)
            .as_deref(),
        Some("tracing.collector")
    );
    assert_eq!(
        refused(r#"{"tracing": {"propagation": "envoy", "response_header": "x-trace-id"}}"#)
            .as_deref(),
        Some("tracing.response_header")
    );
}

const EXPORTING: &str = r#"{"tracing": {"sampling_ratio": 1.0, "collector": {"cluster": "jaeger"}},
    "access_log": {"enabled": true}}"#;

fn spans_held(worker: &Worker) -> usize {
    worker
        .state
        .borrow()
        .exporter
        .as_ref()
        .map_or(0, |e| e.held())
}

#[test]
fn a_context_envoys_tracer_replaced_is_not_exported_as_an_orphan() {
    let mut host = MemoryHost::default();
    let worker = worker(&mut host, EXPORTING);
    let mut exchange = Exchange::new(22);
    host.request = request(&[(":method", "GET"), (":path", "/api/v1/tracks/1")], SECOND);
    exchange.request_headers(&worker, &mut host);
    assert!(host
        .request
        .value(HeaderMap::Request, "traceparent")
        .is_some());
    // Envoy's tracer, which read no context before the filter ran, starts its own trace.
    envoys_router_writes(
        &mut host,
        "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01",
    );
    respond(&mut host, "200", 2 * SECOND);
    exchange.response_headers(&worker, &mut host);
    exchange.end(&worker, &mut host);
    assert_eq!(spans_held(&worker), 0, "no orphan span");
    assert_eq!(
        log_field(&host, "veza_trace_id").as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c"),
        "the trace id the service saw"
    );
    worker.flush(&mut host);
    assert_eq!(
        host.series("trace_spans_dropped_total", &[("reason", "envoy_tracer")]),
        Some(1)
    );
}

#[test]
fn without_envoys_tracer_the_read_back_finds_the_filters_own_context() {
    let mut host = MemoryHost::default();
    let worker = worker(&mut host, EXPORTING);
    let mut exchange = Exchange::new(23);
    host.request = request(&[(":method", "GET"), (":path", "/api/v1/tracks/1")], SECOND);
    exchange.request_headers(&worker, &mut host);
    let written = host
        .request
        .value(HeaderMap::Request, "traceparent")
        .unwrap();
    respond(&mut host, "200", 2 * SECOND);
    exchange.response_headers(&worker, &mut host);
    exchange.end(&worker, &mut host);
    assert_eq!(spans_held(&worker), 1);
    assert_eq!(
        log_field(&host, "veza_trace_id"),
        written.get(3..35).map(str::to_owned)
    );
    assert_eq!(
        log_field(&host, "veza_span_id"),
        written.get(36..52).map(str::to_owned)
    );
}

#[test]
fn past_the_series_cap_the_log_has_the_overflow_series_labels() {
    let mut host = MemoryHost::default();
    let worker = worker(
        &mut host,
        r#"{"max_series": 1, "access_log": {"enabled": true}}"#,
    );
    for (context_id, path) in [(31, "/api/v1/tracks/1"), (32, "/api/v1/tags")] {
        let mut exchange = Exchange::new(context_id);
        host.request = request(&[(":method", "GET"), (":path", path)], SECOND);
        exchange.request_headers(&worker, &mut host);
        respond(&mut host, "200", 2 * SECOND);
        exchange.response_headers(&worker, &mut host);
        exchange.end(&worker, &mut host);
    }
    // The second label set found the cap full: counted in its service's overflow series,
    // and logged with that series' labels.
    assert_eq!(log_field(&host, "veza_endpoint").as_deref(), Some("other"));
    assert_eq!(
        log_field(&host, "veza_service").as_deref(),
        Some("backend-api")
    );
    worker.flush(&mut host);
    assert_eq!(
        host.series(
            "http_requests_total",
            &[
                ("method", "OTHER"),
                ("endpoint", "other"),
                ("status", "2xx"),
                ("service", "backend-api")
            ]
        ),
        Some(1)
    );
}

#[test]
fn exactly_one_traceparent_reaches_the_service_whether_or_not_one_came_in() {
    let mut host = MemoryHost::default();
    let worker = worker(&mut host, "{}");
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for carried in [
        vec![],
        vec![("traceparent", incoming)],
        vec![("traceparent", incoming), ("traceparent", incoming)],
    ] {
        let mut headers = vec![(":method", "GET"), (":path", "/api/v1/tracks/42")];
        headers.extend(carried.iter().copied());
        host.request = request(&headers, SECOND);
        let mut exchange = Exchange::new(9);
        assert_eq!(exchange.request_headers(&worker, &mut host), Next::Continue);
        // Nothing to do at the response: no trace id header, upgrade or stream.
        assert!(!exchange.wants_response_headers(&worker));
        let written = host.request.values(HeaderMap::Request, "traceparent");
        assert_eq!(written.len(), 1, "{carried:?}");
        // One value is continued; two are no valid context, and a new trace starts.
        if carried.len() == 1 {
            assert!(
                written[0].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{written:?}"
            );
        }
    }
}

#[test]
fn the_route_cache_is_cleared_only_when_asked_and_a_trace_header_was_written() {
    for (json, clears) in [
        ("{}", 0),
        (r#"{"tracing": {"clear_route_cache": true}}"#, 1),
        (
            r#"{"tracing": {"clear_route_cache": true, "propagation": "envoy"}}"#,
            0,
        ),
        (
            r#"{"tracing": {"clear_route_cache": true, "enabled": false}}"#,
            0,
        ),
    ] {
        let mut host = MemoryHost::default();
        let worker = worker(&mut host, json);
        host.request = request(
            &[(":method", "GET"), (":path", "/api/v1/tracks/42")],
            SECOND,
        );
        let mut exchange = Exchange::new(3);
        assert_eq!(exchange.request_headers(&worker, &mut host), Next::Continue);
        assert_eq!(host.request.route_cache_clears, clears, "{json}");
        assert_eq!(host.errors(), 0, "{json}");
    }
}

#[test]
fn the_user_header_and_the_trace_headers_are_both_read() {
    let mut host = MemoryHost::default();
    let worker = worker(
        &mut host,
        r#"{"active_users": {"source": {"header": "X-User-Id"}}}"#,
    );
    let trace_id = "80f198ee56343ba864fe8b2a57d3eff7";
    for (context_id, user) in [(1, "alice"), (2, "bob"), (3, "alice")] {
        let mut exchange = Exchange::new(context_id);
        let traceparent = format!("00-{trace_id}-e457b5a2e4d86bd1-01");
        host.request = request(
            &[
                (":method", "GET"),
                (":path", "/api/v1/tracks/42"),
                (":authority", "veza"),
                ("traceparent", &traceparent),
                ("x-user-id", user),
            ],
            SECOND,
        );
        assert_eq!(exchange.request_headers(&worker, &mut host), Next::Continue);
        let written = host
            .request
            .value(HeaderMap::Request, "traceparent")
            .unwrap();
        assert!(written.starts_with(&format!("00-{trace_id}-")), "{written}");
        respond(&mut host, "200", SECOND + 1_000_000);
        exchange.end(&worker, &mut host);
    }
    worker.tick(&mut host, 2 * SECOND);
    // alice and bob.
    assert_eq!(host.series("active_users", &[]), Some(2));
}

const COUNT_IN_LOGGER: &str = r#"{"count_in_logger": "veza", "tracing": {"enabled": false},
    "metrics_flush_interval_ms": 0, "active_users": {"source": {"header": "x-user-id"}}}"#;

/// The same request as the module's access logger hands it over: its headers, Envoy's response
/// code and duration.
fn logged(worker: &Worker, host: &mut MemoryHost, pairs: &[(&str, &str)], status: &str) {
    host.request = request(pairs, 10 * SECOND);
    host.request.properties.push((
        Property::RequestDuration,
        (SECOND / 5).to_le_bytes().to_vec(),
    ));
    respond(host, status, 10 * SECOND);
    Exchange::new(0).logged(worker, host);
}

#[test]
fn with_count_in_logger_the_logger_counts_each_request_once_and_the_filter_none() {
    let mut host = MemoryHost::default();
    let worker = worker(&mut host, COUNT_IN_LOGGER);
    // `/live` through the filter, enabled on its route: answered, not counted.
    let live = [(":method", "GET"), (":path", "/live"), ("x-user-id", "u1")];
    let mut exchange = Exchange::new(1);
    host.request = request(
        &[(":method", "GET"), (":path", "/live"), ("x-user-id", "u0")],
        9 * SECOND,
    );
    assert_eq!(exchange.request_headers(&worker, &mut host), Next::Pause);
    assert_eq!(host.request.reply.as_ref().map(|r| r.0), Some(200));
    respond(&mut host, "200", 9 * SECOND);
    exchange.end(&worker, &mut host);
    worker.flush(&mut host);
    let live_series = [
        ("method", "GET"),
        ("endpoint", "/live"),
        ("status", "200"),
        ("service", "gateway"),
    ];
    assert_eq!(host.series("http_requests_total", &live_series), None);
    // The logger counts it, and a request the filter never ran on, with Envoy's duration.
    logged(&worker, &mut host, &live, "200");
    let track = [
        (":method", "GET"),
        (":path", "/api/v1/tracks/42"),
        ("x-user-id", "u2"),
    ];
    logged(&worker, &mut host, &track, "200");
    worker.flush(&mut host);
    assert_eq!(host.series("http_requests_total", &live_series), Some(1));
    assert_eq!(requests(&host, &TRACK, "200"), Some(1));
    let bucket = |le| duration_bucket(&host, &TRACK, le);
    assert_eq!((bucket("0.1"), bucket("0.25")), (Some(0), Some(1)));
    // The users the logger saw, not the one of the filter's `/live`.
    worker.tick(&mut host, 11 * SECOND);
    assert_eq!(host.counter(crate::metrics::names::ACTIVE_USERS), Some(2));
    assert_eq!(host.errors(), 0);
}
