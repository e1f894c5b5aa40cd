//! The filter's configuration changed under load, as a control plane does it: the gateway's
//! listener comes from a file (LDS), which is replaced with a new plugin configuration while
//! requests keep arriving. No request fails, and every request is counted once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

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
    let wasm = filters
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .unwrap();
    &mut wasm["typed_config"]["config"]["configuration"]["value"]
}

fn stat(envoy: &Envoy, name: &str) -> f64 {
    envoy.samples(name).first().map_or(0.0, |s| s.value)
}

#[test]
fn a_new_plugin_configuration_under_load_loses_no_request_and_no_count() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let dir = scratch_dir("lds");
    let (bootstrap, mut listener) = with_lds(&config, &dir);
    publish(&dir, &listener);
    let envoy = Envoy::start(&bootstrap, ports, 2);

    let stop = AtomicBool::new(false);
    let (sent, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    // A new connection each time, so requests reach the new listener as soon
                    // as it exists.
                    let status = http(
                        "GET",
                        &envoy.url("/api/v1/tracks/1"),
                        &[("connection", "close")],
                        "",
                    )
                    .map_or(0, |r| r.0);
                    sent.fetch_add(1, Ordering::SeqCst);
                    if status != 200 {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        poll("load to be flowing", Duration::from_secs(10), || {
            (sent.load(Ordering::SeqCst) >= 200).then_some(())
        });
        *plugin_configuration(&mut listener) =
            json!(r#"{"max_series": 1000, "metrics_flush_interval_ms": 500}"#);
        publish(&dir, &listener);
        poll(
            "Envoy to take the new listener",
            Duration::from_secs(15),
            || (stat(&envoy, "envoy_listener_manager_lds_update_success") >= 2.0).then_some(()),
        );
        let at_update = sent.load(Ordering::SeqCst);
        poll(
            "load through the new listener",
            Duration::from_secs(10),
            || (sent.load(Ordering::SeqCst) >= at_update + 200).then_some(()),
        );
        stop.store(true, Ordering::SeqCst);
    });

    let sent = sent.load(Ordering::SeqCst);
    assert_eq!(failed.load(Ordering::SeqCst), 0, "of {sent} requests");
    assert_eq!(
        stat(&envoy, "envoy_listener_manager_listener_modified"),
        1.0
    );
    poll(
        "every request to be counted once",
        Duration::from_secs(10),
        || {
            let counted: f64 = envoy
                .samples("http_requests_total")
                .iter()
                .filter(|s| s.label("endpoint") == "/api/v1/tracks/:id")
                .map(|s| s.value)
                .sum();
            (counted == sent as f64).then_some(())
        },
    );
    let log = envoy.flushed_log_text();
    assert!(
        log.contains("max_series 1000, metrics flushed every 500 ms"),
        "the new configuration was not loaded"
    );
}

#[test]
fn a_hot_restart_under_load_fails_no_request() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let base_id = std::process::id() % 100_000;
    let mut parent = Envoy::start_hot(&config, ports, 2, base_id, 0);
    let stop = AtomicBool::new(false);
    let (sent, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let child = std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let status = http("GET", &parent_url(ports), &[("connection", "close")], "")
                        .map_or(0, |r| r.0);
                    sent.fetch_add(1, Ordering::SeqCst);
                    if status != 200 {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        poll("load to be flowing", Duration::from_secs(10), || {
            (sent.load(Ordering::SeqCst) >= 200).then_some(())
        });
        let child = Envoy::start_hot(&config, ports, 2, base_id, 1);
        let status = parent.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "the old Envoy exited with {status}");
        let at_exit = sent.load(Ordering::SeqCst);
        poll(
            "load through the new Envoy",
            Duration::from_secs(10),
            || (sent.load(Ordering::SeqCst) >= at_exit + 200).then_some(()),
        );
        stop.store(true, Ordering::SeqCst);
        (child, at_exit)
    });
    let (child, at_exit) = child;
    let sent = sent.load(Ordering::SeqCst);
    assert_eq!(failed.load(Ordering::SeqCst), 0, "of {sent} requests");
    let counted = || -> f64 {
        child
            .samples("http_requests_total")
            .iter()
            .filter(|s| s.label("endpoint") == "/api/v1/tracks/:id")
            .map(|s| s.value)
            .sum()
    };
    // Every request after the old process exited is counted by the new one; what the old
    // one counted since Envoy last merged its stats into the new one's is not (README).
    poll(
        "the new Envoy to count its requests",
        Duration::from_secs(10),
        || (counted() >= (sent - at_exit) as f64).then_some(()),
    );
    assert!(counted() <= sent as f64);
}

fn parent_url(ports: Ports) -> String {
    format!("http://127.0.0.1:{}/api/v1/tracks/1", ports.listener)
}
