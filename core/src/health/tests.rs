use super::*;
use crate::config;

fn settings(json: &str) -> HealthSettings {
    config::load(Some(json.as_bytes())).unwrap().health
}

#[test]
fn classify_paths_methods_and_authorities() {
    let load = |json: &str| config::load(Some(json.as_bytes())).unwrap();
    let default = load("{}");
    let limited = load(
        r#"{"health": {"live_path": "/healthz", "authorities": ["gateway.veza.internal", "[::1]"]}}"#,
    );
    let disabled = load(r#"{"health": {"enabled": false}}"#);
    let cases: [(&config::Settings, &str, &str, &str, Endpoint); 12] = [
        (&default, "GET", "/live", "gw", Endpoint::Live),
        (&default, "HEAD", "/ready?x=1", "gw", Endpoint::Ready),
        (&default, "POST", "/ready", "gw", Endpoint::Other),
        // One trailing slash is ignored, as for every route: what is answered here is
        // exactly what is counted under service="gateway".
        (&default, "GET", "/ready/", "gw", Endpoint::Ready),
        (&default, "GET", "/ready/x", "gw", Endpoint::Other),
        (&default, "GET", "/api/v1/tracks", "gw", Endpoint::Other),
        (
            &limited,
            "GET",
            "/live",
            "gateway.veza.internal",
            Endpoint::Other,
        ),
        (
            &limited,
            "GET",
            "/healthz",
            "Gateway.Veza.Internal:8080",
            Endpoint::Live,
        ),
        (&limited, "GET", "/healthz", "[::1]:80", Endpoint::Live),
        (&limited, "GET", "/ready", "evil.example", Endpoint::Other),
        (
            &limited,
            "GET",
            "/ready",
            "gateway.veza.internal.evil.example",
            Endpoint::Other,
        ),
        (&disabled, "GET", "/live", "gw", Endpoint::Other),
    ];
    for (settings, method, path, authority, expected) in cases {
        assert_eq!(
            Health::classify(
                &settings.health,
                settings.routes.resolve(
                    crate::labels::Method::parse(method.as_bytes()),
                    path.as_bytes()
                ),
                authority.as_bytes()
            ),
            expected,
            "{method} {path} @ {authority}"
        );
    }
}

#[test]
fn live_answer() {
    let answer = Health::live(1_700_000_123_456_000_000, 1_700_000_000_000_000_000);
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        r#"{"status":"alive","timestamp":1700000123,"uptime":"2m3.456s"}"#
    );
}

#[test]
fn go_durations() {
    assert_eq!(go_duration(0), "0ms");
    assert_eq!(go_duration(750_000_000), "750ms");
    assert_eq!(go_duration(42_500_000_000), "42.5s");
    assert_eq!(go_duration(187_000_000_000), "3m7s");
    assert_eq!(go_duration(93_600_250_000_000), "26h0m0.25s");
}

fn ok(body: &str) -> Option<CallResult<'_>> {
    Some(CallResult {
        status: 200,
        body: body.as_bytes(),
    })
}

#[test]
fn a_round_caches_its_report_and_answers_every_waiter() {
    let s = settings("{}");
    let mut health = Health::default();
    let second = 1_000_000_000;
    assert_eq!(health.ready(&s, second, 7), None);
    assert_eq!(health.ready(&s, second, 8), None);
    health.forget(8);
    assert_eq!(health.ready(&s, second, 9), None);
    assert!(health.wants_round());
    health.start_round(&s, second);
    assert!(!health.wants_round());
    for index in 0..5 {
        health.dispatched(index, Ok(100 + index as u32));
    }
    assert!(!health.responded(&s, 100, ok(r#"{"status":"ok"}"#), second + 1));
    assert!(!health.responded(&s, 101, ok("OK"), second + 2));
    assert!(!health.responded(&s, 102, None, second + 3));
    assert!(!health.responded(&s, 103, ok("# HELP\npg_up 1\n"), second + 4));
    assert!(health.responded(&s, 104, ok("redis_up 0\n"), second + 5));
    let finished = health.finish(second + 5).unwrap();
    assert_eq!(finished.waiters, [7, 9]);
    assert_eq!(finished.durations_nanos, [1, 2, 3, 4, 5]);
    let answer = answer(&s, finished.report);
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.body,
        r#"{"status":"unready","checks":{"backend-api":{"status":"ready"},"chat":{"status":"ready"},"stream":{"status":"unready","error":"reset"},"database":{"status":"ready"},"redis":{"status":"unready","error":"metric redis_up is 0","optional":true}}}"#
    );
    // Fresh for the cache period, then a new round.
    assert_eq!(
        health.ready(&s, second + 5 + 999_999_999, 10),
        Some(answer.clone())
    );
    assert_eq!(health.ready(&s, 2 * second + 5, 11), None);
}

#[test]
fn optional_checks_never_fail_readiness_and_dispatch_failures_complete_the_round() {
    let s = settings("{}");
    let mut health = Health::default();
    assert_eq!(health.ready(&s, 1, 1), None);
    health.start_round(&s, 1);
    for index in 0..4 {
        health.dispatched(index, Ok(index as u32));
    }
    health.dispatched(4, Err(Failure::UnknownCluster));
    for token in 0..3 {
        health.responded(&s, token, ok(""), 2);
    }
    assert!(health.responded(&s, 3, ok("pg_up 1"), 2));
    let finished = health.finish(2).unwrap();
    assert!(finished.report.ready(&s));
    assert_eq!(
        finished.report.to_json(&s),
        r#"{"status":"ready","checks":{"backend-api":{"status":"ready"},"chat":{"status":"ready"},"stream":{"status":"ready"},"database":{"status":"ready"},"redis":{"status":"unready","error":"unknown cluster","optional":true}}}"#
    );
}

#[test]
fn a_call_that_never_answers_expires() {
    let s =
        settings(r#"{"health": {"checks": [{"name": "x", "cluster": "c", "timeout_ms": 100}]}}"#);
    let mut health = Health::default();
    health.ready(&s, 0, 1);
    health.start_round(&s, 0);
    health.dispatched(0, Ok(5));
    assert!(!health.expire(&s, 2_000_000_000));
    assert!(health.expire(&s, 2_200_000_000));
    let finished = health.finish(2_200_000_000).unwrap();
    assert_eq!(
        finished.report.to_json(&s),
        r#"{"status":"unready","checks":{"x":{"status":"unready","error":"timeout"}}}"#
    );
}

#[test]
fn details_only_when_exposed() {
    let json =
        r#"{"health": {"expose_errors": EXPOSE, "checks": [{"name": "x", "cluster": "c"}]}}"#;
    for (expose, expected) in [
        ("false", r#""error":"refused""#),
        (
            "true",
            r#""error":"refused: upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused""#,
        ),
    ] {
        let s = settings(&json.replace("EXPOSE", expose));
        let mut health = Health::default();
        health.ready(&s, 0, 1);
        health.start_round(&s, 0);
        health.dispatched(0, Ok(1));
        let body = b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused";
        assert!(health.responded(&s, 1, Some(CallResult { status: 503, body }), 1));
        let finished = health.finish(1).unwrap();
        assert!(
            finished.report.to_json(&s).contains(expected),
            "{}",
            finished.report.to_json(&s)
        );
    }
}

#[test]
fn too_many_waiters_get_an_answer_at_once() {
    let s = settings("{}");
    let mut health = Health::default();
    for id in 0..MAX_WAITERS as u32 {
        assert_eq!(health.ready(&s, 0, id), None);
    }
    assert_eq!(health.ready(&s, 0, u32::MAX).map(|a| a.status), Some(503));
}
