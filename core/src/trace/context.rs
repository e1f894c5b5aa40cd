//! Ids and the context one incoming trace header carried.

/// A 128-bit trace id; never 0 once valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub u128);

/// A 64-bit span id; never 0 once valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

/// Full-width lowercase hex, the only form every parser accepts. Written digit by digit
/// rather than through `{:032x}`: the padding machinery of `core::fmt` was half of the filter's
/// own instructions per request.
fn hex_digits(mut value: u64, digits: &mut [u8]) {
    for digit in digits.iter_mut().rev() {
        // Lossless: the mask keeps 4 bits.
        let nibble = (value & 0xf) as u8;
        *digit = if nibble < 10 {
            b'0' + nibble
        } else {
            b'a' + nibble - 10
        };
        value >>= 4;
    }
}

/// Always ASCII: the check is one pass over 16 or 32 bytes.
fn ascii(digits: &[u8]) -> &str {
    std::str::from_utf8(digits).unwrap_or_default()
}

impl TraceId {
    /// The 32 lowercase hex digits, on the stack.
    pub fn hex(self) -> [u8; 32] {
        let mut digits = [0u8; 32];
        let (high, low) = digits.split_at_mut(16);
        // Lossless: the high and low 64 bits.
        hex_digits((self.0 >> 64) as u64, high);
        hex_digits(self.0 as u64, low);
        digits
    }

    /// Appends the 32 hex digits.
    pub fn push_hex(self, out: &mut String) {
        out.push_str(ascii(&self.hex()));
    }
}

impl SpanId {
    /// The 16 lowercase hex digits, on the stack.
    pub fn hex(self) -> [u8; 16] {
        let mut digits = [0u8; 16];
        hex_digits(self.0, &mut digits);
        digits
    }

    /// Appends the 16 hex digits.
    pub fn push_hex(self, out: &mut String) {
        out.push_str(ascii(&self.hex()));
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(ascii(&self.hex()))
    }
}

impl std::fmt::Display for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(ascii(&self.hex()))
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
