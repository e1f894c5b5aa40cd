//! Trace context, end to end: the real Envoy with the real `.wasm` in front of a service
//! traced with the OpenTelemetry Python SDK (tests/interop/otel_upstream.py). For each
//! incoming format, and for none, the service's own propagators must continue the gateway's
//! trace: same trace id, the gateway's span as parent, the sampled decision honoured.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::Value;
use veza_test_harness::interop::OtelUpstream;
use veza_test_harness::*;

fn gateway(upstream: &OtelUpstream, plugin_configuration: &str) -> Envoy {
    let (config, ports) = GatewayConfig::gateway(upstream.port, free_port(), free_port());
    Envoy::start(&config.plugin_configuration(plugin_configuration), ports, 1)
}

/// What the OpenTelemetry service saw for a request sent with `headers`.
fn seen(envoy: &Envoy, headers: &[(&str, &str)]) -> Value {
    let (status, body) = http("GET", &envoy.url("/api/v1/tracks/1"), headers, "").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Every propagator in `formats` saw one context, the service's span continued it, and the
/// gateway's span is new; returns (trace id, gateway span id).
fn assert_continued(seen: &Value, formats: &[&str], sampled: bool) -> (String, String) {
    let first = &seen["propagators"][formats[0]];
    assert!(first.is_object(), "{} saw no context: {seen}", formats[0]);
    for format in formats {
        assert_eq!(
            &seen["propagators"][format], first,
            "{format} disagrees: {seen}"
        );
    }
    let trace_id = first["trace_id"].as_str().unwrap().to_owned();
    let gateway_span = first["span_id"].as_str().unwrap().to_owned();
    assert_eq!(first["sampled"], sampled, "{seen}");
    let span = &seen["span"];
    assert_eq!(span["trace_id"], trace_id.as_str());
    if sampled {
        assert_eq!(span["parent_span_id"], gateway_span.as_str());
    } else {
        // The SDK keeps no parent on a span its sampler dropped.
        assert!(span["parent_span_id"].is_null());
    }
    assert_eq!(span["sampled"], sampled);
    assert_eq!(span["recording"], sampled);
    // Jaeger's own client, when the gateway sends uber-trace-id.
    if !seen["headers"]["uber-trace-id"].is_null() {
        let jaeger = &seen["jaeger_client"];
        assert_eq!(jaeger["trace_id"], trace_id.as_str(), "{seen}");
        assert_eq!(jaeger["span_id"], gateway_span.as_str());
        assert_eq!(jaeger["sampled"], sampled);
        assert_eq!(jaeger["child"]["trace_id"], trace_id.as_str());
        assert_eq!(jaeger["child"]["parent_span_id"], gateway_span.as_str());
        assert_eq!(jaeger["child"]["sampled"], sampled);
    }
    (trace_id, gateway_span)
}

/// W3C and Jaeger out, as a platform with services on Jaeger's own clients configures it.
const BOTH_FORMATS: [&str; 2] = ["tracecontext", "jaeger"];

#[test]
fn the_services_tracer_continues_the_gateways_trace_for_every_incoming_format() {
    let upstream = OtelUpstream::start();
    let envoy = gateway(
        &upstream,
        r#"{"tracing": {"sampling_ratio": 1.0, "outgoing": ["traceparent", "uber-trace-id"]}}"#,
    );

    // W3C, sampled, with tracestate and Jaeger baggage kept.
    let seen_w3c = seen(
        &envoy,
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("uberctx-user", "listener%201"),
        ],
    );
    let (trace, span) = assert_continued(&seen_w3c, &BOTH_FORMATS, true);
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(span, "00f067aa0ba902b7", "the gateway's span is its own");
    assert_eq!(seen_w3c["headers"]["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(seen_w3c["headers"]["uberctx-user"], "listener%201");
    assert_eq!(
        seen_w3c["jaeger_client"]["baggage"],
        serde_json::json!({"user": "listener 1"})
    );
    assert!(seen_w3c["headers"]["x-request-id"].is_string());
    assert_eq!(
        seen_w3c["headers"]["uber-trace-id"],
        format!("{trace}:{span}:0:1").as_str()
    );

    // The context after ninety other headers (Envoy allows a hundred): the native build lists
    // that many on the heap, not on its stack.
    let padding: Vec<String> = (0..90).map(|i| format!("x-pad-{i}")).collect();
    let mut crowded: Vec<(&str, &str)> = padding.iter().map(|name| (name.as_str(), "v")).collect();
    crowded.push((
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ));
    let (trace, _) = assert_continued(&seen(&envoy, &crowded), &BOTH_FORMATS, true);
    assert_eq!(trace, "0af7651916cd43dd8448eb211c80319c");

    // W3C, not sampled: kept (parent-based), though the ratio samples every new trace.
    let not_sampled = seen(
        &envoy,
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )],
    );
    assert_continued(&not_sampled, &BOTH_FORMATS, false);

    // Jaeger with short ids, URL-encoded, as some clients send it.
    let jaeger = seen(&envoy, &[("uber-trace-id", "abc123%3Adef456%3A0%3A1")]);
    let (trace, _) = assert_continued(&jaeger, &BOTH_FORMATS, true);
    assert_eq!(trace, "00000000000000000000000000abc123");

    // B3 single, not sampled.
    let b3 = seen(
        &envoy,
        &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")],
    );
    let (trace, _) = assert_continued(&b3, &BOTH_FORMATS, false);
    assert_eq!(trace, "80f198ee56343ba864fe8b2a57d3eff7");
    assert!(
        b3["headers"]["b3"].is_null(),
        "the incoming b3 is not passed on stale"
    );

    // B3 multi with the decision deferred: the ratio (1.0) decides.
    let deferred = seen(
        &envoy,
        &[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ],
    );
    let (trace, _) = assert_continued(&deferred, &BOTH_FORMATS, true);
    assert_eq!(trace, "0000000000000000463ac35c9f6413ad");

    // No context: a new trace, the same in both formats.
    let new = seen(&envoy, &[]);
    let (trace, span) = assert_continued(&new, &BOTH_FORMATS, true);
    assert_ne!(trace, "0".repeat(32));
    assert_ne!(span, "0".repeat(16));
    let again = seen(&envoy, &[]);
    assert_ne!(
        assert_continued(&again, &BOTH_FORMATS, true).0,
        trace,
        "each request starts its own trace"
    );

    // A malformed traceparent restarts the trace and drops its tracestate.
    let malformed = seen(
        &envoy,
        &[
            (
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    );
    let (trace, _) = assert_continued(&malformed, &BOTH_FORMATS, true);
    assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(malformed["headers"]["tracestate"].is_null());

    // Conflicting formats: traceparent wins, and the Jaeger header no longer disagrees.
    let conflict = seen(
        &envoy,
        &[
            (
                "uber-trace-id",
                "1111111111111111aaaaaaaaaaaaaaaa:2222222222222222:0:0",
            ),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    );
    let (trace, _) = assert_continued(&conflict, &BOTH_FORMATS, true);
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn b3_out_and_the_trace_id_in_the_response() {
    let upstream = OtelUpstream::start();
    let envoy = gateway(
        &upstream,
        r#"{"tracing": {"sampling_ratio": 0.0, "outgoing": ["traceparent", "b3"], "response_header": "x-trace-id"}}"#,
    );
    let seen_b3 = seen(
        &envoy,
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    );
    assert_continued(&seen_b3, &["tracecontext", "b3multi"], true);
    assert_eq!(seen_b3["headers"]["x-b3-parentspanid"], "00f067aa0ba902b7");
    assert!(seen_b3["headers"]["uber-trace-id"].is_null());

    // Sampling ratio 0: a new trace is not sampled, and every format says so.
    let new = seen(&envoy, &[]);
    let (trace, _) = assert_continued(&new, &["tracecontext", "b3multi"], false);

    // The trace id, for a support ticket.
    let response = ureq::get(&envoy.url("/api/v1/tracks/1"))
        .set(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .call()
        .unwrap();
    assert_eq!(
        response.header("x-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
}

/// The `traceparent` the upstream saw on a WebSocket upgrade it refuses with a 200 (Envoy
/// drops that answer's body; the upstream repeats the header in its response headers).
fn upgrade_traceparent(envoy: &Envoy) -> String {
    let answer = raw_exchange(
        envoy.ports.listener,
        "GET /api/v1/tracks/1 HTTP/1.1\r\nhost: veza\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
        .lines()
        .find_map(|line| line.strip_prefix("x-seen-traceparent: "))
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned()
}

#[test]
fn websocket_upgrades_get_a_context_unless_configured_not_to() {
    let upstream = OtelUpstream::start();
    let traced = gateway(&upstream, r#"{"tracing": {"sampling_ratio": 1.0}}"#);
    // By default only `traceparent` goes out: OpenTelemetry's SDKs read it.
    let plain = seen(&traced, &[]);
    assert_continued(&plain, &["tracecontext"], true);
    assert!(plain["headers"]["uber-trace-id"].is_null(), "{plain}");
    let traceparent = upgrade_traceparent(&traced);
    assert_eq!(traceparent.len(), 55, "{traceparent}");
    assert!(
        traceparent.starts_with("00-") && traceparent.ends_with("-01"),
        "{traceparent}"
    );
    let untraced = gateway(
        &upstream,
        r#"{"tracing": {"sampling_ratio": 1.0, "websocket": false}}"#,
    );
    assert_eq!(upgrade_traceparent(&untraced), "none");
}

#[test]
fn only_the_configured_credential_can_force_a_trace() {
    let upstream = OtelUpstream::start();
    let envoy = gateway(
        &upstream,
        r#"{"tracing": {"sampling_ratio": 0.0, "outgoing": ["traceparent", "uber-trace-id"], "debug_credential": {"header": "x-veza-trace-debug", "value": "0123456789abcdef-secret"}}}"#,
    );
    let debug_jaeger = "1111111111111111aaaaaaaaaaaaaaaa:2222222222222222:0:3";
    // An outsider's jaeger-debug-id starts an ordinary, unsampled trace.
    let outsider = seen(&envoy, &[("jaeger-debug-id", "please-trace-me")]);
    assert_continued(&outsider, &BOTH_FORMATS, false);
    // An outsider's debug flag is dropped; the sampled bit, a parent decision, is kept.
    let flagged = seen(&envoy, &[("uber-trace-id", debug_jaeger)]);
    assert_continued(&flagged, &BOTH_FORMATS, true);
    assert!(flagged["headers"]["uber-trace-id"]
        .as_str()
        .unwrap()
        .ends_with(":0:1"));
    // A wrong credential is an outsider.
    let wrong = seen(
        &envoy,
        &[("x-veza-trace-debug", "guess"), ("jaeger-debug-id", "x")],
    );
    assert_continued(&wrong, &BOTH_FORMATS, false);
    // The credential forces it: sampled, and debug in the Jaeger flags.
    let trusted = seen(
        &envoy,
        &[
            ("x-veza-trace-debug", "0123456789abcdef-secret"),
            ("jaeger-debug-id", "ticket-42"),
        ],
    );
    assert_continued(&trusted, &BOTH_FORMATS, true);
    assert!(trusted["headers"]["uber-trace-id"]
        .as_str()
        .unwrap()
        .ends_with(":0:3"));
    assert!(
        !envoy.flushed_log_text().contains("0123456789abcdef-secret"),
        "the credential is never logged"
    );
}

/// The gateway with a route ahead of the API's that matches any request carrying a
/// `traceparent` and answers 299 itself.
fn with_trace_header_route(upstream: &OtelUpstream, plugin_configuration: &str) -> Envoy {
    let (config, ports) = GatewayConfig::gateway(upstream.port, free_port(), free_port());
    let config = config
        .replace_once(
            "              - match: { prefix: /api/ }\n",
            "              - match: { prefix: /api/, headers: [{ name: traceparent, present_match: true }] }\n                \
             direct_response: { status: 299 }\n              - match: { prefix: /api/ }\n",
        )
        .plugin_configuration(plugin_configuration);
    Envoy::start(&config, ports, 1)
}

/// Envoy picks the route before the filter runs. It clears it when a Wasm filter writes a
/// request header, and when the native build asks (`tracing.clear_route_cache`): the route is
/// then matched again with the gateway's `traceparent`, and a route that matches on a trace
/// header sees the gateway's value, whether or not the client sent one.
#[test]
fn routes_are_matched_again_after_the_trace_header_is_written_where_envoy_or_the_config_says() {
    let upstream = OtelUpstream::start();
    let status = |envoy: &Envoy, headers: &[(&str, &str)]| {
        http("GET", &envoy.url("/api/v1/tracks/1"), headers, "")
            .unwrap()
            .0
    };
    let incoming = (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    let tracing = with_trace_header_route(&upstream, "");
    assert_eq!(status(&tracing, &[incoming]), 299);
    // None arrives: the route without the header was picked first, then the filter wrote one.
    // Envoy matches again after a Wasm filter's write; the native build keeps the route.
    let rematched = match Build::selected() {
        Build::Wasm => 299,
        Build::Native => 200,
    };
    assert_eq!(status(&tracing, &[]), rematched);
    let clearing =
        with_trace_header_route(&upstream, r#"{"tracing": {"clear_route_cache": true}}"#);
    assert_eq!(status(&clearing, &[]), 299);
    // With no trace header written, the same request keeps the first route.
    let untraced = with_trace_header_route(&upstream, r#"{"tracing": {"enabled": false}}"#);
    assert_eq!(status(&untraced, &[]), 200);
}
