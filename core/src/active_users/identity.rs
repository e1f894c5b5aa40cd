//! Who sent a request, as a hash: from a JWT claim or a header, never kept or shown as text.
//!
//! The JWT is read without verifying its signature: the gateway only counts users, the
//! services still authenticate them. A forged token can add at most one "user" per distinct
//! claim value, which the sketch counts in fixed memory.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::config::business::UserSource;

use super::hyperloglog::hash;

/// Longest JWT payload segment decoded; real ones are a few hundred bytes.
const MAX_PAYLOAD_LEN: usize = 8 * 1024;
/// Longest user id taken from a header or claim.
const MAX_ID_LEN: usize = 256;

/// base64url, with or without padding (RFC 7515 says without; some issuers pad).
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What the request carries that may identify its user.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    pub authorization: Option<&'a [u8]>,
    /// The raw `:path`, for a token in the query string.
    pub path: &'a [u8],
    /// The configured header's value (header source only).
    pub header: Option<&'a [u8]>,
}

/// The hash of the request's user, or `None` when it names none.
pub fn user_hash(source: &UserSource, credentials: &Credentials<'_>) -> Option<u64> {
    match source {
        UserSource::Header(_) => {
            let id = trim(credentials.header?);
            (!id.is_empty() && id.len() <= MAX_ID_LEN).then(|| hash(id))
        }
        UserSource::Jwt {
            claim,
            query_parameter,
        } => {
            let token = credentials
                .authorization
                .and_then(bearer_token)
                .or_else(|| {
                    query_parameter
                        .as_deref()
                        .and_then(|name| query_value(credentials.path, name))
                })?;
            let id = jwt_claim(token, claim)?;
            Some(hash(&id))
        }
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 7235).
fn bearer_token(authorization: &[u8]) -> Option<&[u8]> {
    let value = trim(authorization);
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| trim(rest))
        .filter(|t| !t.is_empty())
}

/// The first value of query parameter `name`. JWT characters need no percent-decoding.
fn query_value<'p>(path: &'p [u8], name: &str) -> Option<&'p [u8]> {
    let query_start = path.iter().position(|&b| b == b'?')?;
    let query = path.get(query_start + 1..)?;
    let query = query.split(|&b| b == b'#').next()?;
    query.split(|&b| b == b'&').find_map(|pair| {
        let value = pair.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        (!value.is_empty()).then_some(value)
    })
}

/// The value of `claim` in the JWT's payload, as bytes: a string's content, or a number's
/// JSON text. `None` for anything that is not `header.payload.signature` with such a claim.
pub fn jwt_claim(token: &[u8], claim: &str) -> Option<Vec<u8>> {
    let mut parts = token.split(|&b| b == b'.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.is_empty() || payload.len() > MAX_PAYLOAD_LEN {
        return None;
    }
    let json = BASE64URL.decode(payload).ok()?;
    let mut deserializer = serde_json::Deserializer::from_slice(&json);
    let id = ClaimSeed(claim).deserialize(&mut deserializer).ok()??;
    (!id.is_empty() && id.len() <= MAX_ID_LEN).then_some(id)
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Finds one key of a JSON object without building the object.
struct ClaimSeed<'c>(&'c str);

impl<'de> DeserializeSeed<'de> for ClaimSeed<'_> {
    type Value = Option<Vec<u8>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimSeed<'_> {
    type Value = Option<Vec<u8>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JWT claims object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if found.is_none() && key == self.0 {
                found = map.next_value::<ClaimValue>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A string or integer claim, as bytes; other JSON types are no id.
struct ClaimValue(Option<Vec<u8>>);

impl<'de> serde::Deserialize<'de> for ClaimValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ClaimValue, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = ClaimValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a claim value")
            }
            fn visit_str<E>(self, v: &str) -> Result<ClaimValue, E> {
                Ok(ClaimValue(Some(v.as_bytes().to_vec())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ClaimValue, E> {
                Ok(ClaimValue(Some(v.to_string().into_bytes())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ClaimValue, E> {
                Ok(ClaimValue(Some(v.to_string().into_bytes())))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ClaimValue, E> {
                Ok(ClaimValue(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ClaimValue, E> {
                Ok(ClaimValue(None))
            }
            fn visit_unit<E>(self) -> Result<ClaimValue, E> {
                Ok(ClaimValue(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ClaimValue, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ClaimValue(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClaimValue, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ClaimValue(None))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn token(payload: &str) -> Vec<u8> {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
        .into_bytes()
    }

    fn jwt() -> UserSource {
        UserSource::default()
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let cases: [(&str, Option<&[u8]>); 9] = [
            (r#"{"sub":"42","exp":1}"#, Some(b"42")),
            (
                r#"{"exp":1,"sub":"alice@example.com"}"#,
                Some(b"alice@example.com"),
            ),
            (r#"{"sub":42}"#, Some(b"42")),
            (r#"{"sub":-7}"#, Some(b"-7")),
            (r#"{"nested":{"sub":"x"},"sub":"y"}"#, Some(b"y")),
            (r#"{"sub":""}"#, None),
            (r#"{"sub":1.5}"#, None),
            (r#"{"sub":["a"]}"#, None),
            (r#"{"user_id":"42"}"#, None),
        ];
        for (payload, expected) in cases {
            assert_eq!(
                jwt_claim(&token(payload), "sub").as_deref(),
                expected,
                "{payload}"
            );
        }
        assert_eq!(
            jwt_claim(&token(r#"{"user_id":"42"}"#), "user_id").as_deref(),
            Some(&b"42"[..])
        );
    }

    #[test]
    fn malformed_tokens_name_no_user() {
        let long = format!(r#"{{"sub":"{}"}}"#, "a".repeat(MAX_ID_LEN + 1));
        let huge = format!(r#"{{"pad":"{}","sub":"x"}}"#, "a".repeat(MAX_PAYLOAD_LEN));
        let bad: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"abc".to_vec(),
            b"a.b".to_vec(),
            b"a.!!!.c".to_vec(),
            b"a..c".to_vec(),
            [token(r#"{"sub":"1"}"#), b".extra".to_vec()].concat(),
            token(r#"["sub","1"]"#),
            token(r#"{"sub":"1""#),
            token(&long),
            token(&huge),
        ];
        for token in bad {
            assert_eq!(
                jwt_claim(&token, "sub"),
                None,
                "{:?}",
                String::from_utf8_lossy(&token)
            );
        }
    }

    #[test]
    fn bearer_header_then_query_parameter() {
        let alice = token(r#"{"sub":"alice"}"#);
        let bob = token(r#"{"sub":"bob"}"#);
        let header = [b"Bearer ".as_slice(), &alice].concat();
        let lower = [b"bearer  ".as_slice(), &alice, b" "].concat();
        let path = [b"/ws/chat?room=1&token=".as_slice(), &bob, b"#frag"].concat();
        let credentials = |authorization, path| Credentials {
            authorization,
            path,
            header: None,
        };
        let alice_hash = Some(hash(b"alice"));
        let bob_hash = Some(hash(b"bob"));
        assert_eq!(
            user_hash(&jwt(), &credentials(Some(&header), b"/")),
            alice_hash
        );
        assert_eq!(
            user_hash(&jwt(), &credentials(Some(&lower), b"/")),
            alice_hash
        );
        assert_eq!(
            user_hash(&jwt(), &credentials(Some(&header), &path)),
            alice_hash
        );
        assert_eq!(user_hash(&jwt(), &credentials(None, &path)), bob_hash);
        assert_eq!(
            user_hash(&jwt(), &credentials(Some(b"Basic YTpi"), &path)),
            bob_hash
        );
        assert_eq!(
            user_hash(&jwt(), &credentials(None, b"/ws/chat?xtoken=a.b.c")),
            None
        );
        assert_eq!(
            user_hash(&jwt(), &credentials(Some(b"Bearer "), b"/")),
            None
        );
        let no_query = UserSource::Jwt {
            claim: "sub".into(),
            query_parameter: None,
        };
        assert_eq!(user_hash(&no_query, &credentials(None, &path)), None);
    }

    #[test]
    fn header_source() {
        let source = UserSource::Header("x-user-id".into());
        let with = |header| Credentials {
            header,
            ..Credentials::default()
        };
        assert_eq!(user_hash(&source, &with(Some(b" 42 "))), Some(hash(b"42")));
        assert_eq!(user_hash(&source, &with(Some(b""))), None);
        assert_eq!(user_hash(&source, &with(None)), None);
        assert_eq!(
            user_hash(&source, &with(Some(&[b'a'; MAX_ID_LEN + 1]))),
            None
        );
    }
}
