//! The chat server's messages are JSON objects with a PascalCase `type` (`SendMessage`,
//! `JoinConversation`, …). Only the first bytes of each message are seen (see
//! [`super::frames::PREFIX_LEN`]): a field is read only if it lies within them.

/// The string value of `"key": "value"` in a JSON text's first bytes. Keys are matched
/// anywhere in the prefix, which suits the chat server's flat messages; values with escapes
/// are not decoded (they do not occur in types or ids).
pub fn string_field<'a>(prefix: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let quoted_len = key.len() + 2;
    let mut at = 0;
    while let Some(start) = find(prefix.get(at..)?, key.as_bytes()).map(|i| i + at) {
        at = start + 1;
        let quoted = start
            .checked_sub(1)
            .and_then(|open| prefix.get(open..open + quoted_len));
        let Some(quoted) = quoted else { continue };
        if quoted.first() != Some(&b'"') || quoted.last() != Some(&b'"') {
            continue;
        }
        let rest = prefix.get(start - 1 + quoted_len..)?;
        let rest = skip_space(rest);
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let rest = skip_space(rest);
        let Some(value) = rest.strip_prefix(b"\"") else {
            continue;
        };
        let end = value.iter().position(|&b| b == b'"' || b == b'\\')?;
        if value.get(end) != Some(&b'"') {
            return None;
        }
        return value.get(..end);
    }
    None
}

fn skip_space(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_string_fields() {
        let message = br#"{"type": "SendMessage", "conversation_id":"c-42","content":"type"}"#;
        assert_eq!(string_field(message, "type"), Some(&b"SendMessage"[..]));
        assert_eq!(string_field(message, "conversation_id"), Some(&b"c-42"[..]));
        assert_eq!(string_field(message, "parent_message_id"), None);
        assert_eq!(
            string_field(br#"{"subtype":"x","type":"Ping"}"#, "type"),
            Some(&b"Ping"[..])
        );
        assert_eq!(string_field(br#"{"type":7}"#, "type"), None);
        assert_eq!(
            string_field(br#"{"type":"Send"#, "type"),
            None,
            "cut off by the prefix"
        );
        assert_eq!(string_field(br#"{"type":"a\"b"}"#, "type"), None);
        assert_eq!(string_field(b"\xff\xfe garbage \"type", "type"), None);
        assert_eq!(string_field(b"", "type"), None);
    }
}
