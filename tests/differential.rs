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
        let read = extract(&TraceContextPropagator::new(), &[("traceparent", value.clone())]);
        prop_assert_eq!(read, Some((trace, span, sampled)), "{}", value);
    }

    /// A traceparent the filter continues, OpenTelemetry continues with the same context;
    /// the one deliberate difference: W3C allows any version-00 flags, OpenTelemetry's Rust
    /// propagator none above 02.
    #[test]
    fn accepted_traceparents_agree(value in traceparent_like()) {
        if let Some(ours) = w3c::parse_traceparent(value.as_bytes()) {
            let reference = extract(&TraceContextPropagator::new(), &[("traceparent", value.clone())]);
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
        let read = extract(&opentelemetry_jaeger_propagator::Propagator::new(), &[("uber-trace-id", value.clone())]);
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
            let reference = extract(&opentelemetry_jaeger_propagator::Propagator::new(), &[("uber-trace-id", value.clone())]);
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
        let single = b3::single(TraceId(trace), SpanId(span), parent, sampled, false);
        let read = extract(
            &opentelemetry_zipkin::Propagator::with_encoding(opentelemetry_zipkin::B3Encoding::SingleHeader),
            &[("b3", single.clone())],
        );
        prop_assert_eq!(read, Some((trace, span, sampled)), "{}", single);
        let multi = b3::multi_headers(TraceId(trace), SpanId(span), parent, sampled, false);
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
