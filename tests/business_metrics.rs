//! Business counters and `active_users`, end to end through the real Envoy (two
//! workers) with the shipped gateway config and the real `.wasm`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use veza_test_harness::*;

/// The label-less value of `metric`, once the filter has flushed it.
fn value(envoy: &Envoy, metric: &str) -> Option<f64> {
    envoy.samples(metric).first().map(|s| s.value)
}

fn wait_for(envoy: &Envoy, metric: &str, expected: f64) {
    let last = std::cell::Cell::new(None);
    poll(
        &format!("{metric} to reach {expected}"),
        Duration::from_secs(15),
        || {
            last.set(value(envoy, metric));
            (last.get() == Some(expected)).then_some(())
        },
    );
}

fn post(envoy: &Envoy, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    http("POST", &envoy.url(path), headers, body).unwrap().0
}

#[test]
fn business_counters_count_what_the_rules_say() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 2);
    // Defined at configuration: present at 0 before the first event.
    for metric in [
        "user_registrations_total",
        "user_logins_total",
        "user_logins_failed_total",
        "tracks_uploaded_total",
        "playlists_created_total",
    ] {
        assert_eq!(value(&envoy, metric), Some(0.0), "{metric} before traffic");
    }

    let account = r#"{"email":"a@veza.local","password":"pw","username":"a"}"#;
    for _ in 0..3 {
        assert_eq!(post(&envoy, "/api/v1/auth/register", &[], account), 200);
    }
    assert_eq!(post(&envoy, "/api/v1/auth/signup", &[], account), 200);
    assert_eq!(post(&envoy, "/api/v1/auth/register", &[], ""), 400);
    assert_eq!(
        post(
            &envoy,
            "/api/v1/auth/register",
            &[("x-standin-status", "409")],
            account
        ),
        409
    );
    for _ in 0..5 {
        assert_eq!(post(&envoy, "/api/v1/auth/login", &[], account), 200);
    }
    for _ in 0..2 {
        assert_eq!(
            post(&envoy, "/api/v1/auth/login", &[], r#"{"password":"wrong"}"#),
            401
        );
    }
    assert_eq!(
        http("GET", &envoy.url("/api/v1/auth/login"), &[], "")
            .unwrap()
            .0,
        405
    );
    for _ in 0..2 {
        assert_eq!(
            post(&envoy, "/api/v1/tracks?draft=1", &[], "audio bytes"),
            201
        );
    }
    assert_eq!(
        http("GET", &envoy.url("/api/v1/tracks"), &[], "")
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        post(&envoy, "/api/v1/playlists", &[], r#"{"name":"x"}"#),
        201
    );
    assert_eq!(
        post(
            &envoy,
            "/api/v1/playlists",
            &[("x-standin-status", "500")],
            "{}"
        ),
        500
    );

    wait_for(&envoy, "user_registrations_total", 4.0);
    wait_for(&envoy, "user_logins_total", 5.0);
    wait_for(&envoy, "user_logins_failed_total", 2.0);
    wait_for(&envoy, "tracks_uploaded_total", 2.0);
    wait_for(&envoy, "playlists_created_total", 1.0);
}

#[test]
fn active_users_counts_distinct_bearers_across_workers() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 2);
    wait_for(&envoy, "active_users", 0.0);

    // Six users log in and use the API with their tokens, each several times.
    let tokens: Vec<String> = (0..6)
        .map(|n| veza_standins::access_token(&format!("user{n}@veza.local")))
        .collect();
    for round in 0..4 {
        for token in &tokens {
            let bearer = format!("Bearer {token}");
            let path = format!("/api/v1/tracks/{round}");
            let (status, _) =
                http("GET", &envoy.url(&path), &[("authorization", &bearer)], "").unwrap();
            assert_eq!(status, 200);
        }
    }
    // A seventh only on the chat WebSocket path, whose token is in the query string; an
    // eighth with a lowercase scheme.
    let chat = format!(
        "/ws/chat?token={}",
        veza_standins::access_token("user6@veza.local")
    );
    http("GET", &envoy.url(&chat), &[], "").unwrap();
    let lower = format!("bearer {}", veza_standins::access_token("user7@veza.local"));
    http(
        "GET",
        &envoy.url("/api/v1/tags"),
        &[("authorization", &lower)],
        "",
    )
    .unwrap();
    // Not users: no token, a malformed one, another scheme.
    for authorization in [
        "",
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
        "Bearer a.%%%.c",
    ] {
        http(
            "GET",
            &envoy.url("/api/v1/tags"),
            &[("authorization", authorization)],
            "",
        )
        .unwrap();
    }

    wait_for(&envoy, "active_users", 8.0);
    // No id reaches a metric or the log.
    let exposition = envoy.prometheus_text();
    assert!(!exposition.contains("user0"), "a user id in the metrics");
    assert!(
        !envoy.flushed_log_text().contains("user0"),
        "a user id in Envoy's log"
    );
}

#[test]
fn active_users_from_a_header_the_services_set() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let config = config.plugin_configuration(
        r#"{"active_users": {"source": {"header": "X-User-Id"}, "window_seconds": 60}, "business_metrics": []}"#,
    );
    let envoy = Envoy::start(&config, ports, 2);
    for id in ["17", "18", "17", " 19 ", "17"] {
        let (status, _) =
            http("GET", &envoy.url("/api/v1/tags"), &[("x-user-id", id)], "").unwrap();
        assert_eq!(status, 200);
    }
    // A bearer token is not the configured source.
    let bearer = format!("Bearer {}", veza_standins::access_token("someone"));
    http(
        "GET",
        &envoy.url("/api/v1/tags"),
        &[("authorization", &bearer)],
        "",
    )
    .unwrap();
    wait_for(&envoy, "active_users", 3.0);
    // No business rules configured: no business counter exists.
    assert_eq!(value(&envoy, "user_logins_total"), None);
}
