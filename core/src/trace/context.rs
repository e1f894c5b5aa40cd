//! Ids and the context one incoming trace header carried.

/// A 128-bit trace id; never 0 once valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub u128);

/// A 64-bit span id; never 0 once valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

/// Sixteen lowercase hex digits, most significant first: full width, the only form every
/// parser accepts. Each nibble is spread into a byte of its own, then the sixteen bytes are made
/// ASCII at once. `{:016x}` spent half of the filter's own instructions in `core::fmt`'s
/// padding, and a digit-by-digit loop unrolls into a kilobyte of code that a request runs once:
/// about one instruction-cache miss per 64 bytes on every request (docs/performance.md).
fn hex16(value: u64) -> [u8; 16] {
    const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    let mut x = u128::from(value);
    x = (x | (x << 32)) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f;
    // Byte k now holds nibble k (0 to 15): '0' + n, and 39 more ('a' - '0' - 10) where n > 9,
    // which is where n + 6 carries into bit 4. No byte overflows (at most 102).
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    (x + u128::from(b'0') * ONES + 39 * letters).to_be_bytes()
}

/// Always ASCII: the check is one pass over 16 or 32 bytes.
fn ascii(digits: &[u8]) -> &str {
    std::str::from_utf8(digits).unwrap_or_default()
}

/// A header value of `N` ASCII bytes, made on the stack: the fixed-width forms the filter
/// writes on every traced request, without an allocation or a UTF-8 check.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ascii<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> Ascii<N> {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As text (for logs and tests; the header write takes the bytes).
    pub fn as_str(&self) -> &str {
        ascii(&self.0)
    }
}

impl<const N: usize> std::fmt::Display for Ascii<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> std::fmt::Debug for Ascii<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> PartialEq<&str> for Ascii<N> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

/// Copies `parts` one after another into `out`; they fill it exactly where it is used.
pub(crate) fn concat<const N: usize, const P: usize>(parts: [&[u8]; P]) -> Ascii<N> {
    let mut out = [0u8; N];
    let mut rest: &mut [u8] = &mut out;
    for part in parts {
        let (head, tail) = rest.split_at_mut(part.len().min(rest.len()));
        head.copy_from_slice(part.get(..head.len()).unwrap_or_default());
        rest = tail;
    }
    Ascii(out)
}

impl TraceId {
    /// The 32 lowercase hex digits, on the stack.
    pub fn hex(self) -> [u8; 32] {
        let mut digits = [0u8; 32];
        let (high, low) = digits.split_at_mut(16);
        // Lossless: the high and low 64 bits.
        high.copy_from_slice(&hex16((self.0 >> 64) as u64));
        low.copy_from_slice(&hex16(self.0 as u64));
        digits
    }
}

impl SpanId {
    /// The 16 lowercase hex digits, on the stack.
    pub fn hex(self) -> [u8; 16] {
        hex16(self.0)
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

#[cfg(test)]
mod hex_tests {
    use super::*;

    /// Against `core::fmt`'s `{:x}`: every nibble value in every position, the edges, and a
    /// spread of others.
    #[test]
    fn ids_are_written_as_fmt_writes_them() {
        let mut values = vec![
            0,
            1,
            9,
            10,
            15,
            16,
            u64::MAX,
            u64::MAX - 1,
            0x0123_4567_89ab_cdef,
        ];
        for position in 0..16 {
            for nibble in 0..16u64 {
                values.push(nibble << (4 * position));
                values.push(!(nibble << (4 * position)));
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            values.push(x);
        }
        for value in values {
            assert_eq!(ascii(&SpanId(value).hex()), format!("{value:016x}"));
            let wide = u128::from(value) << 64 | u128::from(value.rotate_left(17));
            assert_eq!(ascii(&TraceId(wide).hex()), format!("{wide:032x}"));
        }
    }
}
