//! Bounded label values: HTTP methods and response statuses.

/// The `method` label: the standard methods, anything else is `OTHER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other,
}

impl Method {
    pub const ALL: [Method; 10] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Connect,
        Method::Options,
        Method::Trace,
        Method::Patch,
        Method::Other,
    ];

    /// Methods are case-sensitive (RFC 9110): `get` is not `GET`.
    pub fn parse(raw: &[u8]) -> Method {
        match raw {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other => "OTHER",
        }
    }
}

/// A set of methods, for method-qualified routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSet(u16);

impl MethodSet {
    pub const EMPTY: MethodSet = MethodSet(0);
    pub const ANY: MethodSet = MethodSet(u16::MAX);

    pub fn with(self, method: Method) -> MethodSet {
        MethodSet(self.0 | 1 << method as u16)
    }

    pub fn contains(self, method: Method) -> bool {
        self.0 & (1 << method as u16) != 0
    }

    pub fn overlaps(self, other: MethodSet) -> bool {
        self.0 & other.0 != 0
    }
}

impl MethodSet {
    /// A configuration's method list: `"POST"` or `"GET,PUT"` (case-sensitive, spaces around
    /// names ignored). The error names the first word that is not a standard method.
    pub fn parse_list(text: &str) -> Result<MethodSet, String> {
        let mut set = MethodSet::EMPTY;
        for name in text.split(',') {
            set = set.with(Method::parse_standard(name.trim())?);
        }
        Ok(set)
    }
}

impl Method {
    /// One standard method from a configuration, or the error naming it.
    pub fn parse_standard(name: &str) -> Result<Method, String> {
        match Method::parse(name.as_bytes()) {
            Method::Other => Err(format!(
                "{name:?} is not a standard HTTP method (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)"
            )),
            method => Ok(method),
        }
    }
}

/// A status a configuration matches responses against: a class (`"2xx"`) or a code
/// (`"401"`), always three characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPattern {
    /// 1 to 5.
    Class(u8),
    /// 100 to 599.
    Code(u16),
}

impl StatusPattern {
    pub fn parse(text: &str) -> Result<StatusPattern, String> {
        let pattern = match text.as_bytes() {
            [class @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                Some(StatusPattern::Class(class - b'0'))
            }
            [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => text.parse().ok().map(StatusPattern::Code),
            _ => None,
        };
        pattern.ok_or_else(|| {
            format!("{text:?} must be a class from \"1xx\" to \"5xx\" or a code from 100 to 599")
        })
    }

    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusPattern::Class(class) => status / 100 == u16::from(class),
            StatusPattern::Code(code) => status == code,
        }
    }
}

/// The `status` label. Exact codes for 100..=599; `0` when Envoy sent no response (the
/// downstream reset first); `other` for anything outside the HTTP range. The overflow series
/// keep only the class (`5xx` still matches the usual `status=~"5.."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(u16);

const STATUS_INVALID: u16 = 600;
const STATUS_CLASS_BASE: u16 = 601;

impl Status {
    pub const NONE: Status = Status(0);

    pub fn from_code(code: Option<u64>) -> Status {
        match code {
            None | Some(0) => Status::NONE,
            Some(code @ 100..=599) => Status(code as u16),
            Some(_) => Status(STATUS_INVALID),
        }
    }

    /// The same status reduced to its class, for overflow series.
    pub fn class(self) -> Status {
        match self.0 {
            100..=599 => Status(STATUS_CLASS_BASE + self.0 / 100 - 1),
            _ => self,
        }
    }

    pub fn code(self) -> Option<u16> {
        (100..=599).contains(&self.0).then_some(self.0)
    }

    /// Packed form for series keys: fits in 10 bits.
    pub fn packed(self) -> u16 {
        self.0
    }

    pub fn label(self) -> String {
        match self.0 {
            0 => "0".to_owned(),
            STATUS_INVALID => "other".to_owned(),
            code if code >= STATUS_CLASS_BASE => format!("{}xx", code - STATUS_CLASS_BASE + 1),
            code => code.to_string(),
        }
    }
}

/// The code in a `:status` header: 1 to 3 ASCII digits. Anything else yields a code outside
/// the HTTP range, which the `status` label shows as `other`.
pub fn status_code_from_header(value: &[u8]) -> u64 {
    const INVALID: u64 = 1000;
    if value.is_empty() || value.len() > 3 || !value.iter().all(u8::is_ascii_digit) {
        return INVALID;
    }
    value
        .iter()
        .fold(0, |code, digit| code * 10 + u64::from(digit - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_patterns_are_three_characters() {
        assert_eq!(StatusPattern::parse("2xx"), Ok(StatusPattern::Class(2)));
        assert_eq!(StatusPattern::parse("5XX"), Ok(StatusPattern::Class(5)));
        assert_eq!(StatusPattern::parse("401"), Ok(StatusPattern::Code(401)));
        for bad in [
            "0200", "200 ", "6xx", "0xx", "099", "600", "2x", "", "+20", "xxx",
        ] {
            assert!(StatusPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(StatusPattern::Class(2).matches(204));
        assert!(!StatusPattern::Class(2).matches(301));
        assert!(StatusPattern::Code(401).matches(401));
        assert!(!StatusPattern::Code(401).matches(403));
    }

    #[test]
    fn method_lists() {
        let set = MethodSet::parse_list("GET, PUT").unwrap();
        assert!(set.contains(Method::Get) && set.contains(Method::Put));
        assert!(!set.contains(Method::Post));
        assert_eq!(
            MethodSet::parse_list("GET,get"),
            Err("\"get\" is not a standard HTTP method (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)".to_owned())
        );
    }

    #[test]
    fn methods() {
        for method in Method::ALL {
            if method != Method::Other {
                assert_eq!(Method::parse(method.as_str().as_bytes()), method);
            }
        }
        assert_eq!(Method::parse(b"get"), Method::Other);
        assert_eq!(Method::parse(b"PROPFIND"), Method::Other);
        assert_eq!(Method::parse(b"GET\0"), Method::Other);
        assert_eq!(Method::Other.as_str(), "OTHER");
        let set = MethodSet::EMPTY.with(Method::Get).with(Method::Put);
        assert!(set.contains(Method::Put) && !set.contains(Method::Post));
        assert!(MethodSet::ANY.contains(Method::Other));
        assert!(set.overlaps(MethodSet::ANY) && !set.overlaps(MethodSet::EMPTY.with(Method::Post)));
    }

    #[test]
    fn status_headers() {
        assert_eq!(status_code_from_header(b"200"), 200);
        assert_eq!(status_code_from_header(b"503"), 503);
        assert_eq!(status_code_from_header(b"42"), 42);
        for bad in [&b""[..], b"2000", b"20x", b" 200", b"-1"] {
            assert_eq!(
                Status::from_code(Some(status_code_from_header(bad))).label(),
                "other"
            );
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(Status::from_code(Some(200)).label(), "200");
        assert_eq!(Status::from_code(Some(503)).label(), "503");
        assert_eq!(Status::from_code(Some(101)).label(), "101");
        assert_eq!(Status::from_code(None).label(), "0");
        assert_eq!(Status::from_code(Some(0)).label(), "0");
        assert_eq!(Status::from_code(Some(99)).label(), "other");
        assert_eq!(Status::from_code(Some(600)).label(), "other");
        assert_eq!(Status::from_code(Some(u64::MAX)).label(), "other");
        assert_eq!(Status::from_code(Some(503)).class().label(), "5xx");
        assert_eq!(Status::from_code(Some(101)).class().label(), "1xx");
        assert_eq!(Status::from_code(Some(204)).class().label(), "2xx");
        assert_eq!(Status::NONE.class().label(), "0");
        assert_eq!(Status::from_code(Some(700)).class().label(), "other");
        assert_eq!(Status::from_code(Some(404)).code(), Some(404));
        assert_eq!(Status::NONE.code(), None);
    }
}
