//! Differential property tests: the filter's trace-header parsers and emitters against
//! OpenTelemetry's own propagators (W3C, Jaeger, B3), and its WebSocket frame reader against
//! tungstenite's frame codec. Where the filter's parser accepts a value, the reference must
//! read the same context from it (or refuse it for a documented reason); everything the filter
//! emits, the reference must read back exactly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::io::Cursor;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use proptest::prelude::*;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use veza_observability::trace::{b3, jaeger, w3c, SpanId, TraceId};
use veza_observability::websocket::frames::{Direction, FrameReader, MessageKind};

/// What an OpenTelemetry propagator extracts: (trace id, span id, sampled), if valid.
fn extract(
    propagator: &dyn TextMapPropagator,
    headers: &[(&str, String)],
) -> Option<(u128, u64, bool)> {
    let carrier: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let context = propagator.extract(&carrier);
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            u128::from_be_bytes(span_context.trace_id().to_bytes()),
            u64::from_be_bytes(span_context.span_id().to_bytes()),
            span_context.is_sampled(),
        )
    })
}

fn hex_string(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[0-9a-fA-F]{{0,{max}}}")).unwrap()
}

/// Values shaped like a traceparent, right or subtly wrong.
fn traceparent_like() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            any::<u128>(),
            any::<u64>(),
            0u8..=255,
            prop_oneof![Just(0u8), 1u8..=254, Just(255u8)]
        )
            .prop_map(|(t, s, f, v)| format!("{v:02x}-{t:032x}-{s:016x}-{f:02x}")),
        (hex_string(3), hex_string(33), hex_string(17), hex_string(3))
            .prop_map(|(v, t, s, f)| format!("{v}-{t}-{s}-{f}")),
        "[0-9a-f-]{0,60}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the filter writes, OpenTelemetry reads back exactly.
    #[test]
    fn every_emitted_traceparent_is_read_back(trace in 1u128.., span in 1u64.., sampled: bool) {
        let value = w3c::traceparent(TraceId(trace), SpanId(span), sampled);
        let read = extract(&TraceContextPropagator::new(), &[("traceparent", value.to_string())]);
        prop_assert_eq!(read, Some((trace, span, sampled)), "{}", value);
    }

    /// A traceparent the filter continues, OpenTelemetry continues with the same context;
    /// the one deliberate difference: W3C allows any version-00 flags, OpenTelemetry's Rust
    /// propagator none above 02.
    #[test]
    fn accepted_traceparents_agree(value in traceparent_like()) {
        if let Some(ours) = w3c::parse_traceparent(value.as_bytes()) {
            let reference = extract(&TraceContextPropagator::new(), &[("traceparent", value.to_string())]);
            let flags_above_2 = value.starts_with("00-")
                && u8::from_str_radix(&value[53..55], 16).is_ok_and(|f| f > 2);
            match reference {
                Some(read) => prop_assert_eq!(
                    read,
                    (ours.trace_id.0, ours.parent.unwrap().0, ours.sampled.unwrap()),
                    "{}", value
                ),
                None => prop_assert!(flags_above_2, "only OpenTelemetry refused {}", value),
            }
        }
    }

    #[test]
    fn every_emitted_uber_trace_id_is_read_back(trace in 1u128.., span in 1u64.., sampled: bool, debug: bool) {
        let value = jaeger::uber_trace_id(TraceId(trace), SpanId(span), sampled, debug);
        let read = extract(&opentelemetry_jaeger_propagator::Propagator::new(), &[("uber-trace-id", value.to_string())]);
        prop_assert_eq!(read, Some((trace, span, sampled)), "{}", value);
    }

    /// Flags 0 to 3, what Jaeger clients send: parsers disagree on the base of longer flags
    /// (OpenTelemetry's reads them as decimal, Jaeger's spec and the filter as hex), which is
    /// why the filter only ever writes 0, 1 or 3.
    #[test]
    fn accepted_uber_trace_ids_agree(
        trace in hex_string(32), span in hex_string(16), parent in hex_string(16), flags in 0u8..=3,
        encoded: bool,
    ) {
        let separator = if encoded { "%3A" } else { ":" };
        let value = [trace, span, parent, format!("{flags:x}")].join(separator);
        if let Some(ours) = jaeger::parse(value.as_bytes()) {
            let reference = extract(&opentelemetry_jaeger_propagator::Propagator::new(), &[("uber-trace-id", value.to_string())]);
            prop_assert_eq!(
                reference,
                Some((ours.trace_id.0, ours.parent.unwrap().0, ours.sampled.unwrap())),
                "{}", value
            );
        }
    }

    #[test]
    fn every_emitted_b3_is_read_back(trace in 1u128.., span in 1u64.., parent: Option<u64>, sampled: bool) {
        let parent = parent.filter(|p| *p != 0).map(SpanId);
        let mut single = String::new();
        b3::single(TraceId(trace), SpanId(span), parent, sampled, false, |_, value| {
            single = String::from_utf8(value.to_vec()).unwrap();
        });
        let read = extract(
            &opentelemetry_zipkin::Propagator::with_encoding(opentelemetry_zipkin::B3Encoding::SingleHeader),
            &[("b3", single.clone())],
        );
        prop_assert_eq!(read, Some((trace, span, sampled)), "{}", single);
        let mut multi = Vec::new();
        b3::multi_headers(TraceId(trace), SpanId(span), parent, sampled, false, |name, value| {
            multi.push((name, String::from_utf8(value.to_vec()).unwrap()));
        });
        let read = extract(&opentelemetry_zipkin::Propagator::new(), &multi);
        prop_assert_eq!(read, Some((trace, span, sampled)), "{:?}", multi);
    }
}

/// One frame of a generated conversation.
#[derive(Debug, Clone)]
struct GenFrame {
    opcode: OpCode,
    fin: bool,
    payload: Vec<u8>,
    mask: [u8; 4],
}

/// A valid client-to-server stream: data messages, some fragmented, with control frames
/// between fragments; and the kinds of the messages it holds.
fn conversation() -> impl Strategy<Value = (Vec<GenFrame>, Vec<MessageKind>)> {
    let message = (
        prop_oneof![Just(Data::Text), Just(Data::Binary)],
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..4),
        proptest::collection::vec(prop_oneof![Just(Control::Ping), Just(Control::Pong)], 0..3),
        any::<[u8; 4]>(),
    );
    proptest::collection::vec(message, 1..6).prop_map(|messages| {
        let mut frames = Vec::new();
        let mut kinds = Vec::new();
        for (data, fragments, controls, mask) in messages {
            let count = fragments.len();
            for (i, payload) in fragments.into_iter().enumerate() {
                let opcode = if i == 0 {
                    OpCode::Data(data)
                } else {
                    OpCode::Data(Data::Continue)
                };
                frames.push(GenFrame {
                    opcode,
                    fin: i + 1 == count,
                    payload,
                    mask,
                });
                // Control frames may come between the fragments of a message.
                if i + 1 < count {
                    for control in &controls {
                        frames.push(GenFrame {
                            opcode: OpCode::Control(*control),
                            fin: true,
                            payload: vec![1, 2],
                            mask,
                        });
                        kinds.push(match control {
                            Control::Ping => MessageKind::Ping,
                            _ => MessageKind::Pong,
                        });
                    }
                }
            }
            kinds.push(if data == Data::Text {
                MessageKind::Text
            } else {
                MessageKind::Binary
            });
        }
        (frames, kinds)
    })
}

fn encode(frames: &[GenFrame]) -> Vec<u8> {
    let mut wire = Vec::new();
    for generated in frames {
        let payload = generated.payload.clone();
        let mut frame = match generated.opcode {
            OpCode::Control(Control::Ping) => Frame::ping(payload),
            OpCode::Control(_) => Frame::pong(payload),
            data => Frame::message(payload, data, generated.fin),
        };
        frame.header_mut().mask = Some(generated.mask);
        frame.format(&mut wire).unwrap();
    }
    wire
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Frames tungstenite writes, cut anywhere: the filter reads the messages they hold.
    #[test]
    fn frames_written_by_tungstenite_are_read(
        (frames, kinds) in conversation(),
        cuts in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let wire = encode(&frames);
        let mut reader = FrameReader::new(Direction::Upstream);
        let mut read = Vec::new();
        let (mut offset, mut cut) = (0, cuts.iter().cycle());
        while offset < wire.len() {
            let end = (offset + cut.next().unwrap()).min(wire.len());
            let mut chunk = &wire[offset..end];
            prop_assert_eq!(reader.feed(&mut chunk, &mut |m| read.push(m.kind)), None);
            offset = end;
        }
        prop_assert_eq!(read, kinds);
    }

    /// Arbitrary header bytes that tungstenite's parser reads as a valid client frame: the
    /// filter reads a frame of the same header size and payload length (one message exactly
    /// when the payload is complete and the frame final).
    #[test]
    fn first_frame_headers_agree(bytes in proptest::collection::vec(any::<u8>(), 2..20)) {
        let mut cursor = Cursor::new(bytes.as_slice());
        let reference = FrameHeader::parse(&mut cursor);
        let header_len = cursor.position() as usize;
        // The filter reads a masked client frame: make the reference's input one too.
        if let Ok(Some((header, length))) = reference {
            let usable = header.mask.is_some()
                && !header.rsv2 && !header.rsv3
                && !matches!(header.opcode, OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)))
                && !matches!(header.opcode, OpCode::Data(Data::Continue))
                && (!matches!(header.opcode, OpCode::Control(_)) || (header.is_final && length <= 125))
                && length >> 63 == 0;
            if usable {
                // Feed the header and exactly its payload: one message, nothing more.
                let payload_len = usize::try_from(length).unwrap().min(4096);
                let mut frame = bytes[..header_len].to_vec();
                frame.resize(header_len + payload_len, 0x20);
                let mut reader = FrameReader::new(Direction::Upstream);
                let mut read = Vec::new();
                let mut chunk = frame.as_slice();
                let error = reader.feed(&mut chunk, &mut |m| read.push(m.kind));
                prop_assert_eq!(error, None, "{:?}", header);
                let complete = payload_len as u64 == length;
                prop_assert_eq!(read.len(), usize::from(complete && header.is_final), "{:?} {}", header, length);
            }
        }
    }
}

/// A configuration with every section and field set, valid as JSON for the deserializer.
fn full_configuration() -> serde_json::Value {
    serde_json::json!({
        "services": [
            {"name": "api", "routes": ["/api/v1/tracks/:id", "GET /api/v1/users/me"], "prefixes": ["/api"]},
            {"name": "chat", "routes": ["/ws"], "prefixes": []}
        ],
        "endpoint_source": "route_table",
        "max_series": 100,
        "metrics_flush_interval_ms": 500,
        "health": {
            "enabled": true, "live_path": "/live", "ready_path": "/ready", "authorities": ["gw"],
            "cache_ms": 1000, "expose_errors": false,
            "checks": [{
                "name": "db", "cluster": "pg", "path": "/metrics", "method": "GET", "authority": "pg",
                "timeout_ms": 1000, "required": true,
                "expect": {"status": "200", "body_contains": "up", "prometheus": {"metric": "pg_up", "equals": 1.0}}
            }]
        },
        "websocket": {"chat_endpoints": ["/ws"], "chat_event_types": ["SendMessage"], "max_tracked_rooms": 10},
        "streams": {"endpoints": [], "max_stream_ids": 10},
        "business_metrics": [{"counter": "logins", "method": "POST", "endpoints": ["/api/v1/tracks/:id"], "status": ["2xx"]}],
        "active_users": {"enabled": true, "source": {"jwt": {"claim": "sub", "query_parameter": "token"}}, "window_seconds": 300},
        "tracing": {
            "enabled": true, "incoming": ["traceparent", "b3"], "outgoing": ["traceparent"],
            "sampling_ratio": 0.01, "debug_credential": {"header": "x-debug", "value": "s3cret"},
            "response_header": "x-trace-id", "websocket": true, "health": false,
            "collector": {"cluster": "otel", "path": "/v1/traces", "timeout_ms": 1000, "batch_size": 64}
        }
    })
}

/// Every node of `value`, as the keys and indices that lead to it.
fn node_paths(
    value: &serde_json::Value,
    here: &mut Vec<serde_json::Value>,
    out: &mut Vec<Vec<serde_json::Value>>,
) {
    out.push(here.clone());
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                here.push(key.as_str().into());
                node_paths(child, here, out);
                here.pop();
            }
        }
        serde_json::Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                here.push(index.into());
                node_paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn node_at<'a>(
    value: &'a mut serde_json::Value,
    path: &[serde_json::Value],
) -> &'a mut serde_json::Value {
    path.iter().fold(value, |node, step| match step {
        serde_json::Value::String(key) => &mut node[key.as_str()],
        step => &mut node[step.as_u64().unwrap() as usize],
    })
}

/// Values of every JSON type, none of them right everywhere.
fn wrong_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::json!(7)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(1.5)),
        Just(serde_json::json!(4_294_967_296u64)),
        Just(serde_json::json!("x")),
        Just(serde_json::json!(true)),
        Just(serde_json::Value::Null),
        Just(serde_json::json!([])),
        Just(serde_json::json!([1])),
        Just(serde_json::json!({})),
        Just(serde_json::json!({"k": 1})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// A configuration with one part replaced, added to or taken away is refused, and the field
    /// named is the one serde_path_to_error (a deserializer that tracks the path) names.
    #[test]
    fn configuration_errors_name_the_field_a_path_tracking_deserializer_names(
        node in any::<prop::sample::Index>(),
        mutation in 0..3u8,
        wrong in wrong_value(),
        removed in any::<prop::sample::Index>(),
        pretty: bool,
    ) {
        let mut document = full_configuration();
        let mut paths = Vec::new();
        node_paths(&document, &mut Vec::new(), &mut paths);
        let path: &Vec<serde_json::Value> = node.get(&paths);
        let target = node_at(&mut document, path);
        match (mutation, &mut *target) {
            (1, serde_json::Value::Object(map)) => { map.insert("zz_unknown".to_owned(), wrong); }
            (2, serde_json::Value::Object(map)) if !map.is_empty() => {
                let key = removed.get(&map.keys().cloned().collect::<Vec<_>>()).clone();
                map.remove(&key);
            }
            (2, serde_json::Value::Array(items)) => items.push(wrong),
            _ => *target = wrong,
        }
        let json = if pretty {
            serde_json::to_vec_pretty(&document).unwrap()
        } else {
            serde_json::to_vec(&document).unwrap()
        };

        let mut deserializer = serde_json::Deserializer::from_slice(&json);
        let reference = serde_path_to_error::deserialize::<_, veza_observability::config::PluginConfig>(&mut deserializer);
        let loaded = veza_observability::config::load(Some(&json));
        let refused_as_json = loaded.as_ref().err().filter(|e| e.message.starts_with("invalid configuration JSON"));
        match (reference, refused_as_json) {
            (Ok(_), None) => {}
            // The filter refuses a document that is not an object before reading it as JSON.
            (Err(_), None) if !document.is_object() => {
                prop_assert_eq!(loaded.err().map(|e| e.message), Some("the configuration must be a JSON object".to_owned()));
            }
            (Err(reference), Some(refused)) => {
                let path = reference.path().to_string();
                let path = if path == "." || path == "?" { String::new() } else { path };
                if reference.inner().classify() == serde_json::error::Category::Syntax {
                    // Valid JSON in the wrong shape for an enum: serde_json names the byte after
                    // the fault, and the filter's path may go one level past the enum's.
                    prop_assert!(refused.field.starts_with(&path) || path.starts_with(&refused.field),
                        "{} / {}: {}", refused.field, path, String::from_utf8_lossy(&json));
                } else {
                    prop_assert_eq!(&refused.field, &path, "{}", String::from_utf8_lossy(&json));
                }
                prop_assert_eq!(&refused.message, &format!("invalid configuration JSON: {}", reference.inner()));
            }
            (reference, refused) => prop_assert!(false, "reference {:?}, filter {:?}: {}", reference.err(), refused, String::from_utf8_lossy(&json)),
        }
    }
}
