//! Zipkin's B3: the single `b3` header and the multi `X-B3-*` headers.

use super::context::{concat, parse_hex, span_id, trace_id, Ascii, Incoming, SpanId, TraceId};

/// The multi headers as they arrived (first value of each).
#[derive(Debug, Default, Clone, Copy)]
pub struct Multi<'a> {
    pub trace_id: Option<&'a [u8]>,
    pub span_id: Option<&'a [u8]>,
    pub sampled: Option<&'a [u8]>,
    pub flags: Option<&'a [u8]>,
}

impl Multi<'_> {
    pub fn is_empty(&self) -> bool {
        self.trace_id.is_none()
            && self.span_id.is_none()
            && self.sampled.is_none()
            && self.flags.is_none()
    }
}

/// What a B3 header said: a context, or only a sampling decision (`b3: 0`, or
/// `X-B3-Sampled` without ids), which applies to a new trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum B3 {
    Context(Incoming),
    DecisionOnly { sampled: bool, debug: bool },
}

fn ids(trace: &[u8], span: &[u8]) -> Option<(TraceId, SpanId)> {
    // 16 or 32 hex digits for the trace id, 16 for the span id.
    if !(trace.len() == 16 || trace.len() == 32) || span.len() != 16 {
        return None;
    }
    Some((trace_id(parse_hex(trace)?)?, span_id(parse_hex(span)?)?))
}

/// `(sampled, debug)` of a sampling state: `1`, `0`, `d`.
fn state(text: &[u8]) -> Option<(bool, bool)> {
    match text {
        b"1" => Some((true, false)),
        b"0" => Some((false, false)),
        b"d" => Some((true, true)),
        _ => None,
    }
}

/// Parses `b3: {trace}-{span}[-{state}[-{parent}]]`, or `b3: {state}` alone.
pub fn parse_single(value: &[u8]) -> Option<B3> {
    let value = value.trim_ascii();
    if let Some((sampled, debug)) = state(value) {
        return Some(B3::DecisionOnly { sampled, debug });
    }
    let mut fields = value.split(|&b| b == b'-');
    let (trace, span) = (fields.next()?, fields.next()?);
    let (trace_id, span) = ids(trace, span)?;
    let (sampled, debug) = match fields.next() {
        None => (None, false),
        Some(text) => {
            let (sampled, debug) = state(text)?;
            (Some(sampled), debug)
        }
    };
    if let Some(parent) = fields.next() {
        span_id(parse_hex(parent).filter(|_| parent.len() == 16)?)?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(B3::Context(Incoming {
        trace_id,
        parent: Some(span),
        sampled,
        debug,
    }))
}

/// Parses the multi headers. `X-B3-Flags: 1` is debug (and sampled).
pub fn parse_multi(multi: &Multi<'_>) -> Option<B3> {
    let debug = multi.flags.is_some_and(|f| f.trim_ascii() == b"1");
    let sampled = match multi.sampled.map(<[u8]>::trim_ascii) {
        None => None,
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        Some(_) => return None,
    };
    let sampled = if debug { Some(true) } else { sampled };
    match (multi.trace_id, multi.span_id) {
        (Some(trace), Some(span)) => {
            let (trace_id, span) = ids(trace.trim_ascii(), span.trim_ascii())?;
            Some(B3::Context(Incoming {
                trace_id,
                parent: Some(span),
                sampled,
                debug,
            }))
        }
        (None, None) => sampled.map(|sampled| B3::DecisionOnly { sampled, debug }),
        _ => None,
    }
}

/// The multi headers to send, each handed to `write` as it is made, on the stack: ids,
/// parent, and the sampling state (`X-B3-Flags: 1` replaces `X-B3-Sampled` for debug, as the
/// spec says).
pub fn multi_headers(
    trace: TraceId,
    span: SpanId,
    parent: Option<SpanId>,
    sampled: bool,
    debug: bool,
    mut write: impl FnMut(&'static str, &[u8]),
) {
    write("x-b3-traceid", &trace.hex());
    write("x-b3-spanid", &span.hex());
    if let Some(parent) = parent {
        write("x-b3-parentspanid", &parent.hex());
    }
    if sampled && debug {
        write("x-b3-flags", b"1");
    } else {
        write("x-b3-sampled", if sampled { b"1" } else { b"0" });
    }
}

/// The single `b3` header, made on the stack in its two widths (with and without the parent)
/// and handed to `write`, as [`multi_headers`] hands its headers.
pub fn single(
    trace: TraceId,
    span: SpanId,
    parent: Option<SpanId>,
    sampled: bool,
    debug: bool,
    mut write: impl FnMut(&'static str, &[u8]),
) {
    let state: &[u8] = match (sampled, debug) {
        (true, true) => b"-d",
        (true, false) => b"-1",
        (false, _) => b"-0",
    };
    let (trace, span) = (trace.hex(), span.hex());
    match parent {
        Some(parent) => {
            let value: Ascii<68> = concat([&trace, b"-", &span, state, b"-", &parent.hex()]);
            write(super::B3_SINGLE, value.as_bytes());
        }
        None => {
            let value: Ascii<51> = concat([&trace, b"-", &span, state]);
            write(super::B3_SINGLE, value.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(b3: Option<B3>) -> Incoming {
        match b3 {
            Some(B3::Context(incoming)) => incoming,
            other => panic!("not a context: {other:?}"),
        }
    }

    #[test]
    fn single_header_forms() {
        let full = context(parse_single(
            b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        ));
        assert_eq!(full.trace_id, TraceId(0x80f198ee56343ba864fe8b2a57d3eff7));
        assert_eq!(full.parent, Some(SpanId(0xe457b5a2e4d86bd1)));
        assert_eq!(full.sampled, Some(true));
        let deferred = context(parse_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1"));
        assert_eq!(deferred.trace_id, TraceId(0x64fe8b2a57d3eff7));
        assert_eq!(deferred.sampled, None);
        let debug = context(parse_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-d"));
        assert_eq!((debug.sampled, debug.debug), (Some(true), true));
        assert_eq!(
            parse_single(b"0"),
            Some(B3::DecisionOnly {
                sampled: false,
                debug: false
            })
        );
        for bad in [
            &b""[..],
            b"x",
            b"64fe8b2a57d3eff7",
            b"64fe8b2a57d3eff-e457b5a2e4d86bd1",
            b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
            b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3",
            b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
            b"0000000000000000-e457b5a2e4d86bd1-1",
        ] {
            assert_eq!(parse_single(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn multi_header_forms() {
        let multi = Multi {
            trace_id: Some(b"463ac35c9f6413ad48485a3953bb6124"),
            span_id: Some(b"a2fb4a1d1a96d312"),
            sampled: Some(b"1"),
            flags: None,
        };
        let incoming = context(parse_multi(&multi));
        assert_eq!(
            incoming.trace_id,
            TraceId(0x463ac35c9f6413ad48485a3953bb6124)
        );
        assert_eq!(incoming.sampled, Some(true));
        let debug = context(parse_multi(&Multi {
            sampled: None,
            flags: Some(b"1"),
            ..multi
        }));
        assert_eq!((debug.sampled, debug.debug), (Some(true), true));
        assert_eq!(
            parse_multi(&Multi {
                sampled: Some(b"0"),
                ..Multi::default()
            }),
            Some(B3::DecisionOnly {
                sampled: false,
                debug: false
            })
        );
        assert_eq!(
            parse_multi(&Multi {
                span_id: None,
                ..multi
            }),
            None
        );
        assert_eq!(
            parse_multi(&Multi {
                sampled: Some(b"yes"),
                ..multi
            }),
            None
        );
        assert_eq!(parse_multi(&Multi::default()), None);
    }

    #[test]
    fn emitted_headers() {
        // What an emitter hands its writer, as text.
        fn collect(
            emit: impl FnOnce(&mut dyn FnMut(&'static str, &[u8])),
        ) -> Vec<(&'static str, String)> {
            let mut headers = Vec::new();
            emit(&mut |name, value| {
                headers.push((name, String::from_utf8(value.to_vec()).unwrap()));
            });
            headers
        }
        let single = |parent, sampled, debug| {
            collect(|write| single(TraceId(1), SpanId(2), parent, sampled, debug, write))
        };
        let multi = |parent, sampled, debug| {
            collect(|write| multi_headers(TraceId(1), SpanId(2), parent, sampled, debug, write))
        };
        assert_eq!(
            single(Some(SpanId(3)), true, false),
            [(
                "b3",
                "00000000000000000000000000000001-0000000000000002-1-0000000000000003".to_owned()
            )]
        );
        assert_eq!(
            single(None, true, true),
            [(
                "b3",
                "00000000000000000000000000000001-0000000000000002-d".to_owned()
            )]
        );
        assert_eq!(
            single(Some(SpanId(3)), false, true),
            [(
                "b3",
                "00000000000000000000000000000001-0000000000000002-0-0000000000000003".to_owned()
            )]
        );
        assert_eq!(
            multi(None, false, false),
            [
                (
                    "x-b3-traceid",
                    "00000000000000000000000000000001".to_owned()
                ),
                ("x-b3-spanid", "0000000000000002".to_owned()),
                ("x-b3-sampled", "0".to_owned()),
            ]
        );
        assert_eq!(
            multi(Some(SpanId(3)), true, true),
            [
                (
                    "x-b3-traceid",
                    "00000000000000000000000000000001".to_owned()
                ),
                ("x-b3-spanid", "0000000000000002".to_owned()),
                ("x-b3-parentspanid", "0000000000000003".to_owned()),
                ("x-b3-flags", "1".to_owned()),
            ]
        );
    }
}
