//! `/live` and `/ready` answered by the filter in a real Envoy, from real dependencies:
//! PostgreSQL and Redis behind their real exporters, the Veza stand-ins, and servers that fail
//! on purpose.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use veza_test_harness::dependencies::*;
use veza_test_harness::*;

fn get(envoy: &Envoy, path: &str) -> (u16, String) {
    http("GET", &envoy.url(path), &[], "").unwrap()
}

fn gauge(envoy: &Envoy, dependency: &str) -> Option<f64> {
    envoy
        .samples("dependency_up")
        .into_iter()
        .find(|s| s.label("dependency") == dependency)
        .map(|s| s.value)
}

const ALL_READY: &str = r#"{"status":"ready","checks":{"backend-api":{"status":"ready"},"chat":{"status":"ready"},"stream":{"status":"ready"},"database":{"status":"ready"},"redis":{"status":"ready","optional":true}}}"#;
const DATABASE_DOWN: &str = r#"{"status":"unready","checks":{"backend-api":{"status":"unready","error":"status 503"},"chat":{"status":"ready"},"stream":{"status":"ready"},"database":{"status":"unready","error":"metric pg_up is 0"},"redis":{"status":"ready","optional":true}}}"#;

#[test]
fn ready_follows_postgresql_through_the_real_exporter() {
    let (mut stack, config, ports) = VezaWithDatabases::start();
    let postgres = &mut stack.postgres;
    let envoy = Envoy::start(&config, ports, 2);

    assert_eq!(get(&envoy, "/ready"), (200, ALL_READY.to_owned()));
    poll(
        "dependency_up to be flushed",
        Duration::from_secs(5),
        || (gauge(&envoy, "database") == Some(1.0)).then_some(()),
    );
    assert_eq!(gauge(&envoy, "redis"), Some(1.0));

    postgres.stop();
    let stopped = Instant::now();
    let answer = poll(
        "/ready to see PostgreSQL down",
        Duration::from_secs(10),
        || {
            let answer = get(&envoy, "/ready");
            (answer.0 == 503).then_some(answer)
        },
    );
    // Within the database check's timeout (3 s: postgres_exporter itself takes about 1 s to
    // report pg_up 0) plus the cache period (1 s).
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "took {:?}",
        stopped.elapsed()
    );
    assert_eq!(answer.1, DATABASE_DOWN);
    poll("dependency_up to drop", Duration::from_secs(5), || {
        (gauge(&envoy, "database") == Some(0.0)).then_some(())
    });
    assert_eq!(gauge(&envoy, "backend-api"), Some(0.0));

    postgres.resume();
    poll("/ready to recover", Duration::from_secs(20), || {
        (get(&envoy, "/ready") == (200, ALL_READY.to_owned())).then_some(())
    });
    // At least three rounds ran (ready, down, recovered); histograms are flushed each second.
    poll(
        "the check durations to be flushed",
        Duration::from_secs(5),
        || {
            envoy
                .samples("dependency_check_duration_seconds_count")
                .iter()
                .any(|s| s.label("dependency") == "database" && s.value >= 3.0)
                .then_some(())
        },
    );
}

#[test]
fn each_failure_has_its_own_category_and_a_bounded_latency() {
    let hang = ScriptedServer::start(Script::Hang);
    let fails = ScriptedServer::start(Script::Respond(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nboom",
    ));
    let garbage = ScriptedServer::start(Script::Respond(
        "HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!",
    ));
    let fine = ScriptedServer::start(Script::Respond(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    ));
    // Reads the request and closes the connection without a word.
    let resets = ScriptedServer::start(Script::Respond(""));
    let nobody = free_port();
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let config = config
        .add_cluster("hangs", hang.port)
        .add_cluster("fails", fails.port)
        .add_cluster("garbage", garbage.port)
        .add_cluster("fine", fine.port)
        .add_cluster("refuses", nobody)
        .add_cluster("resets", resets.port)
        .plugin_configuration(
            r#"{"health": {"cache_ms": 0, "check_interval_ms": 0, "checks": [{"name": "hangs", "cluster": "hangs", "timeout_ms": 300}, {"name": "fails", "cluster": "fails"}, {"name": "garbage", "cluster": "garbage", "expect": {"json": {"pointer": "/status", "equals": "ok"}}}, {"name": "exporter", "cluster": "garbage", "expect": {"prometheus": {"metric": "pg_up", "equals": 1}}}, {"name": "refuses", "cluster": "refuses"}, {"name": "resets", "cluster": "resets"}, {"name": "missing", "cluster": "no_such_cluster"}, {"name": "fine", "cluster": "fine", "required": false}]}}"#,
        );
    let envoy = Envoy::start(&config, ports, 1);

    let started = Instant::now();
    let (status, body) = get(&envoy, "/ready");
    let latency = started.elapsed();
    assert_eq!(status, 503);
    assert_eq!(
        body,
        r#"{"status":"unready","checks":{"hangs":{"status":"unready","error":"timeout"},"fails":{"status":"unready","error":"status 500"},"garbage":{"status":"unready","error":"unparsable body"},"exporter":{"status":"unready","error":"metric pg_up missing"},"refuses":{"status":"unready","error":"refused"},"resets":{"status":"unready","error":"reset"},"missing":{"status":"unready","error":"unknown cluster"},"fine":{"status":"ready","optional":true}}}"#
    );
    // The slowest check times out at 300 ms by Envoy's dispatcher clock, which may fire a
    // millisecond early against this one now that the round starts at once (the native build
    // wakes its main thread; wasm ticks every 20 ms).
    assert!(latency >= Duration::from_millis(295), "{latency:?}");
    assert!(latency < Duration::from_millis(1_000), "{latency:?}");
    assert!(
        !body.contains("127.0.0.1"),
        "addresses stay hidden by default"
    );
    assert_eq!(hang.hits.load(Ordering::Relaxed), 1);
}

#[test]
fn a_probe_storm_costs_one_round_per_cache_period_per_worker() {
    let (standins, config, ports) = GatewayConfig::with_standins();
    let workers = 2;
    let envoy = Envoy::start(&config, ports, workers);
    let url = envoy.url("/ready");
    let started = Instant::now();
    let barrier = std::sync::Barrier::new(200);
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..200)
            .map(|_| {
                let (barrier, url) = (&barrier, &url);
                scope.spawn(move || {
                    barrier.wait();
                    http("GET", url, &[], "").unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    // The exporters are not running: every probe sees the same unready report.
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 503);
    let rounds = standins.hits.chat.load(Ordering::Relaxed);
    let periods = elapsed.as_secs() + 1;
    // Plus the gateway's start-up round, which no probe asked for.
    let bound = u64::from(workers) * periods + 1;
    assert!(
        (1..=bound).contains(&rounds),
        "{rounds} rounds for 200 probes in {elapsed:?} (bound {bound})"
    );
}

/// With nothing probing `/ready`, the gateway checks its dependencies at start-up: every
/// `dependency_up` series appears with its real state and whether the check is required.
#[test]
fn dependencies_are_reported_without_any_probe() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 2);
    // The stand-ins answer; the exporters are not running.
    let expected = [
        ("backend-api", "true", 1.0),
        ("chat", "true", 1.0),
        ("database", "true", 0.0),
        ("redis", "false", 0.0),
        ("stream", "true", 1.0),
    ];
    let seen = poll(
        "the start-up round's dependency_up",
        Duration::from_secs(10),
        || {
            let mut seen: Vec<(String, String, f64)> = envoy
                .samples("dependency_up")
                .into_iter()
                .map(|s| {
                    (
                        s.label("dependency").to_owned(),
                        s.label("required").to_owned(),
                        s.value,
                    )
                })
                .collect();
            seen.sort_by(|a, b| a.0.cmp(&b.0));
            (seen.len() == expected.len()).then_some(seen)
        },
    );
    let expected: Vec<(String, String, f64)> = expected
        .iter()
        .map(|(d, r, v)| ((*d).to_owned(), (*r).to_owned(), *v))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn live_answers_when_every_dependency_is_down() {
    let (config, ports) = GatewayConfig::gateway(free_port(), free_port(), free_port());
    let envoy = Envoy::start(&config, ports, 1);
    let (status, body) = get(&envoy, "/live");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "alive");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let timestamp = json["timestamp"].as_u64().unwrap();
    assert!(timestamp.abs_diff(now) <= 5, "{timestamp} vs {now}");
    let uptime = json["uptime"].as_str().unwrap();
    assert!(
        uptime.ends_with("ms") || uptime.ends_with('s'),
        "uptime in Go's duration form: {uptime}"
    );
    assert_eq!(json.as_object().unwrap().len(), 3);

    let (status, body) = get(&envoy, "/ready");
    assert_eq!(status, 503);
    assert_eq!(
        body,
        r#"{"status":"unready","checks":{"backend-api":{"status":"unready","error":"refused"},"chat":{"status":"unready","error":"refused"},"stream":{"status":"unready","error":"refused"},"database":{"status":"unready","error":"refused"},"redis":{"status":"unready","error":"refused","optional":true}}}"#
    );
    // The probes are requests like any other, under the gateway's own service.
    let counted = poll("the probes to be counted", Duration::from_secs(5), || {
        let samples = envoy.samples("http_requests_total");
        (samples.len() == 2).then_some(samples)
    });
    let label_sets: Vec<(String, String, String)> = counted
        .iter()
        .map(|s| {
            (
                s.label("endpoint").to_owned(),
                s.label("status").to_owned(),
                s.label("service").to_owned(),
            )
        })
        .collect();
    assert!(
        label_sets.contains(&("/live".into(), "200".into(), "gateway".into())),
        "{label_sets:?}"
    );
    assert!(
        label_sets.contains(&("/ready".into(), "503".into(), "gateway".into())),
        "{label_sets:?}"
    );
}

/// A waiting probe starts its round at once: the native build wakes its main thread for it
/// rather than ticking fast, the wasm build ticks every 20 ms. Without the wake, twenty
/// uncached probes would each wait for a background tick (a second apart): about ten seconds.
#[test]
fn an_uncached_probe_starts_its_round_at_once() {
    let (standins, config, ports) = GatewayConfig::with_standins();
    let config = config.plugin_configuration(r#"{"health": {"cache_ms": 0}}"#);
    let envoy = Envoy::start(&config, ports, 1);
    let before = standins.hits.chat.load(Ordering::Relaxed);
    let started = Instant::now();
    for _ in 0..20 {
        let (status, body) = get(&envoy, "/ready");
        assert_eq!(status, 503, "{body}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "20 probes took {elapsed:?}"
    );
    // Each probe had its own round (nothing cached).
    assert!(
        standins.hits.chat.load(Ordering::Relaxed) - before >= 20,
        "a round per probe"
    );
}
