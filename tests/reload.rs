//! The filter's configuration changed under load, as a control plane does it: the gateway's
//! listener comes from a file (LDS), which is replaced with a new plugin configuration while
//! requests keep arriving. No request fails, and every request is counted once. The old
//! listener's WebSockets end when its drain does, and the gauge follows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use veza_test_harness::*;

/// The gateway config with its listener moved to an LDS file in `dir`; returns the bootstrap
/// and the listener.
fn with_lds(config: &GatewayConfig, dir: &Path) -> (GatewayConfig, Value) {
    let mut bootstrap: Value = serde_norway::from_str(&config.text).unwrap();
    let mut listener = bootstrap["static_resources"]["listeners"][0].take();
    bootstrap["static_resources"]["listeners"] = json!([]);
    // A dynamic resource needs a node identity.
    bootstrap["node"] = json!({"id": "veza-gateway", "cluster": "veza"});
    bootstrap["dynamic_resources"] = json!({
        "lds_config": {
            "path_config_source": {
                "path": dir.join("lds.json"),
                "watched_directory": {"path": dir},
            },
            "resource_api_version": "V3",
        }
    });
    listener["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
    (
        GatewayConfig {
            text: serde_json::to_string_pretty(&bootstrap).unwrap(),
        },
        listener,
    )
}

/// Writes the LDS file atomically (a rename, which the directory watch sees).
fn publish(dir: &Path, listener: &Value) {
    let text = serde_json::to_string(&json!({ "resources": [listener] })).unwrap();
    std::fs::write(dir.join("lds.json.new"), text).unwrap();
    std::fs::rename(dir.join("lds.json.new"), dir.join("lds.json")).unwrap();
}

/// The filter's configuration string inside the listener.
fn plugin_configuration(listener: &mut Value) -> &mut Value {
    let filters = &mut listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
    let filter = filters
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "envoy.filters.http.wasm" || f["name"] == "veza_observability")
        .unwrap();
    match Build::selected() {
        Build::Wasm => &mut filter["typed_config"]["config"]["configuration"]["value"],
        Build::Native => &mut filter["typed_config"]["filter_config"]["value"],
    }
}

/// The native build's ticker threads, one per live filter config (here the gateway listener's
/// alone: `with_lds` leaves no static listener): a config that goes leaves none behind. The
/// wasm build has none.
fn tickers(envoy: &Envoy) -> usize {
    match Build::selected() {
        Build::Wasm => 0,
        Build::Native => envoy.threads_named("veza-ticker"),
    }
}

fn live_configs() -> usize {
    match Build::selected() {
        Build::Wasm => 0,
        Build::Native => 1,
    }
}

/// Publishes the listener a second time, with `configuration` for the filter, and waits until
/// Envoy has taken it.
fn reconfigure(envoy: &Envoy, dir: &Path, listener: &mut Value, configuration: &str) {
    *plugin_configuration(listener) = json!(configuration);
    publish(dir, listener);
    poll(
        "Envoy to take the new listener",
        Duration::from_secs(15),
        || (stat(envoy, "envoy_listener_manager_lds_update_success") >= 2.0).then_some(()),
    );
}

/// Waits for the old listener's drain to end, and then for its filter config's ticker to stop
/// with it: `tickers` counts them, `left` is the new config's.
fn wait_old_listener_gone(envoy: &Envoy, tickers: impl Fn() -> usize, left: usize) {
    poll(
        "the old listener to be gone",
        Duration::from_secs(15),
        || (stat(envoy, "envoy_listener_manager_total_listeners_draining") == 0.0).then_some(()),
    );
    poll(
        "the old config's ticker to stop",
        Duration::from_secs(10),
        || (tickers() == left).then_some(()),
    );
}

fn stat(envoy: &Envoy, name: &str) -> f64 {
    envoy.samples(name).first().map_or(0.0, |s| s.value)
}

/// Two clients requesting a track over and over, each time on a new connection (so requests
/// reach a new listener or process as soon as it exists).
struct Load {
    stop: AtomicBool,
    sent: AtomicU64,
    failed: AtomicU64,
}

impl Load {
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Waits until `more` requests have been sent from now on.
    fn wait_for_more(&self, more: u64, what: &str) {
        let from = self.sent();
        poll(what, Duration::from_secs(15), || {
            (self.sent() >= from + more).then_some(())
        });
    }
}

/// Runs `during` under load on `port`; returns what it returned, the requests sent, and
/// those that were not answered 200.
fn under_load<T>(port: u16, during: impl FnOnce(&Load) -> T) -> (T, u64, u64) {
    let load = Load {
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    let url = format!("http://127.0.0.1:{port}/api/v1/tracks/1");
    let result = std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !load.stop.load(Ordering::SeqCst) {
                    let status =
                        http("GET", &url, &[("connection", "close")], "").map_or(0, |r| r.0);
                    load.sent.fetch_add(1, Ordering::SeqCst);
                    if status != 200 {
                        load.failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        load.wait_for_more(200, "load to be flowing");
        let result = during(&load);
        load.stop.store(true, Ordering::SeqCst);
        result
    });
    (result, load.sent(), load.failed.load(Ordering::SeqCst))
}

/// Reads each stream until Envoy closes it (an end of stream or a reset), each within `limit`.
fn wait_closed_by_envoy(streams: &mut [TcpStream], limit: Duration) {
    for stream in streams {
        stream.set_read_timeout(Some(limit)).unwrap();
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        }
    }
}

/// `http_requests_total` of the track template.
fn tracks_counted(envoy: &Envoy) -> f64 {
    envoy
        .samples("http_requests_total")
        .iter()
        .filter(|s| s.label("endpoint") == "/api/v1/tracks/:id")
        .map(|s| s.value)
        .sum()
}

#[test]
fn a_new_plugin_configuration_under_load_loses_no_request_and_no_count() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let dir = scratch_dir("lds");
    let (bootstrap, mut listener) = with_lds(&config, &dir);
    publish(&dir, &listener);
    let envoy = Envoy::start(&bootstrap, ports, 2);

    let ((), sent, failed) = under_load(ports.listener, |load| {
        reconfigure(
            &envoy,
            &dir,
            &mut listener,
            r#"{"max_series": 1000, "metrics_flush_interval_ms": 500}"#,
        );
        load.wait_for_more(200, "load through the new listener");
    });

    assert_eq!(failed, 0, "of {sent} requests");
    assert_eq!(
        stat(&envoy, "envoy_listener_manager_listener_modified"),
        1.0
    );
    poll(
        "every request to be counted once",
        Duration::from_secs(10),
        || (tracks_counted(&envoy) == sent as f64).then_some(()),
    );
    let log = envoy.flushed_log_text();
    assert!(
        log.contains("max_series 1000, metrics flushed every 500 ms"),
        "the new configuration was not loaded"
    );
}

/// Counting in the module's access logger: the new listener's logger finds the new filter
/// config, the old one's counts until its drain ends, and the old config leaves no ticker.
#[test]
fn a_listener_update_counting_in_the_access_logger_loses_no_count() {
    let (_standins, config, ports) =
        GatewayConfig::with_standins_from("envoy/envoy-native-metrics.yaml");
    let dir = scratch_dir("lds-logger");
    let (bootstrap, mut listener) = with_lds(&config, &dir);
    publish(&dir, &listener);
    let envoy = Envoy::start_draining_in(&bootstrap, ports, 2, 1);
    let tickers = || envoy.threads_named("veza-ticker");
    poll(
        "the filter config's ticker",
        Duration::from_secs(10),
        || (tickers() == 1).then_some(()),
    );

    let ((), sent, failed) = under_load(ports.listener, |load| {
        let filters =
            &mut listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
        filters[0]["typed_config"]["filter_config"]["value"] = json!(
            r#"{"count_in_logger": "veza", "tracing": {"enabled": false}, "max_series": 1000}"#
        );
        publish(&dir, &listener);
        poll(
            "Envoy to take the new listener",
            Duration::from_secs(15),
            || (stat(&envoy, "envoy_listener_manager_lds_update_success") >= 2.0).then_some(()),
        );
        load.wait_for_more(200, "load through the new listener");
    });

    assert_eq!(failed, 0, "of {sent} requests");
    poll(
        "every request to be counted once",
        Duration::from_secs(10),
        || (tracks_counted(&envoy) == sent as f64).then_some(()),
    );
    wait_old_listener_gone(&envoy, tickers, 1);
    assert!(envoy.flushed_log_text().contains("max_series 1000"));
}

#[test]
fn a_hot_restart_under_load_fails_no_request_and_loses_no_count() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let base_id = std::process::id() % 100_000;
    let mut parent = Envoy::start_hot(&config, ports, 2, base_id, 0);
    let (child, sent, failed) = under_load(ports.listener, |load| {
        let child = Envoy::start_hot(&config, ports, 2, base_id, 1);
        let status = parent.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "the old Envoy exited with {status}");
        load.wait_for_more(200, "load through the new Envoy");
        child
    });
    assert_eq!(failed, 0, "of {sent} requests");
    // The old process lived long enough for one more of Envoy's stats merges after its last
    // request and its last flush, so the new one holds every count, its own and the old
    // one's.
    poll(
        "the new Envoy to count the requests of both",
        Duration::from_secs(10),
        || (tracks_counted(&child) == sent as f64).then_some(()),
    );
}

#[test]
fn a_listener_update_ends_the_old_listeners_websockets_with_its_drain_and_the_gauge_follows() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let dir = scratch_dir("lds-drain");
    let (bootstrap, mut listener) = with_lds(&config, &dir);
    publish(&dir, &listener);
    let envoy = Envoy::start_draining_in(&bootstrap, ports, 2, 1);
    poll(
        "a ticker per filter config",
        Duration::from_secs(10),
        || (tickers(&envoy) == live_configs()).then_some(()),
    );
    let mut old: Vec<_> = (0..3)
        .map(|_| raw_websocket(ports.listener, "/ws"))
        .collect();
    let chat = [("service", "chat")];
    envoy.wait_for("websocket_connections_active", &chat, 3.0);

    reconfigure(&envoy, &dir, &mut listener, r#"{"max_series": 1000}"#);
    // Upgraded connections get no `connection: close`: the old listener's last second of
    // drain passes, then Envoy closes what is still open on it.
    wait_closed_by_envoy(&mut old, Duration::from_secs(15));
    envoy.wait_websockets_closed("chat", 3.0);
    wait_old_listener_gone(&envoy, || tickers(&envoy), live_configs());

    // The new listener and its plugin instance count on the same series.
    let new = raw_websocket(ports.listener, "/ws");
    envoy.wait_for("websocket_connections_active", &chat, 1.0);
    drop(new);
    envoy.wait_websockets_closed("chat", 4.0);
}

#[test]
fn a_hot_restart_with_websockets_open_leaves_no_gauge_behind() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    // The other hot restart test runs beside this one, in the same process.
    let base_id = (std::process::id() + 1) % 100_000;
    let chat = [("service", "chat")];
    let mut parent = Envoy::start_hot(&config, ports, 2, base_id, 0);
    let mut old: Vec<_> = (0..2)
        .map(|_| raw_websocket(ports.listener, "/ws"))
        .collect();
    parent.wait_for("websocket_connections_active", &chat, 2.0);

    // The new process shows the old one's connections while both run...
    let child = Envoy::start_hot(&config, ports, 2, base_id, 1);
    child.wait_for("websocket_connections_active", &chat, 2.0);
    let status = parent.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "the old Envoy exited with {status}");
    wait_closed_by_envoy(&mut old, Duration::from_secs(5));
    // ...and not after the old one is gone, when Envoy drops what it took over from it; then
    // it counts its own.
    child.wait_for("websocket_connections_active", &chat, 0.0);
    let new = raw_websocket(ports.listener, "/ws");
    child.wait_for("websocket_connections_active", &chat, 1.0);
    drop(new);
    child.wait_for("websocket_connections_active", &chat, 0.0);
}
