//! W3C Trace Context: `traceparent` and `tracestate`.

use super::context::{
    concat, parse_lower_hex, span_id, trace_id, Ascii, Incoming, SpanId, TraceId,
};

const SAMPLED: u8 = 0x01;
const MAX_TRACESTATE_ENTRIES: usize = 32;
/// Longest combined `tracestate` passed on (the spec asks vendors to keep 512 bytes).
const MAX_TRACESTATE_LEN: usize = 8192;

/// Parses one `traceparent` value (surrounding spaces and tabs allowed).
pub fn parse_traceparent(value: &[u8]) -> Option<Incoming> {
    let value = value.trim_ascii();
    let mut fields = value.split(|&b| b == b'-');
    let (version, trace, parent, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let version = u8::try_from(parse_lower_hex(version, 2)?).ok()?;
    if version == 0xff {
        return None;
    }
    // Version 00 is exactly four fields; a future version may append fields after a '-'.
    if fields.next().is_some() && version == 0 {
        return None;
    }
    let trace_id = trace_id(parse_lower_hex(trace, 32)?)?;
    let parent = span_id(parse_lower_hex(parent, 16)?)?;
    let flags = u8::try_from(parse_lower_hex(flags, 2)?).ok()?;
    Some(Incoming {
        trace_id,
        parent: Some(parent),
        sampled: Some(flags & SAMPLED != 0),
        debug: false,
    })
}

/// Flags `00` or `01` only: Level 2's "random trace id" bit (0x02) is left unset because
/// OpenTelemetry's Rust propagator refuses any version-00 flags above 2 (`03`), which would
/// split the trace at every Rust service (tests/differential.rs checks every emitted value
/// against it).
pub fn traceparent(trace: TraceId, span: SpanId, sampled: bool) -> Ascii<55> {
    let flags: &[u8] = if sampled { b"-01" } else { b"-00" };
    concat([b"00-", &trace.hex(), b"-", &span.hex(), flags])
}

/// Combines repeated `tracestate` headers in order; `None` when empty, over 32 entries or too
/// long (then it is dropped, as the spec allows, rather than cut).
pub fn combine_tracestate(values: &[&[u8]]) -> Option<String> {
    let mut combined = String::new();
    let mut entries = 0;
    for value in values {
        let text = std::str::from_utf8(value).ok()?;
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if !entry.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return None;
            }
            entries += 1;
            if !combined.is_empty() {
                combined.push(',');
            }
            combined.push_str(entry);
        }
    }
    let fits = entries <= MAX_TRACESTATE_ENTRIES && combined.len() <= MAX_TRACESTATE_LEN;
    (!combined.is_empty() && fits).then_some(combined)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent() {
        let incoming = parse_traceparent(VALID).unwrap();
        assert_eq!(
            incoming,
            Incoming {
                trace_id: TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736),
                parent: Some(SpanId(0x00f067aa0ba902b7)),
                sampled: Some(true),
                debug: false,
            }
        );
        assert_eq!(
            parse_traceparent(b" \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03 ")
                .map(|i| i.sampled),
            Some(Some(true))
        );
        assert_eq!(
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .and_then(|i| i.sampled),
            Some(false)
        );
    }

    #[test]
    fn future_versions_are_continued() {
        let future =
            b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert_eq!(
            parse_traceparent(future).map(|i| i.trace_id),
            Some(TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736))
        );
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        let invalid: [&[u8]; 14] = [
            b"",
            b"00",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ];
        for value in invalid {
            assert_eq!(
                parse_traceparent(value),
                None,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn emitted_traceparents_are_exact() {
        let text = traceparent(TraceId(0xab), SpanId(0xcd), true);
        assert_eq!(
            text,
            "00-000000000000000000000000000000ab-00000000000000cd-01"
        );
        assert_eq!(text.as_str().len(), 55);
        assert_eq!(
            traceparent(TraceId(u128::MAX), SpanId(u64::MAX), false),
            "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-00"
        );
    }

    #[test]
    fn tracestate_is_combined_in_order_and_bounded() {
        assert_eq!(
            combine_tracestate(&[b"congo=t61rcWkgMzE", b" rojo=00f067aa0ba902b7 ,"]).as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        assert_eq!(combine_tracestate(&[b"", b" , "]), None);
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(combine_tracestate(&[many.join(",").as_bytes()]), None);
        assert_eq!(combine_tracestate(&[b"a=\x01"]), None);
    }
}
