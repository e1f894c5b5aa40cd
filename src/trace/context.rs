//! Ids and the context one incoming trace header carried.

/// A 128-bit trace id; never 0 once valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub u128);

/// A 64-bit span id; never 0 once valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

/// Full-width lowercase hex, the only form every parser accepts; written straight into the
/// header being formatted.
impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::fmt::Display for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a valid incoming header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: TraceId,
    /// The caller's span: the parent of the gateway's span.
    pub parent: Option<SpanId>,
    /// `None`: the caller deferred the decision (B3 without a sampling state).
    pub sampled: Option<bool>,
    /// The caller asked for a forced trace (Jaeger debug flag, B3 `d` or `X-B3-Flags: 1`).
    pub debug: bool,
}

/// Lowercase or uppercase hex digits to a number of at most 128 bits; `None` on any other
/// byte, an empty input, or more than 32 digits.
pub fn parse_hex(text: &[u8]) -> Option<u128> {
    if text.is_empty() || text.len() > 32 {
        return None;
    }
    let mut value: u128 = 0;
    for &byte in text {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => return None,
        };
        value = (value << 4) | u128::from(digit);
    }
    Some(value)
}

/// Exactly `len` lowercase hex digits (W3C's rule; uppercase is invalid there).
pub fn parse_lower_hex(text: &[u8], len: usize) -> Option<u128> {
    (text.len() == len
        && text
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)))
    .then(|| parse_hex(text))
    .flatten()
}

pub fn span_id(value: u128) -> Option<SpanId> {
    u64::try_from(value).ok().filter(|&v| v != 0).map(SpanId)
}

pub fn trace_id(value: u128) -> Option<TraceId> {
    (value != 0).then_some(TraceId(value))
}
