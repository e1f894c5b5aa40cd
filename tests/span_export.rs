//! The gateway's spans to an OTLP/HTTP collector, end to end: the real Envoy with the real
//! `.wasm`, a service traced with the OpenTelemetry SDK behind it, a collector stand-in that
//! records what it receives, and OpenTelemetry's proto definitions to decode it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use veza_test_harness::interop::{decode_otlp, Answer, Collector, OtelUpstream};
use veza_test_harness::*;

fn gateway(upstream: &OtelUpstream, collector_port: u16, collector: &str) -> Envoy {
    let (config, ports) = GatewayConfig::gateway(upstream.port, free_port(), free_port());
    let plugin = format!(
        r#"{{"tracing": {{"sampling_ratio": 1.0, "collector": {{"cluster": "jaeger", {collector}}}}}}}"#
    );
    let config = config
        .add_cluster("jaeger", collector_port)
        .plugin_configuration(&plugin);
    Envoy::start(&config, ports, 1)
}

fn counter(envoy: &Envoy, metric: &str, reason: Option<&str>) -> f64 {
    eprintln!(
        "DBG {:?}",
        envoy
            .prometheus_text()
            .lines()
            .filter(|l| l.starts_with("trace_"))
            .collect::<Vec<_>>()
    );
    envoy
        .samples(metric)
        .iter()
        .filter(|s| reason.is_none_or(|r| s.label("reason") == r))
        .map(|s| s.value)
        .sum()
}

fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    http("GET", &envoy.url(path), headers, "").unwrap()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn sampled_requests_reach_the_collector_as_opentelemetry_spans() {
    let upstream = OtelUpstream::start();
    let collector = Collector::start(&[], Answer::Status(200));
    let (config, ports) = GatewayConfig::gateway(upstream.port, free_port(), free_port());
    let config = config.add_cluster("jaeger", collector.port).plugin_configuration(
        r#"{"tracing": {"sampling_ratio": 1.0, "health": true, "collector": {"cluster": "jaeger", "batch_size": 10, "flush_interval_ms": 200, "service_name": "veza-edge"}}}"#,
    );
    let envoy = Envoy::start(&config, ports, 1);
    let before = now_nanos();

    // Continued and sampled: the span's parent is the caller's; the service's parent is
    // the gateway's span.
    let (status, body) = get(
        &envoy,
        "/api/v1/tracks/7?token=secret",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    );
    assert_eq!(status, 200);
    let service: Value = serde_json::from_str(&body).unwrap();
    let gateway_span = service["span"]["parent_span_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A new trace answered 503 by the service: an error span.
    let (status, body) = get(&envoy, "/api/v1/users/me", &[("x-upstream-status", "503")]);
    assert_eq!(status, 503);
    let failed: Value = serde_json::from_str(&body).unwrap();
    // Not sampled by the caller: no span.
    get(
        &envoy,
        "/api/v1/tracks/8",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )],
    );
    // No route: Envoy answers 404; the span is named by the method alone.
    assert_eq!(get(&envoy, "/nowhere", &[]).0, 404);
    // The gateway's own /live, traced when configured.
    assert_eq!(get(&envoy, "/live", &[]).0, 200);

    let bodies = poll(
        "three spans at the collector",
        Duration::from_secs(10),
        || {
            let bodies = collector.bodies();
            let spans = decode_otlp(&bodies);
            (spans.as_array().unwrap().len() >= 3).then_some(bodies)
        },
    );
    let after = now_nanos();
    let spans = decode_otlp(&bodies);
    let spans = spans.as_array().unwrap();
    assert_eq!(spans.len(), 4, "{spans:?}");
    for span in spans {
        assert_eq!(span["service"], "veza-edge");
        assert_eq!(span["scope"], "veza-observability");
        assert_eq!(span["kind"], 2, "SERVER");
        let (start, end) = (
            span["start"].as_u64().unwrap(),
            span["end"].as_u64().unwrap(),
        );
        assert!(before <= start && start <= end && end <= after, "{span}");
        assert!(span["attributes"]["user_agent.original"]
            .as_str()
            .unwrap()
            .starts_with("ureq/"));
    }
    let by_path = |path: &str| {
        spans
            .iter()
            .find(|s| s["attributes"]["url.path"] == path)
            .unwrap_or_else(|| panic!("no span for {path}: {spans:?}"))
    };
    let host = "127.0.0.1";
    let continued = by_path("/api/v1/tracks/7");
    assert_eq!(continued["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(continued["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(continued["span_id"], gateway_span.as_str());
    assert_eq!(continued["name"], "GET /api/v1/tracks/:id");
    assert_eq!(continued["status"], 0, "unset");
    assert_eq!(
        continued["attributes"],
        json!({
            "http.request.method": "GET",
            "url.path": "/api/v1/tracks/7",
            "url.scheme": "http",
            "http.route": "/api/v1/tracks/:id",
            "http.response.status_code": 200,
            "server.address": host,
            "user_agent.original": continued["attributes"]["user_agent.original"],
            "network.protocol.version": "1.1",
        })
    );
    let error = by_path("/api/v1/users/me");
    assert_eq!(error["trace_id"], failed["span"]["trace_id"]);
    assert_eq!(error["span_id"], failed["span"]["parent_span_id"]);
    assert_eq!(error["parent_span_id"], "", "a root span");
    assert_eq!(error["name"], "GET /api/v1/users/me");
    assert_eq!(error["status"], 2, "error");
    assert_eq!(error["attributes"]["http.response.status_code"], 503);
    let unrouted = by_path("/nowhere");
    assert_eq!(unrouted["name"], "GET");
    assert!(unrouted["attributes"]["http.route"].is_null());
    assert_eq!(unrouted["status"], 0);
    let live = by_path("/live");
    assert_eq!(live["name"], "GET /live");
    assert_eq!(live["attributes"]["http.response.status_code"], 200);

    poll("the exported counter", Duration::from_secs(5), || {
        (counter(&envoy, "trace_spans_exported_total", None) == 4.0).then_some(())
    });
    assert_eq!(counter(&envoy, "trace_spans_dropped_total", None), 0.0);
    assert_eq!(counter(&envoy, "trace_export_failures_total", None), 0.0);
    assert!(
        !bodies.concat().contains("secret"),
        "query strings stay out of spans"
    );
}

#[test]
fn a_collector_answering_503_is_retried_and_400_is_dropped() {
    let upstream = OtelUpstream::start();
    let collector = Collector::start(
        &[
            Answer::Status(503),
            Answer::Status(503),
            Answer::Status(200),
            Answer::Status(400),
        ],
        Answer::Status(200),
    );
    // Batches go only when full (two spans): the flush interval is a minute.
    let envoy = gateway(
        &upstream,
        collector.port,
        r#""batch_size": 2, "flush_interval_ms": 60000, "max_retries": 3, "retry_backoff_ms": 50"#,
    );
    // A batch of two: 503, 503, then accepted.
    for _ in 0..2 {
        assert_eq!(get(&envoy, "/api/v1/tracks/1", &[]).0, 200);
    }
    poll(
        "the retried batch to be accepted",
        Duration::from_secs(10),
        || (counter(&envoy, "trace_spans_exported_total", None) == 2.0).then_some(()),
    );
    assert_eq!(counter(&envoy, "trace_export_failures_total", None), 2.0);
    let bodies = collector.bodies();
    assert_eq!(bodies.len(), 3);
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "the same batch each time"
    );
    // The next batch: 400, not retried.
    for _ in 0..2 {
        assert_eq!(get(&envoy, "/api/v1/tracks/1", &[]).0, 200);
    }
    poll(
        "the rejected batch to be counted",
        Duration::from_secs(10),
        || (counter(&envoy, "trace_spans_dropped_total", Some("rejected")) == 2.0).then_some(()),
    );
    assert_eq!(collector.script_left(), 0);
    assert_eq!(collector.bodies().len(), 4);
    assert_eq!(counter(&envoy, "trace_export_failures_total", None), 3.0);
}

#[test]
fn a_dead_or_black_holing_collector_costs_counted_drops_and_no_traffic() {
    let upstream = OtelUpstream::start();
    let full_batches = r#""batch_size": 5, "flush_interval_ms": 60000, "retry_backoff_ms": 20"#;
    // Nobody listens: Envoy's own 503 (connection refused) is no answer from the collector,
    // so each batch is dropped at once, not retried.
    let dead = gateway(&upstream, free_port(), full_batches);
    for _ in 0..10 {
        assert_eq!(get(&dead, "/api/v1/tracks/1", &[]).0, 200);
    }
    poll(
        "the failed exports to be counted",
        Duration::from_secs(10),
        || {
            (counter(&dead, "trace_spans_dropped_total", Some("export_failed")) == 10.0)
                .then_some(())
        },
    );
    assert_eq!(counter(&dead, "trace_export_failures_total", None), 2.0);

    // A collector that never answers: the call times out, and its batch is dropped.
    let hole = Collector::start(&[], Answer::Hang);
    let timing_out = gateway(
        &upstream,
        hole.port,
        &format!(r#"{full_batches}, "timeout_ms": 300"#),
    );
    for _ in 0..5 {
        assert_eq!(get(&timing_out, "/api/v1/tracks/1", &[]).0, 200);
    }
    poll(
        "the timed-out batch to be counted",
        Duration::from_secs(10),
        || {
            (counter(
                &timing_out,
                "trace_spans_dropped_total",
                Some("export_failed"),
            ) == 5.0)
                .then_some(())
        },
    );
    assert_eq!(
        counter(&timing_out, "trace_export_failures_total", None),
        1.0
    );

    // While one batch waits (a minute's timeout), the queue holds at most max_queue spans and
    // the rest are dropped; requests are unaffected.
    let hole = Collector::start(&[], Answer::Hang);
    let envoy = gateway(
        &upstream,
        hole.port,
        &format!(r#"{full_batches}, "max_queue": 20, "timeout_ms": 60000"#),
    );
    for _ in 0..5 {
        assert_eq!(get(&envoy, "/api/v1/tracks/1", &[]).0, 200);
    }
    poll("a batch in flight", Duration::from_secs(10), || {
        (hole.bodies().len() == 1).then_some(())
    });
    for _ in 0..100 {
        assert_eq!(get(&envoy, "/api/v1/tracks/1", &[]).0, 200);
    }
    poll("queue_full drops", Duration::from_secs(10), || {
        (counter(&envoy, "trace_spans_dropped_total", Some("queue_full")) == 80.0).then_some(())
    });
    assert_eq!(counter(&envoy, "trace_spans_exported_total", None), 0.0);
    assert_eq!(hole.bodies().len(), 1, "one call at a time");
}
