//! Choosing and emitting a context: precedence, conflicts, duplicates, sampling, forcing.

use super::*;
use crate::config::tracing::{self, DebugCredential, TracingConfig};

/// Ids 1, 2, 3, ... (span id first, then the trace id's two halves).
struct Counter(u64);

impl IdSource for Counter {
    fn next_u64(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// The defaults with W3C and Jaeger out, so every test sees both formats agree.
fn settings(configure: impl FnOnce(&mut TracingConfig)) -> TraceSettings {
    let mut config = TracingConfig {
        outgoing: vec![Format::TraceContext, Format::Jaeger],
        ..TracingConfig::default()
    };
    configure(&mut config);
    tracing::compile(config).unwrap()
}

#[test]
fn by_default_only_traceparent_goes_out() {
    let defaults = tracing::compile(TracingConfig::default()).unwrap();
    let decision = decide_for(&defaults, &[("uber-trace-id", JAEGER)]);
    let emitted = emit(&defaults, &decision);
    assert_eq!(
        emitted,
        [(
            TRACEPARENT,
            "00-1111111111111111aaaaaaaaaaaaaaaa-0000000000000001-00".to_owned()
        )]
    );
    // The Jaeger header it came with is replaced by nothing: removed.
    assert_eq!(
        stale(
            headers(&defaults, &[("uber-trace-id", JAEGER)]).present,
            written(&emitted)
        )
        .collect::<Vec<_>>(),
        [UBER_TRACE_ID]
    );
}

fn headers<'a>(settings: &TraceSettings, pairs: &'a [(&'a str, &'a str)]) -> TraceHeaders<'a> {
    TraceHeaders::collect(
        pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        settings,
    )
}

fn decide_for(settings: &TraceSettings, pairs: &[(&str, &str)]) -> Decision {
    decide(settings, &headers(settings, pairs), &mut Counter(0))
}

const W3C: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const JAEGER: &str = "1111111111111111aaaaaaaaaaaaaaaa:2222222222222222:0:0";
const B3_SINGLE: &str = "3333333333333333cccccccccccccccc-4444444444444444-1";

#[test]
fn no_context_starts_a_trace_with_random_ids() {
    let all = settings(|c| c.sampling_ratio = 1.0);
    let decision = decide_for(&all, &[]);
    assert_eq!(decision.span_id, SpanId(1));
    assert_eq!(decision.trace_id, TraceId((2 << 64) | 3));
    assert_eq!(decision.parent, None);
    assert!(decision.sampled && !decision.debug);
    assert_eq!(
        emit(&all, &decision),
        [
            (
                TRACEPARENT,
                "00-00000000000000020000000000000003-0000000000000001-01".to_owned()
            ),
            (
                UBER_TRACE_ID,
                "00000000000000020000000000000003:0000000000000001:0:1".to_owned()
            ),
        ]
    );
    let none = settings(|c| c.sampling_ratio = 0.0);
    assert!(!decide_for(&none, &[]).sampled);
}

#[test]
fn precedence_picks_one_context_and_every_format_agrees() {
    let defaults = settings(|_| {});
    let all = [
        ("b3", B3_SINGLE),
        ("uber-trace-id", JAEGER),
        ("traceparent", W3C),
        ("tracestate", "congo=t61rcWkgMzE"),
    ];
    let decision = decide_for(&defaults, &all);
    assert_eq!(decision.continued_from, Some(Format::TraceContext));
    assert_eq!(
        decision.trace_id,
        TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736)
    );
    assert_eq!(decision.parent, Some(SpanId(0x00f067aa0ba902b7)));
    assert_eq!(decision.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    let emitted = emit(&defaults, &decision);
    assert_eq!(
        emitted,
        [
            (
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000001-01".to_owned()
            ),
            (TRACESTATE, "congo=t61rcWkgMzE".to_owned()),
            (
                UBER_TRACE_ID,
                "4bf92f3577b34da6a3ce929d0e0e4736:0000000000000001:0:1".to_owned()
            ),
        ]
    );
    // The B3 header of the losing format is removed, not passed on stale.
    let present = headers(&defaults, &all).present;
    assert_eq!(
        stale(present, written(&emitted)).collect::<Vec<_>>(),
        [B3_SINGLE_NAME]
    );

    // Jaeger first: its context wins, tracestate is dropped with the W3C context.
    let jaeger_first = settings(|c| c.incoming = vec![Format::Jaeger, Format::TraceContext]);
    let decision = decide_for(&jaeger_first, &all);
    assert_eq!(decision.continued_from, Some(Format::Jaeger));
    assert_eq!(
        decision.trace_id,
        TraceId(0x1111111111111111aaaaaaaaaaaaaaaa)
    );
    assert_eq!(
        (decision.sampled, decision.tracestate.as_deref()),
        (false, None)
    );
    let emitted = emit(&jaeger_first, &decision);
    assert_eq!(
        stale(headers(&jaeger_first, &all).present, written(&emitted)).collect::<Vec<_>>(),
        [TRACESTATE, B3_SINGLE_NAME]
    );
}

const B3_SINGLE_NAME: &str = super::B3_SINGLE;

#[test]
fn an_invalid_or_repeated_traceparent_falls_to_the_next_format_or_restarts() {
    let defaults = settings(|c| c.sampling_ratio = 0.0);
    let upper = W3C.to_uppercase();
    for pairs in [
        vec![("traceparent", upper.as_str()), ("tracestate", "a=b")],
        vec![
            ("traceparent", W3C),
            ("traceparent", W3C),
            ("tracestate", "a=b"),
        ],
    ] {
        let decision = decide_for(&defaults, &pairs);
        assert_eq!(decision.continued_from, None, "{pairs:?}");
        assert_eq!(decision.tracestate, None);
        let emitted = emit(&defaults, &decision);
        // The malformed value and its tracestate are replaced or removed.
        assert_eq!(
            stale(headers(&defaults, &pairs).present, written(&emitted)).collect::<Vec<_>>(),
            [TRACESTATE]
        );
    }
    let with_jaeger = [("traceparent", "garbage"), ("uber-trace-id", JAEGER)];
    assert_eq!(
        decide_for(&defaults, &with_jaeger).continued_from,
        Some(Format::Jaeger)
    );
}

#[test]
fn b3_deferred_sampling_uses_the_ratio_and_b3_zero_applies_to_a_new_trace() {
    let all = settings(|c| c.sampling_ratio = 1.0);
    let deferred = [
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ];
    let decision = decide_for(&all, &deferred);
    assert_eq!(decision.continued_from, Some(Format::B3));
    assert!(decision.sampled);
    let decision = decide_for(&all, &[("b3", "0")]);
    assert_eq!(decision.continued_from, None);
    assert!(!decision.sampled);
}

#[test]
fn forcing_needs_the_configured_credential() {
    let credential = DebugCredential {
        header: "x-veza-trace-debug".into(),
        value: "0123456789abcdef-secret".into(),
    };
    let trusting = settings(|c| {
        c.sampling_ratio = 0.0;
        c.debug_credential = Some(credential.clone());
    });
    let debug_jaeger = "1111111111111111aaaaaaaaaaaaaaaa:2222222222222222:0:3";
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut pairs = vec![("x-veza-trace-debug", "0123456789abcdef-secret")];
        pairs.extend_from_slice(extra);
        pairs
    };
    // Untrusted: the debug flag is dropped (the sampled bit, a parent decision, is kept).
    let decision = decide_for(&trusting, &[("uber-trace-id", debug_jaeger)]);
    assert_eq!((decision.sampled, decision.debug), (true, false));
    assert!(emit(&trusting, &decision)[1].1.ends_with(":0:1"));
    // jaeger-debug-id from an outsider: an ordinary unsampled new trace.
    let decision = decide_for(&trusting, &[("jaeger-debug-id", "ticket-42")]);
    assert_eq!((decision.sampled, decision.debug), (false, false));
    let decision = decide_for(
        &trusting,
        &[("x-veza-trace-debug", "wrong"), ("jaeger-debug-id", "x")],
    );
    assert_eq!((decision.sampled, decision.debug), (false, false));
    // Trusted: forced.
    let decision = decide_for(&trusting, &with(&[("jaeger-debug-id", "ticket-42")]));
    assert_eq!((decision.sampled, decision.debug), (true, true));
    let decision = decide_for(&trusting, &with(&[("uber-trace-id", debug_jaeger)]));
    assert_eq!((decision.sampled, decision.debug), (true, true));
    assert!(emit(&trusting, &decision)[1].1.ends_with(":0:3"));
    let decision = decide_for(&trusting, &with(&[("b3", "d")]));
    assert_eq!((decision.sampled, decision.debug), (true, true));
    // No credential configured: nobody can force.
    let defaults = settings(|c| c.sampling_ratio = 0.0);
    let pairs = with(&[("jaeger-debug-id", "x")]);
    assert!(!decide_for(&defaults, &pairs).sampled);
}

#[test]
fn b3_outgoing_forms() {
    let b3 = settings(|c| c.outgoing = vec![Format::B3]);
    let decision = decide_for(&b3, &[("traceparent", W3C)]);
    assert_eq!(
        emit(&b3, &decision),
        [
            (
                "x-b3-traceid",
                "4bf92f3577b34da6a3ce929d0e0e4736".to_owned()
            ),
            ("x-b3-spanid", "0000000000000001".to_owned()),
            ("x-b3-parentspanid", "00f067aa0ba902b7".to_owned()),
            ("x-b3-sampled", "1".to_owned()),
        ]
    );
    let single = settings(|c| c.outgoing = vec![Format::B3Single]);
    assert_eq!(
        emit(&single, &decision),
        [(
            "b3",
            "4bf92f3577b34da6a3ce929d0e0e4736-0000000000000001-1-00f067aa0ba902b7".to_owned()
        )]
    );
}

#[test]
fn configuration_errors_name_the_field() {
    let cases = [
        (
            r#"{"tracing": {"sampling_ratio": 1.5}}"#,
            "tracing.sampling_ratio: must be from 0 to 1 (got 1.5)",
        ),
        (
            r#"{"tracing": {"incoming": ["b3-single"]}}"#,
            "tracing.incoming: \"b3-single\" is an outgoing format",
        ),
        (
            r#"{"tracing": {"outgoing": ["traceparent", "traceparent"]}}"#,
            "tracing.outgoing[1]: listed twice",
        ),
        (
            r#"{"tracing": {"outgoing": ["b3", "b3-single"]}}"#,
            "tracing.outgoing: \"b3\" and \"b3-single\"",
        ),
        (
            r#"{"tracing": {"outgoing": ["zipkin"]}}"#,
            "tracing.outgoing[0]: invalid configuration JSON: unknown variant `zipkin`",
        ),
        (
            r#"{"tracing": {"debug_credential": {"header": "x-debug", "value": "short"}}}"#,
            "tracing.debug_credential.value: must be at least 16 characters",
        ),
        (
            r#"{"tracing": {"debug_credential": {"header": "X-B3-Flags", "value": "0123456789abcdef"}}}"#,
            "tracing.debug_credential.header: \"x-b3-flags\" is a trace header the gateway rewrites",
        ),
        (
            r#"{"tracing": {"response_header": "x trace"}}"#,
            "tracing.response_header: \"x trace\" is not an HTTP header name",
        ),
    ];
    for (json, expected) in cases {
        let err = crate::config::load(Some(json.as_bytes()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(expected),
            "{json}\n  gave: {err}\n  want: {expected}"
        );
    }
}

#[test]
fn no_incoming_formats_ignores_every_client_context() {
    let none = settings(|c| {
        c.incoming = vec![];
        c.sampling_ratio = 0.0;
    });
    let pairs = [
        ("traceparent", W3C),
        ("uber-trace-id", JAEGER),
        ("b3", B3_SINGLE),
    ];
    let decision = decide_for(&none, &pairs);
    assert_eq!((decision.continued_from, decision.sampled), (None, false));
    let emitted = emit(&none, &decision);
    assert_eq!(
        stale(headers(&none, &pairs).present, written(&emitted)).collect::<Vec<_>>(),
        [B3_SINGLE_NAME]
    );
}

#[test]
fn what_a_service_received_is_read_in_its_tracers_order() {
    let pairs = |list: &'static [(&'static str, &'static str)]| {
        list.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))
    };
    let w3c = received(pairs(&[
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ]));
    assert_eq!(
        w3c,
        Some((
            TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736),
            SpanId(0x00f067aa0ba902b7)
        ))
    );
    let b3 = received(pairs(&[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
    ]));
    assert_eq!(
        b3,
        Some((
            TraceId(0x80f198ee56343ba864fe8b2a57d3eff7),
            SpanId(0xe457b5a2e4d86bd1)
        ))
    );
    let jaeger = received(pairs(&[("uber-trace-id", "abc:def:0:1")]));
    assert_eq!(jaeger, Some((TraceId(0xabc), SpanId(0xdef))));
    assert_eq!(received(pairs(&[("traceparent", "garbage")])), None);
    assert_eq!(received(pairs(&[])), None);
}

#[test]
fn a_header_the_request_carried_is_replaced_and_only_then() {
    let defaults = settings(|_| {});
    let pairs = [(TRACEPARENT, "x"), (B3_SINGLE_NAME, "y")];
    let present = headers(&defaults, &pairs).present;
    assert!(carried(present, owned_bit(TRACEPARENT)));
    assert!(carried(present, owned_bit(B3_SINGLE_NAME)));
    assert!(!carried(present, owned_bit(TRACESTATE)));
    assert!(!carried(0, owned_bit(TRACEPARENT)));
    // A name the filter does not own is never added beside a value it cannot see.
    assert!(carried(0, owned_bit("x-request-id")));
}

/// `present` marks each owned header by its index in `OWNED_HEADERS`, and nothing else.
#[test]
fn present_marks_each_owned_header_by_its_index() {
    let defaults = settings(|_| {});
    for (index, name) in OWNED_HEADERS.iter().enumerate() {
        assert_eq!(
            headers(&defaults, &[(name, "x")]).present,
            1 << index,
            "{name}"
        );
        assert!(carried(1 << index, owned_bit(name)));
    }
    let others = [
        (":path", "/"),
        ("x-b3", "1"),
        ("traceparents", "x"),
        ("b", "1"),
    ];
    assert_eq!(headers(&defaults, &others).present, 0);
}

/// The outgoing headers as a list, for the assertions.
fn emit(settings: &TraceSettings, decision: &Decision) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    outgoing(settings, decision, |name, value| {
        headers.push((name, String::from_utf8(value.to_vec()).unwrap()));
    });
    headers
}

/// The owned-header bits of what was emitted.
fn written(emitted: &[(&str, String)]) -> u16 {
    emitted
        .iter()
        .fold(0, |bits, (name, _)| bits | owned_bit(name))
}

/// The debug credential is found under any header name the configuration accepts.
#[test]
fn the_debug_credential_is_found_under_any_name() {
    for name in ["x-veza-trace-debug", "authorization-debug", "x-b3", "b"] {
        let credential = DebugCredential {
            header: name.to_owned(),
            value: "0123456789abcdef".to_owned(),
        };
        let settings = settings(|c| c.debug_credential = Some(credential.clone()));
        let right = [(":path", "/"), (name, " 0123456789abcdef ")];
        assert!(headers(&settings, &right).trusted, "{name}");
        let wrong = [(name, "0123456789abcdeX")];
        assert!(!headers(&settings, &wrong).trusted, "{name}");
    }
}
