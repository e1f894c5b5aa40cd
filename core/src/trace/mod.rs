//! Trace context at the gateway: every request proxied to a Veza service leaves with a
//! context that Jaeger and OpenTelemetry tracers continue.
//!
//! One incoming context is chosen by a configured precedence of formats; every header of a
//! known format is then replaced by the configured outgoing formats, all carrying the same
//! trace id, the gateway's new span id and the same sampled decision. A malformed value is
//! never passed on: the trace restarts, as the specs say.

pub mod b3;
pub mod context;
pub mod export;
pub mod jaeger;
pub mod sampling;
pub mod w3c;

use self::b3::{Multi, B3};
pub use self::context::{Incoming, SpanId, TraceId};
use crate::config::tracing::{DebugCredential, Format, TraceSettings};

/// Request headers a trace decision reads, and every header it may replace or remove.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const UBER_TRACE_ID: &str = "uber-trace-id";
pub const JAEGER_DEBUG_ID: &str = "jaeger-debug-id";
pub const B3_SINGLE: &str = "b3";
pub const B3_TRACE_ID: &str = "x-b3-traceid";
pub const B3_SPAN_ID: &str = "x-b3-spanid";
pub const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
pub const B3_SAMPLED: &str = "x-b3-sampled";
pub const B3_FLAGS: &str = "x-b3-flags";

/// Every trace header the gateway owns on the way out.
pub const OWNED_HEADERS: [&str; 10] = [
    TRACEPARENT,
    TRACESTATE,
    UBER_TRACE_ID,
    JAEGER_DEBUG_ID,
    B3_SINGLE,
    B3_TRACE_ID,
    B3_SPAN_ID,
    B3_PARENT_SPAN_ID,
    B3_SAMPLED,
    B3_FLAGS,
];

/// The trace headers of one request, as they arrived.
#[derive(Debug, Default)]
pub struct TraceHeaders<'a> {
    pub traceparent: Vec<&'a [u8]>,
    pub tracestate: Vec<&'a [u8]>,
    pub uber_trace_id: Vec<&'a [u8]>,
    pub jaeger_debug_id: bool,
    pub b3_single: Vec<&'a [u8]>,
    pub b3_multi: Multi<'a>,
    /// Which owned headers were present (indices into [`OWNED_HEADERS`]).
    pub present: u16,
    /// The request carries the configured debug credential.
    pub trusted: bool,
}

impl<'a> TraceHeaders<'a> {
    /// Collects from `(name, value)` pairs (names lowercase, as Envoy keeps them).
    pub fn collect(
        pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        settings: &TraceSettings,
    ) -> TraceHeaders<'a> {
        TraceHeaders::collect_with(pairs, settings.debug_credential.as_ref())
    }

    /// As [`TraceHeaders::collect`]; `credential`, when given, marks the request trusted.
    fn collect_with(
        pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        credential: Option<&DebugCredential>,
    ) -> TraceHeaders<'a> {
        let mut headers = TraceHeaders::default();
        for (name, value) in pairs {
            headers.observe(name, value, credential);
        }
        headers
    }

    /// Takes one `(name, value)` pair into the collection, for a caller that walks the
    /// request's headers once for other reasons too.
    pub fn observe(
        &mut self,
        name: &'a [u8],
        value: &'a [u8],
        credential: Option<&DebugCredential>,
    ) {
        if let Some(index) = OWNED_HEADERS.iter().position(|h| h.as_bytes() == name) {
            self.present |= 1 << index;
        }
        match name {
            b"traceparent" => self.traceparent.push(value),
            b"tracestate" => self.tracestate.push(value),
            b"uber-trace-id" => self.uber_trace_id.push(value),
            b"jaeger-debug-id" => self.jaeger_debug_id = true,
            b"b3" => self.b3_single.push(value),
            b"x-b3-traceid" => self.b3_multi.trace_id = Some(value),
            b"x-b3-spanid" => self.b3_multi.span_id = Some(value),
            b"x-b3-sampled" => self.b3_multi.sampled = Some(value),
            b"x-b3-flags" => self.b3_multi.flags = Some(value),
            _ => {
                if let Some(credential) = credential {
                    if name == credential.header.as_bytes()
                        && value.trim_ascii() == credential.value.as_bytes()
                    {
                        self.trusted = true;
                    }
                }
            }
        }
    }

    /// The one `traceparent` (two are no context, as W3C says).
    fn w3c(&self) -> Option<Incoming> {
        match self.traceparent.as_slice() {
            [one] => w3c::parse_traceparent(one),
            _ => None,
        }
    }

    fn jaeger(&self) -> Option<Incoming> {
        match self.uber_trace_id.as_slice() {
            [one] => jaeger::parse(one),
            _ => None,
        }
    }

    /// The single `b3` header, else the `X-B3-*` headers.
    fn b3(&self) -> Option<B3> {
        match self.b3_single.as_slice() {
            [one] => b3::parse_single(one),
            [] if !self.b3_multi.is_empty() => b3::parse_multi(&self.b3_multi),
            _ => None,
        }
    }
}

/// The gateway's span and what it tells the services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's span, when the trace was continued.
    pub parent: Option<SpanId>,
    pub sampled: bool,
    pub debug: bool,
    /// W3C `tracestate` to pass on (only with a continued `traceparent`).
    pub tracestate: Option<String>,
    /// The format the context came from; `None` for a new trace.
    pub continued_from: Option<Format>,
}

/// Random ids: `next` never returns 0 for long (the caller retries).
pub trait IdSource {
    fn next_u64(&mut self) -> u64;
}

fn nonzero_u64(ids: &mut dyn IdSource) -> u64 {
    loop {
        let id = ids.next_u64();
        if id != 0 {
            return id;
        }
    }
}

/// Chooses the incoming context and the sampling decision, and makes the gateway's span id.
pub fn decide(
    settings: &TraceSettings,
    headers: &TraceHeaders<'_>,
    ids: &mut dyn IdSource,
) -> Decision {
    let mut chosen: Option<(Format, Incoming)> = None;
    // A decision without ids (`b3: 0`) applies to the new trace.
    let mut bare_decision: Option<(bool, bool)> = None;
    // Most requests carry no trace header: then there is nothing to parse. (Every header a
    // format reads sets its bit in `present`.)
    let formats: &[Format] = if headers.present == 0 {
        &[]
    } else {
        &settings.incoming
    };
    for &format in formats {
        let found = match format {
            // Two traceparent headers: restart (W3C).
            Format::TraceContext => headers.w3c(),
            Format::Jaeger => headers.jaeger(),
            Format::B3 | Format::B3Single => match headers.b3() {
                Some(B3::Context(incoming)) => Some(incoming),
                Some(B3::DecisionOnly { sampled, debug }) => {
                    bare_decision.get_or_insert((sampled, debug));
                    None
                }
                None => None,
            },
        };
        if let Some(incoming) = found {
            chosen = Some((format, incoming));
            break;
        }
    }

    let span_id = SpanId(nonzero_u64(ids));
    let trusted = headers.trusted;
    match chosen {
        Some((format, incoming)) => {
            let debug = incoming.debug && trusted;
            let sampled = match incoming.sampled {
                _ if debug => true,
                Some(sampled) => sampled,
                None => sampling::sampled(incoming.trace_id, settings.sampling_ratio),
            };
            let tracestate = match format {
                Format::TraceContext => w3c::combine_tracestate(&headers.tracestate),
                _ => None,
            };
            Decision {
                trace_id: incoming.trace_id,
                span_id,
                parent: incoming.parent,
                sampled,
                debug,
                tracestate,
                continued_from: Some(format),
            }
        }
        None => {
            let trace_id =
                TraceId((u128::from(nonzero_u64(ids)) << 64) | u128::from(nonzero_u64(ids)));
            let forced = trusted
                && (headers.jaeger_debug_id || bare_decision.is_some_and(|(_, debug)| debug));
            let sampled = match bare_decision {
                _ if forced => true,
                Some((sampled, _)) => sampled,
                None => sampling::sampled(trace_id, settings.sampling_ratio),
            };
            Decision {
                trace_id,
                span_id,
                parent: None,
                sampled,
                debug: forced,
                tracestate: None,
                continued_from: None,
            }
        }
    }
}

/// The headers to send upstream, in the configured formats, each handed to `write` as it is
/// made: the default `traceparent` is made on the stack, and nothing is allocated for it.
pub fn outgoing(
    settings: &TraceSettings,
    decision: &Decision,
    mut write: impl FnMut(&'static str, &[u8]),
) {
    let d = decision;
    for format in &settings.outgoing {
        match format {
            Format::TraceContext => {
                write(
                    TRACEPARENT,
                    w3c::traceparent(d.trace_id, d.span_id, d.sampled).as_bytes(),
                );
                if let Some(state) = &d.tracestate {
                    write(TRACESTATE, state.as_bytes());
                }
            }
            Format::Jaeger => write(
                UBER_TRACE_ID,
                jaeger::uber_trace_id(d.trace_id, d.span_id, d.sampled, d.debug).as_bytes(),
            ),
            Format::B3 => b3::multi_headers(
                d.trace_id, d.span_id, d.parent, d.sampled, d.debug, &mut write,
            ),
            Format::B3Single => b3::single(
                d.trace_id, d.span_id, d.parent, d.sampled, d.debug, &mut write,
            ),
        }
    }
}

/// The context a service receives in these request headers (as they leave Envoy: after the
/// router, whose tracer may have written its own), in the order a service's tracer would look:
/// W3C, then B3, then Jaeger. The trace id, and the span id the service takes as its parent.
pub fn received<'a>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Option<(TraceId, SpanId)> {
    let headers = TraceHeaders::collect_with(pairs, None);
    let b3 = || match headers.b3() {
        Some(B3::Context(incoming)) => Some(incoming),
        _ => None,
    };
    let incoming = headers.w3c().or_else(b3).or_else(|| headers.jaeger())?;
    Some((incoming.trace_id, incoming.parent?))
}

/// The bit of `name` in [`TraceHeaders::present`]'s set; 0 for a name the filter does not own.
pub fn owned_bit(name: &str) -> u16 {
    OWNED_HEADERS
        .iter()
        .position(|owned| *owned == name)
        .map_or(0, |index| 1 << index)
}

/// Whether the request carried the header of `bit` ([`owned_bit`]; `present` from
/// [`TraceHeaders`]); a name the filter does not own (bit 0) counts as present, so it is
/// replaced rather than added beside.
pub fn carried(present: u16, bit: u16) -> bool {
    bit == 0 || present & bit != 0
}

/// Owned headers present on the request that the outgoing set (`written`, bits as
/// [`owned_bit`]'s) does not overwrite: they are removed, so no stale or malformed context
/// reaches a service.
pub fn stale(present: u16, written: u16) -> impl Iterator<Item = &'static str> {
    OWNED_HEADERS
        .iter()
        .enumerate()
        .filter(move |(index, _)| (present & !written) & (1 << index) != 0)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests;
