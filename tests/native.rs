//! The native build (the dynamic module, `make native`) against the wasm build, and what only
//! a library in Envoy's own process has to show: the same families, labels and values for the
//! same traffic; a panic caught at the hook, with Envoy alive and counting (these two load
//! each build they name); several workers sharing the gateway-wide state with exact counts
//! (the build `VEZA_BUILD` selects: four wasm VMs share it through Envoy's shared data).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tungstenite::Message;
use veza_observability::metrics::names;
use veza_test_harness::*;

/// A series: family name and its labels.
type SeriesKey = (String, BTreeMap<String, String>);

/// Every sample of the filter's families in Envoy's `/stats/prometheus`, by series.
fn filter_series(envoy: &Envoy) -> BTreeMap<SeriesKey, f64> {
    let text = envoy.prometheus_text();
    let mut all = BTreeMap::new();
    for declared in names::declared(["user_logins_total", "user_logins_failed_total"]) {
        for sample in parse_exposition(&text, &declared.name) {
            all.insert((declared.name.clone(), sample.labels), sample.value);
        }
    }
    all
}

/// Values that depend on time, not on the traffic: durations, the bitrate, and how many
/// dependency rounds ran (one at start-up, one per interval, one for a probe between).
fn timing(name: &str) -> bool {
    name.contains("duration_seconds") || name.starts_with(names::STREAM_BITRATE_BPS)
}

/// The same requests, WebSocket session and stream for either gateway.
fn traffic(envoy: &Envoy) {
    for path in [
        "/api/v1/tracks/1",
        "/api/v1/tracks/2",
        "/api/v1/tracks",
        "/api/v1/nope",
        "/health",
        "/live",
        "/stream/a.mp3?expires=99999999999&sig=s",
    ] {
        let _ = http_bytes("GET", &envoy.url(path), &[]);
    }
    assert_eq!(
        http(
            "POST",
            &envoy.url("/api/v1/auth/login"),
            &[],
            r#"{"email":"a@b.c","password":"wrong"}"#
        )
        .unwrap()
        .0,
        401
    );
    assert_eq!(http("GET", &envoy.url("/ready"), &[], "").unwrap().0, 503);
    let (mut socket, _) = tungstenite::connect(envoy.url("/ws").replace("http", "ws")).unwrap();
    socket.read().unwrap();
    socket
        .send(Message::text(
            r#"{"type":"SendMessage","conversation_id":"c1","content":"hi"}"#,
        ))
        .unwrap();
    socket.read().unwrap();
    socket.close(None).unwrap();
    let _ = socket.read();
    drop(socket);
    envoy.wait_websockets_closed("chat", 1.0);
    envoy.wait_for(
        "http_requests_total",
        &[
            ("method", "GET"),
            ("endpoint", "/stream/:filename"),
            ("status", "200"),
            ("service", "stream"),
        ],
        1.0,
    );
}

#[test]
fn both_builds_emit_the_same_families_labels_and_values_for_the_same_traffic() {
    let standins = veza_standins::spawn(Listeners::ephemeral().unwrap(), 0).unwrap();
    let exporters = (free_port(), free_port());
    let start = |relative: &str| {
        let (config, ports) = GatewayConfig::gateway_from(
            relative,
            Upstreams {
                backend: standins.backend.port(),
                chat: standins.chat.port(),
                stream: standins.stream.port(),
                postgres_exporter: exporters.0,
                redis_exporter: exporters.1,
            },
        );
        let envoy = Envoy::start(&config, ports, 2);
        traffic(&envoy);
        envoy
    };
    let wasm = start(Build::Wasm.gateway_config());
    let native = start(Build::Native.gateway_config());
    // Metrics only, counted in the module's access logger.
    let logged = start("envoy/envoy-native-metrics.yaml");
    // Both flush within a second; the counted totals settle.
    let settled = |envoy: &Envoy| {
        let mut last = filter_series(envoy);
        poll("the counts to settle", Duration::from_secs(10), || {
            std::thread::sleep(Duration::from_millis(1200));
            let now = filter_series(envoy);
            let same = now == last;
            last = now;
            same.then(|| last.clone())
        })
    };
    let mut from_wasm = settled(&wasm);
    let from_native = settled(&native);
    let from_logged = settled(&logged);
    // The VM's memory is the wasm build's alone: the native module's is Envoy's own.
    from_wasm.retain(|(name, _), _| name != names::VM_MEMORY_BYTES);
    let keys = |series: &BTreeMap<SeriesKey, f64>| series.keys().cloned().collect::<BTreeSet<_>>();
    let (wasm_keys, native_keys) = (keys(&from_wasm), keys(&from_native));
    let only_wasm: Vec<_> = wasm_keys.difference(&native_keys).collect();
    let only_native: Vec<_> = native_keys.difference(&wasm_keys).collect();
    assert!(
        only_wasm.is_empty() && only_native.is_empty(),
        "only in wasm: {only_wasm:?}\nonly in native: {only_native:?}"
    );
    assert!(from_wasm.len() > 100, "{} series", from_wasm.len());
    for (key, value) in &from_wasm {
        let rounds = key.0.starts_with(names::DEPENDENCY_CHECK_DURATION_SECONDS);
        if !timing(&key.0) || (key.0.ends_with("_count") && !rounds) {
            assert_eq!(Some(value), from_native.get(key), "{key:?}");
            // Counted at the access-log stage, each request once, the same.
            assert_eq!(Some(value), from_logged.get(key), "{key:?}, logged");
        }
    }
    assert_eq!(keys(&from_logged), native_keys);
    // Envoy's own duration of each request (read from the log), not the filter's clock: the
    // stand-ins answer within milliseconds.
    let micros: f64 = (from_logged.iter())
        .filter(|((name, _), _)| name == "http_request_duration_seconds_sum_microseconds")
        .map(|(_, value)| value)
        .sum();
    assert!(micros > 0.0 && micros < 5e6, "{micros} µs");
}

const TRAP: &str = r#"{"fault_injection": {"trap_header": "x-veza-test-trap"}}"#;

#[test]
fn a_panic_in_a_hook_is_caught_the_request_goes_on_and_envoy_keeps_counting() {
    // The native build whichever build the suite runs with: only it has hooks to guard.
    let (_standins, config, ports) =
        GatewayConfig::with_standins_from(Build::Native.gateway_config());
    let faults = config.replace_once(
        &format!("filename: {}", native_path().display()),
        &format!("filename: {}", fault_injection_native_path().display()),
    );
    let mut envoy = Envoy::start(&faults.plugin_configuration(TRAP), ports, 1);
    let get = |headers: &[(&str, &str)]| {
        http("GET", &envoy.url("/api/v1/tracks/1"), headers, "")
            .unwrap()
            .0
    };
    let counted = || {
        envoy
            .samples("http_requests_total")
            .iter()
            .map(|s| s.value)
            .sum::<f64>()
    };
    for _ in 0..3 {
        assert_eq!(get(&[]), 200);
    }
    // The panicking request reaches the service as if the filter were absent: no 503.
    assert_eq!(get(&[("x-veza-test-trap", "1")]), 200);
    for _ in 0..3 {
        assert_eq!(get(&[]), 200);
    }
    poll("six requests counted", Duration::from_secs(10), || {
        (counted() == 6.0).then_some(())
    });
    envoy.wait_for(
        "veza_observability_errors_total",
        &[("operation", "hook")],
        1.0,
    );
    let log = envoy.flushed_log_text();
    assert_eq!(
        log.matches(
            "hook failed with panicked (fault injection: the trap header), the request went on untouched for request_headers"
        )
        .count(),
        1,
        "logged once"
    );
    // A second panic is counted, not logged again.
    assert_eq!(get(&[("x-veza-test-trap", "1")]), 200);
    envoy.wait_for(
        "veza_observability_errors_total",
        &[("operation", "hook")],
        2.0,
    );
    assert_eq!(get(&[]), 200);
    poll("seven requests counted", Duration::from_secs(10), || {
        (counted() == 7.0).then_some(())
    });
    assert_eq!(envoy.flushed_log_text().matches("panicked").count(), 1);
    // The panics were counted on purpose: the harness's closing check must not see them.
    envoy.expect_errors(&[("hook", 2.0)]);
}

/// The module's access logger guards its hook as the filter does: the request's count is
/// lost, nothing else, and the panic is counted and logged once.
#[test]
fn a_panic_in_the_access_logger_is_caught_and_envoy_keeps_counting() {
    let (_standins, config, ports) =
        GatewayConfig::with_standins_from("envoy/envoy-native-metrics.yaml");
    let faults = config
        .replace_once(
            &format!("filename: {}", native_path().display()),
            &format!("filename: {}", fault_injection_native_path().display()),
        )
        .replace_once(
            r#"{"count_in_logger": "veza", "tracing": {"enabled": false}}"#,
            r#"{"count_in_logger": "veza", "tracing": {"enabled": false}, "fault_injection": {"trap_header": "x-veza-test-trap"}}"#,
        );
    let mut envoy = Envoy::start(&faults, ports, 1);
    let get = |headers: &[(&str, &str)]| {
        http("GET", &envoy.url("/api/v1/tracks/1"), headers, "")
            .unwrap()
            .0
    };
    for trapped in [false, false, true, false, true, false] {
        let headers: &[(&str, &str)] = if trapped {
            &[("x-veza-test-trap", "1")]
        } else {
            &[]
        };
        assert_eq!(get(headers), 200);
    }
    envoy.wait_for(
        "veza_observability_errors_total",
        &[("operation", "hook")],
        2.0,
    );
    poll("four requests counted", Duration::from_secs(10), || {
        let samples = envoy.samples("http_requests_total");
        (samples.iter().map(|s| s.value).sum::<f64>() == 4.0).then_some(())
    });
    let log = envoy.flushed_log_text();
    assert_eq!(
        log.matches(
            "hook failed with panicked (fault injection: the trap header, logged), the request went on untouched for access_log"
        )
        .count(),
        1,
        "logged once"
    );
    envoy.expect_errors(&[("hook", 2.0)]);
}

/// A logger that no filter config names counts nothing, and says so once per worker.
#[test]
fn an_access_logger_no_gateway_names_warns_and_counts_nothing() {
    let (_standins, config, ports) =
        GatewayConfig::with_standins_from("envoy/envoy-native-metrics.yaml");
    // Flushed after every request: had the logger counted the first request, the count
    // would be in Envoy's stats by the time its warning is in the log.
    let config = config
        .replace_once("                value: veza\n", "                value: nobody\n")
        .replace_once(
            r#"{"count_in_logger": "veza", "tracing": {"enabled": false}}"#,
            r#"{"count_in_logger": "veza", "tracing": {"enabled": false}, "metrics_flush_interval_ms": 0}"#,
        );
    let envoy = Envoy::start(&config, ports, 1);
    for _ in 0..3 {
        let (status, _) = http("GET", &envoy.url("/api/v1/tracks/1"), &[], "").unwrap();
        assert_eq!(status, 200);
    }
    let warning = "no filter config counts in access logger \"nobody\" (count_in_logger)";
    poll("the warning", Duration::from_secs(10), || {
        envoy.flushed_log_text().contains(warning).then_some(())
    });
    assert_eq!(envoy.flushed_log_text().matches(warning).count(), 1);
    assert_eq!(envoy.samples("http_requests_total").len(), 0);
}

/// Four workers, eight clients: each request a new connection, so they spread over workers.
const WORKERS: u32 = 4;
const CLIENTS: usize = 8;

#[test]
fn four_workers_share_one_series_budget_exactly() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let config = config.plugin_configuration(r#"{"max_series": 20}"#);
    series_budget_exactly(&config, ports);
}

/// The same, counted in the module's access logger: the logger of each worker admits the
/// series through the gateway's shared budget as the filter does.
#[test]
fn four_workers_counting_in_the_access_logger_share_one_series_budget_exactly() {
    let (_standins, config, ports) =
        GatewayConfig::with_standins_from("envoy/envoy-native-metrics.yaml");
    let config = config.replace_once(
        r#"{"count_in_logger": "veza", "tracing": {"enabled": false}}"#,
        r#"{"count_in_logger": "veza", "tracing": {"enabled": false}, "max_series": 20}"#,
    );
    series_budget_exactly(&config, ports);
}

/// Eight clients offer 60 label sets to a budget of 20 through four workers.
fn series_budget_exactly(config: &GatewayConfig, ports: Ports) {
    let envoy = Envoy::start(config, ports, WORKERS);
    const REQUESTS: usize = 60;
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let envoy = &envoy;
            scope.spawn(move || {
                for i in 0..REQUESTS {
                    // 60 statuses: 60 label sets offered to a budget of 20.
                    let status = (200 + (client * REQUESTS + i) % 60).to_string();
                    let (got, _) = http(
                        "GET",
                        &envoy.url(&format!("/api/v1/tracks/{client}-{i}")),
                        &[("connection", "close"), ("x-standin-status", &status)],
                        "",
                    )
                    .unwrap();
                    assert_eq!(got.to_string(), status);
                }
            });
        }
    });
    let total = (CLIENTS * REQUESTS) as f64;
    let series = poll("every request counted", Duration::from_secs(10), || {
        let samples = envoy.samples("http_requests_total");
        (samples.iter().map(|s| s.value).sum::<f64>() == total).then_some(samples)
    });
    // Workers that see one new label set at the same moment take one place for it between
    // them: exactly 20 label sets, everything else in the overflow series.
    assert_eq!(series.len() - 1, 20, "admitted label sets for a cap of 20");
    let overflow = series
        .iter()
        .find(|s| s.label("endpoint") == "other")
        .expect("the overflow series");
    assert_eq!(
        (
            overflow.label("method"),
            overflow.label("status"),
            overflow.label("service")
        ),
        ("OTHER", "2xx", "backend-api")
    );
    assert_eq!(
        envoy.samples("http_request_duration_seconds_count").len(),
        2
    );
}

#[test]
fn four_workers_share_upgrades_and_ready_rounds_with_exact_counts() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, WORKERS);
    const SOCKETS: usize = 5;
    const PROBES: usize = 10;
    std::thread::scope(|scope| {
        for _ in 0..CLIENTS {
            let envoy = &envoy;
            scope.spawn(move || {
                for _ in 0..SOCKETS {
                    let (mut socket, response) =
                        tungstenite::connect(envoy.url("/ws").replace("http", "ws")).unwrap();
                    assert_eq!(response.status(), 101);
                    socket.read().unwrap();
                    socket.close(None).unwrap();
                    let _ = socket.read();
                }
            });
            scope.spawn(move || {
                for _ in 0..PROBES {
                    let (status, body) =
                        http("GET", &envoy.url("/ready"), &[("connection", "close")], "").unwrap();
                    assert_eq!(status, 503, "{body}");
                    assert!(
                        body.starts_with(r#"{"status":"unready","checks":{"#),
                        "{body}"
                    );
                }
            });
        }
    });
    let sockets = (CLIENTS * SOCKETS) as f64;
    envoy.wait_websockets_closed("chat", sockets);
    envoy.wait_for(
        "websocket_upgrades_total",
        &[("service", "chat"), ("endpoint", "/ws"), ("status", "101")],
        sockets,
    );
    envoy.wait_for(
        "http_requests_total",
        &[
            ("method", "GET"),
            ("endpoint", "/ready"),
            ("status", "503"),
            ("service", "gateway"),
        ],
        (CLIENTS * PROBES) as f64,
    );
    assert_eq!(
        envoy.value("websocket_connections_active", &[("service", "chat")]),
        Some(0.0)
    );
}

#[test]
fn four_workers_count_one_room_joined_by_every_client_at_once() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, WORKERS);
    // One connection per client, so they spread over the workers.
    let sockets: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (mut socket, response) =
                tungstenite::connect(envoy.url("/ws").replace("http", "ws")).unwrap();
            assert_eq!(response.status(), 101);
            socket.read().unwrap();
            socket
        })
        .collect();
    let start = std::sync::Barrier::new(CLIENTS);
    let mut sockets: Vec<_> = std::thread::scope(|scope| {
        let clients: Vec<_> = sockets
            .into_iter()
            .enumerate()
            .map(|(client, mut socket)| {
                let start = &start;
                scope.spawn(move || {
                    // Every client joins the shared room at the same moment, then its own.
                    start.wait();
                    for room in ["shared".to_owned(), format!("own-{client}")] {
                        let join =
                            format!(r#"{{"type":"JoinConversation","conversation_id":"{room}"}}"#);
                        socket.send(Message::text(join)).unwrap();
                        socket.read().unwrap();
                    }
                    socket
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    envoy.wait_for("chat_rooms_active", &[], (CLIENTS + 1) as f64);
    for socket in &mut sockets {
        socket.close(None).unwrap();
        let _ = socket.read();
    }
    envoy.wait_websockets_closed("chat", CLIENTS as f64);
    envoy.wait_for("chat_rooms_active", &[], 0.0);
    assert_eq!(
        envoy.value("chat_events_total", &[("type", "JoinConversation")]),
        Some((2 * CLIENTS) as f64)
    );
}
