//! The filter beside Envoy's own tracer (the connection manager's `tracing`, 100% sampling),
//! as Istio and Envoy Gateway run it, in front of a service traced with the OpenTelemetry
//! Python SDK (tests/interop/otel_upstream.py). With `tracing.propagation: "envoy"` there is
//! one trace per request: the service continues Envoy's span, which is in the tracer's own
//! export; `tracing.response_header` and the access log carry the context the service
//! received. Without it, the filter sees Envoy's tracer replace its context and drops its own
//! span instead of exporting an orphan.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use serde_json::Value;
use veza_test_harness::interop::{decode_otlp_protobuf, Answer, Collector, OtelUpstream};
use veza_test_harness::*;

const ENVOY_MODE: &str =
    r#"{"tracing": {"propagation": "envoy"}, "access_log": {"enabled": true}}"#;

/// With Envoy's tracer the trace id is Envoy's to return: its `%TRACE_ID%` in a response header.
const TRACE_ID_HEADER: &str = "            response_headers_to_add:\n            - header: { key: x-trace-id, value: \"%TRACE_ID%\" }\n";

/// Envoy's OpenTelemetry tracer, exporting OTLP/HTTP protobuf to `cluster`.
fn opentelemetry_tracer(cluster: &str) -> String {
    format!(
        "          tracing:\n            random_sampling: {{ value: 100 }}\n            provider:\n              \
         name: envoy.tracers.opentelemetry\n              typed_config:\n                \
         \"@type\": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig\n                \
         service_name: veza-gateway\n                http_service:\n                  \
         http_uri: {{ uri: \"http://{cluster}/v1/traces\", cluster: {cluster}, timeout: 1s }}\n"
    )
}

/// Envoy's Zipkin tracer reading B3 and, without it, W3C; writing both.
fn zipkin_tracer(cluster: &str) -> String {
    format!(
        "          tracing:\n            random_sampling: {{ value: 100 }}\n            provider:\n              \
         name: envoy.tracers.zipkin\n              typed_config:\n                \
         \"@type\": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig\n                \
         collector_cluster: {cluster}\n                collector_endpoint: /api/v2/spans\n                \
         collector_endpoint_version: HTTP_JSON\n                \
         trace_context_option: USE_B3_WITH_W3C_PROPAGATION\n"
    )
}

/// The gateway in front of the OpenTelemetry service with Envoy's `tracer` on, its spans to
/// `spans`.
fn gateway(upstream: &OtelUpstream, spans: &Collector, tracer: &str, plugin: &str) -> Envoy {
    let (config, ports) = GatewayConfig::gateway(upstream.port, free_port(), free_port());
    let config = config
        .replace_once(
            "          stat_prefix: veza_gateway\n",
            &format!("          stat_prefix: veza_gateway\n{tracer}"),
        )
        .replace_once(
            "            name: veza\n",
            &format!("            name: veza\n{TRACE_ID_HEADER}"),
        )
        .add_cluster("envoy_spans", spans.port)
        .plugin_configuration(plugin);
    Envoy::start(&config, ports, 1)
}

/// What the service saw for a request with `headers`, and the response's `x-trace-id`.
fn request(envoy: &Envoy, headers: &[(&str, &str)]) -> (Value, String) {
    let response = raw_exchange(
        envoy.ports.listener,
        &format!(
            "GET /api/v1/tracks/1 HTTP/1.1\r\nhost: veza\r\nconnection: close\r\n{}\r\n",
            headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\r\n"))
                .collect::<String>()
        ),
    );
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let trace_header = head
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .strip_prefix("x-trace-id: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (serde_json::from_str(body).unwrap(), trace_header)
}

/// The context a service propagator extracted: (trace id, span id).
fn extracted(seen: &Value, propagator: &str) -> Option<(String, String)> {
    let context = &seen["propagators"][propagator];
    Some((
        context["trace_id"].as_str()?.to_owned(),
        context["span_id"].as_str()?.to_owned(),
    ))
}

/// Envoy's exported spans, decoded by OpenTelemetry's protos, once `span_id` is among them.
fn envoy_span(spans: &Collector, span_id: &str) -> Value {
    poll(
        "Envoy's tracer to export the span",
        Duration::from_secs(20),
        || {
            let decoded = decode_otlp_protobuf(&spans.raw_bodies());

            decoded
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["span_id"] == span_id)
                .cloned()
        },
    )
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn with_the_opentelemetry_tracer_one_trace_reaches_the_service() {
    let upstream = OtelUpstream::start();
    let spans = Collector::start(&[], Answer::Status(200));
    let envoy = gateway(
        &upstream,
        &spans,
        &opentelemetry_tracer("envoy_spans"),
        ENVOY_MODE,
    );

    // W3C in: the service continues the caller's trace, under Envoy's span, which exists.
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (seen, trace_header) = request(&envoy, &[("traceparent", &traceparent)]);
    let seen_w3c = seen.clone();
    let (trace_id, parent) = extracted(&seen, "tracecontext").unwrap();
    assert_eq!(trace_id, CALLER_TRACE);
    assert_eq!(trace_header, CALLER_TRACE);
    let span = envoy_span(&spans, &parent);
    assert_eq!(span["trace_id"], CALLER_TRACE);
    assert_eq!(span["parent_span_id"], CALLER_SPAN);
    assert_eq!(seen["span"]["parent_span_id"], parent.as_str());

    // The access log line of that request joins the trace and the metric.
    let line = poll("the access log line", Duration::from_secs(10), || {
        envoy
            .access_log()
            .into_iter()
            .find(|l| l["trace_id"] == CALLER_TRACE)
    });
    assert_eq!(line["span_id"], parent.as_str());
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"], 200);
    assert_eq!(line["request_id"], seen_w3c["headers"]["x-request-id"]);
    assert_eq!(
        line["upstream_host"],
        format!("127.0.0.1:{}", upstream.port)
    );
    assert_eq!(line["response_flags"], "-");
    let counted = envoy.value(
        "http_requests_total",
        &[
            ("endpoint", line["endpoint"].as_str().unwrap()),
            ("service", line["service"].as_str().unwrap()),
            ("status", "200"),
        ],
    );
    assert_eq!(
        (line["endpoint"].as_str(), line["service"].as_str()),
        (Some("/api/v1/tracks/:id"), Some("backend-api"))
    );
    assert!(
        counted.is_some(),
        "the log's labels are a series the request counted"
    );

    // No context in: the response's trace id is the one the service saw.
    let (seen, trace_header) = request(&envoy, &[]);
    let (trace_id, parent) = extracted(&seen, "tracecontext").unwrap();
    assert_eq!(trace_header, trace_id);
    assert_eq!(envoy_span(&spans, &parent)["trace_id"], trace_id.as_str());

    // B3 in: Envoy's OpenTelemetry tracer reads W3C only, so it starts a new trace; the
    // caller's B3 header reaches the service unchanged (the filter writes nothing), where a
    // B3 reader would continue the caller's trace and a W3C reader Envoy's.
    let b3 = format!("{CALLER_TRACE}-{CALLER_SPAN}-1");
    let (seen, trace_header) = request(&envoy, &[("b3", &b3)]);
    let (w3c_trace, _) = extracted(&seen, "tracecontext").unwrap();
    assert_ne!(w3c_trace, CALLER_TRACE);
    assert_eq!(trace_header, w3c_trace);
    assert_eq!(seen["headers"]["b3"], b3.as_str());
    assert_eq!(
        extracted(&seen, "b3single"),
        Some((CALLER_TRACE.to_owned(), CALLER_SPAN.to_owned()))
    );

    // Jaeger in: no tracer of Envoy 1.40 reads uber-trace-id; the same as B3.
    let uber = format!("{CALLER_TRACE}:{CALLER_SPAN}:0:1");
    let (seen, trace_header) = request(&envoy, &[("uber-trace-id", &uber)]);
    let (w3c_trace, _) = extracted(&seen, "tracecontext").unwrap();
    assert_ne!(w3c_trace, CALLER_TRACE);
    assert_eq!(trace_header, w3c_trace);
    assert_eq!(seen["headers"]["uber-trace-id"], uber.as_str());
}

#[test]
fn with_the_zipkin_tracer_b3_callers_are_continued_in_both_formats() {
    let upstream = OtelUpstream::start();
    let spans = Collector::start(&[], Answer::Status(202));
    let envoy = gateway(&upstream, &spans, &zipkin_tracer("envoy_spans"), ENVOY_MODE);
    let b3 = format!("{CALLER_TRACE}-{CALLER_SPAN}-1");
    let (seen, trace_header) = request(&envoy, &[("b3", &b3)]);
    let (trace_id, parent) = extracted(&seen, "tracecontext").unwrap();
    assert_eq!(trace_id, CALLER_TRACE);
    assert_eq!(
        extracted(&seen, "b3multi"),
        Some((trace_id.clone(), parent.clone()))
    );
    assert_eq!(trace_header, CALLER_TRACE);
    // Envoy's span, in Zipkin's JSON, is the service's parent. In Zipkin's shared-span model
    // (the tracer's default) it joins the caller's span: same id, `shared`, kind SERVER.
    let span = poll("Envoy's Zipkin span", Duration::from_secs(20), || {
        spans
            .bodies()
            .iter()
            .filter_map(|b| serde_json::from_str::<Value>(b).ok())
            .flat_map(|b| b.as_array().cloned().unwrap_or_default())
            .find(|s| s["id"] == parent.as_str())
    });
    assert_eq!(span["traceId"], CALLER_TRACE);
    assert_eq!(parent, CALLER_SPAN);
    assert_eq!(span["shared"], true);
    assert_eq!(span["kind"], "SERVER");
}

#[test]
fn without_propagation_envoy_the_filter_drops_its_span_rather_than_orphan_it() {
    let upstream = OtelUpstream::start();
    let spans = Collector::start(&[], Answer::Status(200));
    let filter_spans = Collector::start(&[], Answer::Status(200));
    let (config, ports) = GatewayConfig::gateway(upstream.port, free_port(), free_port());
    let config = config
        .replace_once(
            "          stat_prefix: veza_gateway\n",
            &format!(
                "          stat_prefix: veza_gateway\n{}",
                opentelemetry_tracer("envoy_spans")
            ),
        )
        .add_cluster("envoy_spans", spans.port)
        .add_cluster("veza_spans", filter_spans.port)
        .plugin_configuration(
            r#"{"tracing": {"sampling_ratio": 1.0, "collector": {"cluster": "veza_spans", "flush_interval_ms": 100}}, "access_log": {"enabled": true}}"#,
        );
    let envoy = Envoy::start(&config, ports, 1);
    let (seen, _) = request(&envoy, &[]);
    let (trace_id, parent) = extracted(&seen, "tracecontext").unwrap();
    assert_eq!(envoy_span(&spans, &parent)["trace_id"], trace_id.as_str());
    envoy.wait_for(
        "trace_spans_dropped_total",
        &[("reason", "envoy_tracer")],
        1.0,
    );
    assert_eq!(envoy.value("trace_spans_exported_total", &[]), Some(0.0));
    assert!(filter_spans.bodies().is_empty(), "no orphan span exported");
    // The access log has the context the service saw, not the one the filter wrote.
    let line = poll("the access log line", Duration::from_secs(10), || {
        envoy.access_log().into_iter().next()
    });
    assert_eq!(
        (line["trace_id"].as_str(), line["span_id"].as_str()),
        (Some(trace_id.as_str()), Some(parent.as_str()))
    );
    assert!(envoy
        .flushed_log_text()
        .contains("Envoy's tracer replaced the trace context this filter wrote"));
}
