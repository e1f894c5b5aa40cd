use super::*;
use crate::host::memory::MemoryHost;

fn settings() -> CollectorSettings {
    CollectorSettings {
        cluster: "jaeger".into(),
        authority: "jaeger".into(),
        path: "/v1/traces".into(),
        timeout_ms: 1000,
        batch_size: 2,
        max_queue: 3,
        flush_interval_ms: 1000,
        max_retries: 1,
        retry_backoff_ms: 1000,
        service_name: "veza-gateway".into(),
    }
}

fn span(n: u64) -> SpanRecord {
    SpanRecord {
        trace_id: TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736),
        span_id: SpanId(n),
        parent: Some(SpanId(0x00f067aa0ba902b7)),
        tracestate: None,
        method: "GET",
        route: Some("/api/v1/tracks/:id".into()),
        path: "/api/v1/tracks/7".into(),
        scheme: "http".into(),
        server_address: "veza.local".into(),
        user_agent: Some("curl/8 \"quoted\"".into()),
        protocol_version: Some("1.1".into()),
        status: 200,
        start_unix_nanos: 1_700_000_000_000_000_000,
        end_unix_nanos: 1_700_000_000_004_200_000,
    }
}

const MS: u64 = 1_000_000;

fn counters(host: &MemoryHost) -> Vec<(String, u64)> {
    host.counters()
        .into_iter()
        .filter(|(name, value)| name.contains("trace_") && *value > 0)
        .collect()
}

#[test]
fn one_span_in_otlp_json() {
    let json = encode("veza-gateway", &[span(1)]);
    assert_eq!(
        json,
        concat!(
            r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"veza-gateway"}}]},"#,
            r#""scopeSpans":[{"scope":{"name":"veza-observability","version":""#,
            env!("CARGO_PKG_VERSION"),
            r#""},"spans":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"0000000000000001","#,
            r#""parentSpanId":"00f067aa0ba902b7","name":"GET /api/v1/tracks/:id","kind":2,"#,
            r#""startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000004200000","#,
            r#""attributes":[{"key":"http.request.method","value":{"stringValue":"GET"}},"#,
            r#"{"key":"url.path","value":{"stringValue":"/api/v1/tracks/7"}},"#,
            r#"{"key":"url.scheme","value":{"stringValue":"http"}},"#,
            r#"{"key":"http.route","value":{"stringValue":"/api/v1/tracks/:id"}},"#,
            r#"{"key":"http.response.status_code","value":{"intValue":"200"}},"#,
            r#"{"key":"server.address","value":{"stringValue":"veza.local"}},"#,
            r#"{"key":"user_agent.original","value":{"stringValue":"curl/8 \"quoted\""}},"#,
            r#"{"key":"network.protocol.version","value":{"stringValue":"1.1"}}],"#,
            r#""status":{}}]}]}]}"#
        )
    );
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(value.is_object());
    // No route, a 503: the span is named by the method alone and is an error.
    let mut failed = span(2);
    failed.route = None;
    failed.status = 503;
    let json = encode("veza-gateway", &[failed]);
    assert!(json.contains(r#""name":"GET","kind":2"#), "{json}");
    assert!(json.contains(r#""status":{"code":2}"#), "{json}");
    assert!(!json.contains("http.route"));
}

#[test]
fn batches_go_when_full_or_due_one_call_at_a_time() {
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let mut exporter = Exporter::new(settings(), &mut registry, &mut host, 0);
    let mut sent: Vec<usize> = Vec::new();
    let mut send = |_: &CollectorSettings, body: &[u8]| {
        let spans = serde_json::from_slice::<serde_json::Value>(body).unwrap()["resourceSpans"][0]
            ["scopeSpans"][0]["spans"]
            .as_array()
            .unwrap()
            .len();
        sent.push(spans);
        Some(sent.len() as u32)
    };
    exporter.push(&mut registry, span(1));
    // Not full, not due (the last send is "at 0").
    exporter.tick(&mut registry, 500 * MS, &mut send);
    exporter.push(&mut registry, span(2));
    exporter.tick(&mut registry, 600 * MS, &mut send);
    assert!(exporter.owns(1));
    // One call at a time: nothing else goes while it is in flight.
    exporter.push(&mut registry, span(3));
    exporter.tick(&mut registry, 5000 * MS, &mut send);
    exporter.responded(&mut registry, 5000 * MS, Some(200));
    // Due: a batch of one.
    exporter.tick(&mut registry, 6100 * MS, &mut send);
    exporter.responded(&mut registry, 6100 * MS, Some(202));
    assert_eq!(sent, [2, 1]);
    registry.flush(&mut host);
    assert_eq!(
        counters(&host),
        [("trace_spans_exported_total".to_owned(), 3)]
    );
    assert_eq!(exporter.held(), 0);
}

#[test]
fn the_queue_is_bounded_and_every_failure_is_counted() {
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let mut exporter = Exporter::new(settings(), &mut registry, &mut host, 0);
    let mut tokens = 0;
    let mut send = |_: &CollectorSettings, _: &[u8]| {
        tokens += 1;
        Some(tokens)
    };
    for n in 1..=5 {
        exporter.push(&mut registry, span(n));
    }
    // Three queued, two dropped.
    assert_eq!(exporter.held(), 3);
    // 503: retried after one flush interval; 503 again: retries (1) exhausted.
    exporter.tick(&mut registry, 2000 * MS, &mut send);
    exporter.responded(&mut registry, 2000 * MS, Some(503));
    assert_eq!(exporter.held(), 3);
    exporter.tick(&mut registry, 2500 * MS, &mut send);
    assert!(!exporter.owns(2), "the retry waits for its backoff");
    exporter.tick(&mut registry, 3000 * MS, &mut send);
    assert!(exporter.owns(2));
    exporter.responded(&mut registry, 3000 * MS, Some(503));
    // The last span: rejected with 400.
    exporter.tick(&mut registry, 4000 * MS, &mut send);
    exporter.responded(&mut registry, 4000 * MS, Some(400));
    // No answer at all, and a call that cannot be made.
    exporter.push(&mut registry, span(6));
    exporter.tick(&mut registry, 5000 * MS, &mut send);
    exporter.responded(&mut registry, 5000 * MS, None);
    exporter.push(&mut registry, span(7));
    exporter.tick(&mut registry, 6000 * MS, &mut |_, _| None);
    registry.flush(&mut host);
    assert_eq!(
        counters(&host),
        [
            ("trace_export_failures_total".to_owned(), 5),
            (
                r#"trace_spans_dropped_total{reason="export_failed"}"#.to_owned(),
                2
            ),
            (
                r#"trace_spans_dropped_total{reason="queue_full"}"#.to_owned(),
                2
            ),
            (
                r#"trace_spans_dropped_total{reason="rejected"}"#.to_owned(),
                1
            ),
            (
                r#"trace_spans_dropped_total{reason="retries_exhausted"}"#.to_owned(),
                2
            ),
        ]
    );
    assert_eq!(exporter.held(), 0);
}
