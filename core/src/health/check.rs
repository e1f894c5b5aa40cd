//! Judging one check's call: what it means to be ready, and a category for every way not to be.

use super::config::Check;

/// The response to a check's call.
#[derive(Debug, Clone, Copy)]
pub struct CallResult<'a> {
    pub status: u16,
    /// The body, possibly cut at the read limit.
    pub body: &'a [u8],
}

/// Why a check is unready. `category()` is what `/ready` shows by default: it names no host
/// or address.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// No answer within the check's timeout.
    Timeout,
    /// The connection was refused.
    Refused,
    /// The connection or stream was reset, or the call failed with no response.
    Reset,
    /// Envoy had no healthy host in the cluster.
    NoHealthyUpstream,
    /// Envoy has no cluster of that name.
    UnknownCluster,
    /// Envoy refused to make the call for another reason.
    DispatchFailed,
    /// A status outside the expected one.
    Status(u16),
    BodyMismatch,
    Unparsable,
    JsonMismatch(String),
    MetricMissing(String),
    MetricValue(String, f64),
}

impl Failure {
    pub fn category(&self) -> String {
        match self {
            Failure::Timeout => "timeout".to_owned(),
            Failure::Refused => "refused".to_owned(),
            Failure::Reset => "reset".to_owned(),
            Failure::NoHealthyUpstream => "no healthy upstream".to_owned(),
            Failure::UnknownCluster => "unknown cluster".to_owned(),
            Failure::DispatchFailed => "dispatch failed".to_owned(),
            Failure::Status(code) => format!("status {code}"),
            Failure::BodyMismatch => "body mismatch".to_owned(),
            Failure::Unparsable => "unparsable body".to_owned(),
            Failure::JsonMismatch(pointer) => format!("field {pointer} mismatch"),
            Failure::MetricMissing(metric) => format!("metric {metric} missing"),
            Failure::MetricValue(metric, value) => format!("metric {metric} is {value}"),
        }
    }
}

/// A check's result: `failure` is `None` when ready; `detail` is shown only with
/// `expose_errors` (it can name internal hosts).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub failure: Option<Failure>,
    pub detail: Option<String>,
}

const DETAIL_LEN: usize = 200;

pub fn evaluate(check: &Check, result: Option<CallResult<'_>>) -> Outcome {
    let Some(result) = result else {
        return unready(Failure::Reset, None);
    };
    let body = result.body;
    if let Some(failure) = envoy_local_reply(result.status, body) {
        return unready(failure, Some(detail(body)));
    }
    if !check.expect.status.matches(result.status) {
        return unready(Failure::Status(result.status), Some(detail(body)));
    }
    if let Some(needle) = &check.expect.body_contains {
        if !contains(body, needle.as_bytes()) {
            return unready(Failure::BodyMismatch, Some(detail(body)));
        }
    }
    if let Some(json) = &check.expect.json {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return unready(Failure::Unparsable, Some(detail(body)));
        };
        if value.pointer(&json.pointer) != Some(&json.equals) {
            return unready(
                Failure::JsonMismatch(json.pointer.clone()),
                Some(detail(body)),
            );
        }
    }
    if let Some(expect) = &check.expect.prometheus {
        match prometheus_sample(body, &expect.metric) {
            None => return unready(Failure::MetricMissing(expect.metric.clone()), None),
            Some(None) => return unready(Failure::Unparsable, None),
            Some(Some(value)) if value != expect.equals => {
                return unready(Failure::MetricValue(expect.metric.clone(), value), None)
            }
            Some(Some(_)) => {}
        }
    }
    Outcome {
        failure: None,
        detail: None,
    }
}

fn unready(failure: Failure, detail: Option<String>) -> Outcome {
    Outcome {
        failure: Some(failure),
        detail,
    }
}

/// Envoy answers a failed call itself, with these bodies (router's local replies).
/// The failure an Envoy-generated reply stands for (the upstream never answered).
pub fn envoy_local_reply(status: u16, body: &[u8]) -> Option<Failure> {
    match status {
        504 if body.starts_with(b"upstream request timeout") => Some(Failure::Timeout),
        503 if body == b"no healthy upstream" => Some(Failure::NoHealthyUpstream),
        503 if body.starts_with(b"upstream connect error or disconnect/reset before headers") => {
            if contains(body, b"Connection refused") || contains(body, b"connection failure") {
                Some(Failure::Refused)
            } else {
                Some(Failure::Reset)
            }
        }
        _ => None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first sample of `metric` in a Prometheus text exposition: `None` if absent,
/// `Some(None)` if its value does not parse.
pub fn prometheus_sample(body: &[u8], metric: &str) -> Option<Option<f64>> {
    let text = String::from_utf8_lossy(body);
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            labelled.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with([' ', '\t']) {
            Some(rest)
        } else {
            continue;
        };
        return Some(
            value
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok()),
        );
    }
    None
}

fn detail(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(DETAIL_LEN)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn check(json: &str) -> Check {
        let config = format!(r#"{{"health": {{"checks": [{json}]}}}}"#);
        config::load(Some(config.as_bytes()))
            .unwrap()
            .health
            .checks
            .remove(0)
    }

    fn failure(check: &Check, status: u16, body: &str) -> Option<String> {
        evaluate(
            check,
            Some(CallResult {
                status,
                body: body.as_bytes(),
            }),
        )
        .failure
        .map(|f| f.category())
    }

    #[test]
    fn status_classes_and_codes() {
        let plain = check(r#"{"name": "a", "cluster": "c"}"#);
        assert_eq!(failure(&plain, 200, ""), None);
        assert_eq!(failure(&plain, 204, ""), None);
        assert_eq!(failure(&plain, 500, "boom").as_deref(), Some("status 500"));
        assert_eq!(failure(&plain, 301, "").as_deref(), Some("status 301"));
        let exact = check(r#"{"name": "a", "cluster": "c", "expect": {"status": "204"}}"#);
        assert_eq!(failure(&exact, 200, "").as_deref(), Some("status 200"));
        assert_eq!(failure(&exact, 204, ""), None);
        assert_eq!(evaluate(&plain, None).failure, Some(Failure::Reset));
    }

    #[test]
    fn envoy_failures_have_their_own_categories() {
        let plain = check(r#"{"name": "a", "cluster": "c"}"#);
        assert_eq!(
            failure(&plain, 504, "upstream request timeout").as_deref(),
            Some("timeout")
        );
        assert_eq!(
            failure(&plain, 503, "no healthy upstream").as_deref(),
            Some("no healthy upstream")
        );
        assert_eq!(
            failure(&plain, 503, "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused").as_deref(),
            Some("refused")
        );
        assert_eq!(
            failure(&plain, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination").as_deref(),
            Some("reset")
        );
        // A service's own 503 is a status, not an Envoy failure.
        assert_eq!(
            failure(&plain, 503, r#"{"status":"degraded"}"#).as_deref(),
            Some("status 503")
        );
    }

    #[test]
    fn body_json_and_prometheus_expectations() {
        let body =
            check(r#"{"name": "a", "cluster": "c", "expect": {"body_contains": "healthy"}}"#);
        assert_eq!(failure(&body, 200, r#"{"status":"healthy"}"#), None);
        assert_eq!(
            failure(&body, 200, "nope").as_deref(),
            Some("body mismatch")
        );
        let json = check(
            r#"{"name": "a", "cluster": "c", "expect": {"json": {"pointer": "/status", "equals": "ok"}}}"#,
        );
        assert_eq!(failure(&json, 200, r#"{"status":"ok","db":1}"#), None);
        assert_eq!(
            failure(&json, 200, r#"{"status":"down"}"#).as_deref(),
            Some("field /status mismatch")
        );
        assert_eq!(
            failure(&json, 200, "<html>").as_deref(),
            Some("unparsable body")
        );
        let metric = check(
            r#"{"name": "a", "cluster": "c", "expect": {"prometheus": {"metric": "pg_up", "equals": 1}}}"#,
        );
        assert_eq!(
            failure(
                &metric,
                200,
                "# HELP pg_up x\n# TYPE pg_up gauge\npg_up 1\n"
            ),
            None
        );
        assert_eq!(
            failure(&metric, 200, "pg_up 0\n").as_deref(),
            Some("metric pg_up is 0")
        );
        assert_eq!(
            failure(&metric, 200, "pg_upx 1\npg_up_total 1\n").as_deref(),
            Some("metric pg_up missing")
        );
        assert_eq!(
            failure(&metric, 200, "pg_up one\n").as_deref(),
            Some("unparsable body")
        );
        assert_eq!(
            failure(&metric, 200, r#"pg_up{server="db:5432"} 1e+00"#),
            None
        );
        assert_eq!(
            failure(&metric, 200, "\u{fffd}garbage\0\x01").as_deref(),
            Some("metric pg_up missing")
        );
    }

    #[test]
    fn details_are_bounded_and_printable() {
        let plain = check(r#"{"name": "a", "cluster": "c"}"#);
        let long = format!("{}\n\u{7}", "x".repeat(1000));
        let outcome = evaluate(
            &plain,
            Some(CallResult {
                status: 500,
                body: long.as_bytes(),
            }),
        );
        let detail = outcome.detail.unwrap();
        assert_eq!(detail.len(), DETAIL_LEN);
        assert!(detail.chars().all(|c| c == 'x'));
    }
}
