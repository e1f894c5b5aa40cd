//! Jaeger's `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}`.

use super::context::{concat, parse_hex, span_id, trace_id, Ascii, Incoming, SpanId, TraceId};

const SAMPLED: u8 = 0x01;
const DEBUG: u8 = 0x02;
/// Longest value read: 32 + 16 + 16 + 2 hex digits and separators, URL-encoded.
const MAX_LEN: usize = 256;

/// Parses one `uber-trace-id` (also URL-encoded, `%3A` for `:`, as some senders do). Ids
/// shorter than 32/16 hex digits are left-padded; 0 ids are invalid.
pub fn parse(value: &[u8]) -> Option<Incoming> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > MAX_LEN {
        return None;
    }
    let decoded = decode_colons(value);
    let mut fields = decoded.split(|&b| b == b':');
    let (trace, span, parent, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if fields.next().is_some() || span.len() > 16 || parent.len() > 16 || flags.len() > 2 {
        return None;
    }
    let trace_id = trace_id(parse_hex(trace)?)?;
    let span = span_id(parse_hex(span)?)?;
    parse_hex(parent)?;
    let flags = u8::try_from(parse_hex(flags)?).ok()?;
    let sampled = flags & SAMPLED != 0;
    Some(Incoming {
        trace_id,
        parent: Some(span),
        sampled: Some(sampled),
        debug: sampled && flags & DEBUG != 0,
    })
}

/// `%3A` / `%3a` to `:`; nothing else in a valid value is encoded.
fn decode_colons(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' && tail.get(..2).is_some_and(|h| h.eq_ignore_ascii_case(b"3a")) {
            out.push(b':');
            rest = tail.get(2..).unwrap_or_default();
        } else {
            out.push(byte);
            rest = tail;
        }
    }
    out
}

/// The only form every Jaeger parser accepts: full-width lowercase ids, parent `0`, flags
/// `0`, `1` or `3`.
pub fn uber_trace_id(trace: TraceId, span: SpanId, sampled: bool, debug: bool) -> Ascii<53> {
    let flags: &[u8] = match (sampled, debug) {
        (false, _) => b":0:0",
        (true, false) => b":0:1",
        (true, true) => b":0:3",
    };
    concat([&trace.hex(), b":", &span.hex(), flags])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values_and_their_variants() {
        let full = parse(b"4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1").unwrap();
        assert_eq!(full.trace_id, TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736));
        assert_eq!(full.parent, Some(SpanId(0x00f067aa0ba902b7)));
        assert_eq!((full.sampled, full.debug), (Some(true), false));
        // Short ids are left-padded; the parent field is ignored; flags are hex.
        let short = parse(b"abc:1f:deadbeef:3").unwrap();
        assert_eq!(short.trace_id, TraceId(0xabc));
        assert_eq!(short.parent, Some(SpanId(0x1f)));
        assert_eq!((short.sampled, short.debug), (Some(true), true));
        // Debug without sampled is not debug.
        assert_eq!(
            parse(b"abc:1f:0:2").map(|i| (i.sampled, i.debug)),
            Some((Some(false), false))
        );
        // URL-encoded, as some senders send it.
        assert_eq!(
            parse(b"4bf92f3577b34da6a3ce929d0e0e4736%3A00f067aa0ba902b7%3a0%3A1"),
            Some(full.clone())
        );
        assert_eq!(
            parse(b"  4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1 "),
            Some(full)
        );
        // Uppercase hex from old clients.
        assert_eq!(
            parse(b"ABC:1F:0:1").map(|i| i.trace_id),
            Some(TraceId(0xabc))
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        let invalid: [&[u8]; 12] = [
            b"",
            b"abc:1f:0",
            b"abc:1f:0:1:9",
            b"0:1f:0:1",
            b"abc:0:0:1",
            b"abc:00000000000000000:0:1",
            b"123456789012345678901234567890123:1f:0:1",
            b"abc:1f:0:100",
            b"abc:1f:x:1",
            b"abc:1f:0:",
            b"ab c:1f:0:1",
            b"abc%3G1f:0:1",
        ];
        for value in invalid {
            assert_eq!(parse(value), None, "{}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn emitted_values_are_full_width_with_parent_0() {
        assert_eq!(
            uber_trace_id(TraceId(0xabc), SpanId(0x1f), true, false),
            "00000000000000000000000000000abc:000000000000001f:0:1"
        );
        assert!(uber_trace_id(TraceId(1), SpanId(1), false, true)
            .as_str()
            .ends_with(":0:0"));
        assert!(uber_trace_id(TraceId(1), SpanId(1), true, true)
            .as_str()
            .ends_with(":0:3"));
    }
}
