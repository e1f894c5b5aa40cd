//! The field a configuration error is about (`services[0].routes[3]`), found from where
//! serde_json stopped.
//!
//! serde_json reports the line and column of an error but not the field. Walking the document
//! up to that position names it: the open objects' current keys and the open arrays' indices.
//! That is one small non-generic function; a path-tracking deserializer (serde_path_to_error,
//! which `tests/differential.rs` checks this against) wraps every configuration type in generic
//! code of its own, 50 KB more in the module.

use serde_json::error::Category;

/// One open container on the way to the error.
enum Frame {
    /// An object, and the key whose value is being read (none before the first key).
    Object { key: Option<String> },
    /// An array, and the index of the element being read.
    Array { index: usize },
}

/// The path of the field whose value spans the error position: keys joined by `.`, array
/// indices as `[i]`; empty when the document as a whole is at fault.
///
/// An unknown field's error falls just after its key, so the key is part of the path; a
/// missing field's falls just after its object's `}`, so the path is the object's.
pub fn field_path(json: &[u8], error: &serde_json::Error) -> String {
    let Some(offset) = offset_of(json, error.line(), error.column()) else {
        return String::new();
    };
    let syntax = error.classify() == Category::Syntax;
    let mut stack: Vec<Frame> = Vec::new();
    let mut expecting_key = false;
    let mut last_was_key = false;
    let mut pos = 0;
    while pos < offset {
        let Some(&byte) = json.get(pos) else { break };
        if !byte.is_ascii_whitespace() && byte != b':' {
            last_was_key = false;
        }
        // A syntax error is placed just after the byte at fault: a container opening or
        // closing there is where the path ends.
        if syntax && matches!(byte, b'{' | b'[' | b'}' | b']') && pos + 1 == offset {
            break;
        }
        match byte {
            b'{' => {
                stack.push(Frame::Object { key: None });
                expecting_key = true;
            }
            b'[' => {
                stack.push(Frame::Array { index: 0 });
                expecting_key = false;
            }
            b'}' | b']' => {
                stack.pop();
                expecting_key = false;
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { key }) => {
                    *key = None;
                    expecting_key = true;
                }
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            b'"' => {
                let end = string_end(json, pos);
                if expecting_key {
                    if let Some(Frame::Object { key }) = stack.last_mut() {
                        *key = Some(decode_key(json.get(pos..end).unwrap_or_default()));
                        last_was_key = true;
                    }
                    expecting_key = false;
                }
                pos = end;
                continue;
            }
            _ => {}
        }
        pos += 1;
    }
    // An enum's variant is the key of its object, but the path is the enum's, as it is for a
    // unit variant given as a string.
    if last_was_key && error.to_string().starts_with("unknown variant") {
        if let Some(Frame::Object { key }) = stack.last_mut() {
            *key = None;
        }
    }
    render(&stack)
}

/// The byte offset of serde_json's (line, column): line 1-based, column the bytes read on
/// that line; `None` when it is not in the document
/// (serde_json reports line 0 for errors that have no position).
fn offset_of(json: &[u8], line: usize, column: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let line_start = if line == 1 {
        0
    } else {
        json.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(line - 2)
            .map(|(i, _)| i + 1)?
    };
    Some((line_start + column).min(json.len()))
}

/// The offset just past the string that starts at `start` (its opening quote).
fn string_end(json: &[u8], start: usize) -> usize {
    let mut pos = start + 1;
    while let Some(&byte) = json.get(pos) {
        match byte {
            b'\\' => pos += 2,
            b'"' => return pos + 1,
            _ => pos += 1,
        }
    }
    json.len()
}

/// A key as written, with its escapes decoded.
fn decode_key(quoted: &[u8]) -> String {
    serde_json::from_slice::<String>(quoted).unwrap_or_else(|_| {
        let inner = quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default();
        String::from_utf8_lossy(inner).into_owned()
    })
}

fn render(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Object { key: Some(key) } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object { key: None } => {}
            Frame::Array { index } => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path for the error serde_json gives when `json` is read as `T`.
    fn path_of<T: serde::de::DeserializeOwned + std::fmt::Debug>(json: &str) -> String {
        let err = serde_json::from_str::<T>(json).unwrap_err();
        field_path(json.as_bytes(), &err)
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        #[serde(default)]
        inner: Vec<Inner>,
        #[serde(default)]
        count: u32,
        #[serde(default)]
        source: Option<Source>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    #[allow(dead_code)]
    enum Source {
        Jwt { claim: String },
        Header(String),
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn names_the_field_of_each_kind_of_error() {
        let cases = [
            (r#"{"count": "x"}"#, "count"),
            (r#"{"count": -1}"#, "count"),
            (r#"{"count": [1]}"#, "count"),
            (r#"{"colour": 1}"#, "colour"),
            (r#"{"inner": [{"name": "a"}, {"tags": []}]}"#, "inner[1]"),
            (
                r#"{"inner": [{"name": "a", "tags": ["t", 7]}]}"#,
                "inner[0].tags[1]",
            ),
            (
                r#"{"inner": [{"name": "a", "tags": ["t", {}]}]}"#,
                "inner[0].tags[1]",
            ),
            (r#"{"inner": [{"name": "a", "size": 1}]}"#, "inner[0].size"),
            (
                "{\n  \"inner\": [\n    {\"name\": 3}\n  ]\n}",
                "inner[0].name",
            ),
            (r#"{"count": 1, "inner": 5}"#, "inner"),
            (
                r#"{"inner": [{"name": "a", "tags": [[]]}]}"#,
                "inner[0].tags[0]",
            ),
            (r#"{"c\u006funt": "x"}"#, "count"),
            (r#"{"source": {"jwt": {"claim": 1}}}"#, "source.jwt.claim"),
            (r#"{"source": {}}"#, "source"),
            // serde_json stops at the comma, after the variant's value.
            (
                r#"{"source": {"jwt": {"claim": "a"}, "header": "b"}}"#,
                "source.jwt.claim",
            ),
            (r#"{"source": {"cookie": "a"}}"#, "source"),
            (r#"{"source": {"header": "a"}, "count": "x"}"#, "count"),
            (r#"{"inner": [{"name": "a\"#, "inner[0].name"),
            ("{", ""),
            ("{} {}", ""),
        ];
        for (json, expected) in cases {
            assert_eq!(path_of::<Outer>(json), expected, "{json}");
        }
    }

    #[test]
    fn positions_are_bytes_into_the_line() {
        assert_eq!(offset_of(b"{\"a\": 1}", 0, 0), None);
        assert_eq!(offset_of(b"{\"a\": 1}", 3, 0), None);
        assert_eq!(offset_of(b"{\n\"a\": 1}", 2, 3), Some(5));
        assert_eq!(offset_of(b"{\"a\": 1}", 1, 99), Some(8));
    }
}
